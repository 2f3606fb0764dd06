"""The ingest endpoints: /v1/batch, /v1/event and /v1/pixel.gif.

Each request is read within limits, authenticated, checked against the site's origins and rate
limit, judged event by event against the contract, enriched, and appended to the spool. The
answer comes only after the spool has the events, so a 2xx always means durable.
"""

from __future__ import annotations

import math
import time
import uuid
import zlib

import msgspec
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.config import Config
from gateway.health import Part
from gateway.ingest import rows
from gateway.ingest.contract import (
    MAX_EVENT_BYTES,
    MAX_USER_AGENT_CHARS,
    ContractError,
    Event,
    decode_batch,
    decode_event,
    decode_single,
    event_id_of,
)
from gateway.ingest.enrich import NO_AGENT, URL_FIELDS, Agent, anonymize_ip, client_ip, parse_user_agent
from gateway.ingest.sites import AuthThrottle, Credential, IpLimiter, Sites
from gateway.ingest.spool import Spool, SpoolUnavailable
from gateway.metrics import Metrics

MAX_BODY_BYTES = 512 * 1024
#: A gzip body may inflate to this much; beyond it the request is refused, so a gzip bomb costs nothing.
MAX_INFLATED_BYTES = 5 * 1024 * 1024
JSON_TYPES = ("application/json", "text/plain", "")
RETRY_AFTER_UNAVAILABLE = "5"

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


class HttpError(Exception):
    """A refusal: ``message`` says what was wrong and where; ``reason`` labels the metric."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


class Receiver:
    def __init__(self, config: Config, sites: Sites, spool: Spool, metrics: Metrics) -> None:
        self.server = config.server
        self.sites = sites
        self.spool = spool
        self.metrics = metrics
        self.ip_limiter = IpLimiter(config.server.ip_rate_limit)
        self.auth_failures = AuthThrottle(config.server.auth_failure_limit, config.server.auth_failure_window_s)
        server = config.server
        self.windows = {
            "write": rows.TimeWindow.of(server.max_past_days_write_key, server.max_future_s,
                                        "a write key (send older events with the site's secret key)"),
            "secret": rows.TimeWindow.of(server.max_past_days_secret_key, server.max_future_s, "the secret key"),
        }
        #: Enrichment failures: the event is stored without what failed, never refused or lost for it.
        self.enrichment = Part("enrichment", metrics.internal_errors)
        #: Anything else that goes wrong while serving a request.
        self.unexpected = Part("request", metrics.internal_errors)

    # -- endpoints --------------------------------------------------------------------------------

    async def batch(self, request: Request) -> Response:
        try:
            self._admit_ip(request)
            envelope = decode_batch(await self._read_body(request))
            credential = self._authenticate(request, envelope.key)
            ctx = self._context(request, credential, envelope.sent_at)
            accepted: list[rows.Row] = []
            rejected: list[dict[str, object]] = []
            for index, raw in enumerate(envelope.batch):
                try:
                    accepted.append(self._row(decode_event(raw), ctx, credential))
                except ContractError as exc:
                    rejected.append({"index": index, "event_id": event_id_of(raw), "error": str(exc)})
            self.metrics.rejected["invalid_event"] += len(rejected)
            if not accepted:
                return self._json(request, 400, {"accepted": 0, "rejected": rejected,
                                                  "error": "batch: no valid event"})
            self._rate_limit(credential, len(accepted))
            await self._store(credential, accepted)
            return self._json(request, 200, {"accepted": len(accepted), "rejected": rejected})
        except Exception as exc:  # each kind is answered in _refuse, a fault of ours too
            return self._refuse(request, exc)

    async def single(self, request: Request) -> Response:
        try:
            self._admit_ip(request)
            body = await self._read_body(request)
            if len(body) > MAX_EVENT_BYTES:
                raise HttpError(413, "too_large", f"body: an event is at most {MAX_EVENT_BYTES} bytes")
            event, sent_at, key = decode_single(body)
            credential = self._authenticate(request, key)
            row = self._row(event, self._context(request, credential, sent_at), credential)
            self._rate_limit(credential, 1)
            await self._store(credential, [row])
            return self._json(request, 200, {"accepted": 1, "rejected": []})
        except Exception as exc:  # each kind is answered in _refuse, a fault of ours too
            return self._refuse(request, exc)

    async def pixel(self, request: Request) -> Response:
        """GET with the event in the query string, for e-mails and pages without JavaScript.

        A HEAD (which Starlette routes here too) gets the same checks and answer but stores nothing: mail scanners
        and link checkers ask with it, and nobody opened the mail."""
        try:
            self._admit_ip(request)
            event, made_id = self._pixel_event(request)
            credential = self._authenticate(request, "")
            row = self._row(event, self._context(request, credential, None), credential, made_id=made_id)
            if request.method != "HEAD":
                self._rate_limit(credential, 1)
                await self._store(credential, [row])
        except Exception as exc:  # each kind is answered in _refuse, a fault of ours too
            return self._refuse(request, exc)
        return Response(PIXEL, media_type="image/gif",
                        headers={"Cache-Control": "no-store, max-age=0", **self._cors(request)})

    async def preflight(self, request: Request) -> Response:
        if self.sites.cors_origin(None, _header(request, b"origin")) is None:
            return Response(status_code=403, content=orjson.dumps({"error": "origin: not allowed"}),
                            media_type="application/json")
        return Response(status_code=204, headers={
            **self._cors(request),
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Content-Encoding, X-Write-Key, Authorization",
            "Access-Control-Max-Age": "86400",
        })

    # -- steps ------------------------------------------------------------------------------------

    def _admit_ip(self, request: Request) -> None:
        wait = self.ip_limiter.admit(self._peer(request))
        if wait:
            raise HttpError(429, "rate_limited", "client: too many requests from this address",
                            {"Retry-After": str(max(1, round(wait)))})

    async def _read_body(self, request: Request) -> bytes:
        content_type = _header(request, b"content-type").split(";", 1)[0].strip().lower()
        if content_type not in JSON_TYPES:
            raise HttpError(415, "unreadable", f"content-type: {content_type} is not supported; "
                            "send application/json or text/plain")
        length = _header(request, b"content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise HttpError(413, "too_large", f"body: {length} bytes, the limit is {MAX_BODY_BYTES}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise HttpError(413, "too_large", f"body: larger than the limit of {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = _header(request, b"content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            return _gunzip(body)
        if encoding not in ("identity", ""):
            raise HttpError(415, "unreadable", f"content-encoding: {encoding} is not supported; send gzip")
        return body

    def _authenticate(self, request: Request, body_key: str) -> Credential:
        key = _header(request, b"x-write-key")
        if not key:
            auth = _header(request, b"authorization")
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        key = key or body_key or request.query_params.get("k", "")
        if not key:
            raise HttpError(401, "unauthorized", "key: missing; send X-Write-Key, Authorization: Bearer, "
                            "a body field \"key\" or the query parameter k")
        peer = self._peer(request)  # no await from here to the failure's record: see AuthThrottle
        wait = self.auth_failures.wait(peer)
        if wait:
            raise HttpError(429, "auth_throttled", "key: too many unknown keys from this address; retry later",
                            {"Retry-After": str(math.ceil(wait))})
        credential = self.sites.authenticate(key)
        if credential is None:
            self.auth_failures.failed(peer)
            raise HttpError(401, "unauthorized", "key: unknown write key")
        request.scope["clicktrail.credential"] = credential  # for _cors, whatever the answer
        origin = _header(request, b"origin")
        if not self.sites.origin_allowed(credential.site, origin):
            raise HttpError(403, "forbidden_origin", f"origin: {origin} may not send events for this site")
        return credential

    def _rate_limit(self, credential: Credential, events: int) -> None:
        wait = self.sites.admit(credential.site, events)
        if wait:
            raise HttpError(429, "rate_limited", f"site: rate limit of {credential.site.rate_limit:g} events/s",
                            {"Retry-After": str(max(1, round(wait + 0.5)))})

    def _peer(self, request: Request) -> str:
        """The client's address, worked out once per request (the IP limit, the auth throttle and the row use it)."""
        peer = request.scope.get("clicktrail.peer")
        if peer is None:
            peer = request.scope["clicktrail.peer"] = client_ip(request.scope, self.server.trusted_proxy_hops)
        return peer

    def _context(self, request: Request, credential: Credential, sent_at: int | None) -> rows.Context:
        received_ms = time.time_ns() // 1_000_000
        user_agent = _header(request, b"user-agent")[:MAX_USER_AGENT_CHARS]
        return rows.Context(
            site_id=credential.site.id,
            received_ms=received_ms,
            skew_ms=0 if sent_at is None else received_ms - sent_at,
            window=self.windows[credential.kind],
            ip=self._stored_ip(self._peer(request)),
            agent=self._agent(user_agent),
            user_agent=user_agent,
        )

    def _row(self, event: Event, ctx: rows.Context, credential: Credential, *, made_id: bool = False) -> rows.Row:
        """The event's row; an event naming its real origin's client (``ip``, ``user_agent``: a server tracking on
        behalf of a browser) gets that client's address and enrichment instead of the request's, each on its own.

        Only a secret key may name it: a write key is public (every page carries it), so a browser could otherwise
        store any address and agent it likes in the site's data. Its event is refused, not stored with the
        request's client, so that the sender learns its server-side setup uses the wrong key.
        """
        if event.ip or event.user_agent:
            if credential.kind != "secret":
                field, own = ("ip", "address") if event.ip else ("user_agent", "User-Agent")
                raise ContractError(f"{field}: may be set with the site's secret key only; with a write key an event "
                                    f"has the request's own {own}")
            if event.ip:
                ctx = ctx._replace(ip=self._stored_ip(event.ip))
            if event.user_agent:
                ctx = ctx._replace(agent=self._agent(event.user_agent), user_agent=event.user_agent)
        return rows.build_row(event, ctx, made_id=made_id)

    def _stored_ip(self, ip: str) -> str:
        return anonymize_ip(ip) if self.server.anonymize_ip else ip

    def _agent(self, user_agent: str) -> Agent:
        try:
            return parse_user_agent(user_agent)
        except Exception as exc:  # a parser's bug must not cost the events their storage
            self.enrichment.failed(exc, "storing the event without it")
            return NO_AGENT

    async def _store(self, credential: Credential, accepted: list[rows.Row]) -> None:
        await self.spool.append(rows.encode(accepted))
        self.metrics.accepted[credential.site.id] += len(accepted)

    def _pixel_event(self, request: Request) -> tuple[Event, bool]:
        """The event a pixel's query string names, and whether its event_id was made here."""
        fields: dict[str, object] = {}
        props: dict[str, object] = {}
        for name, value in request.query_params.multi_items():
            if name.startswith("p."):
                props[name[2:]] = value
            elif name == "props":
                props.update(_json_object(value))
            elif name == "ts" and value.isascii() and value.isdigit():  # isdigit alone takes '١٢٣' and '²'
                # Written into the JSON as the number it spells, not through int() (which refuses 4,300 digits
                # and more), so the contract judges it as a number in a body: out of range, never a crash.
                fields[name] = msgspec.Raw(value.lstrip("0").encode() or b"0")
            elif name != "k":
                # Links and pixels share parameter names: ?ch= is the channel code in both.
                fields[URL_FIELDS.get(name, name)] = value
        # A pixel URL is static, so without an event_id each load counts (each open of an e-mail).
        made_id = "event_id" not in fields
        if made_id:
            fields["event_id"] = uuid.uuid4().hex
        fields["props"] = props
        # Encoded by msgspec: orjson writes no int beyond 64 bits, nor a Raw.
        try:
            data = msgspec.json.encode(fields)
        except RecursionError:  # props orjson read (it takes 1024 levels) nest deeper than msgspec writes
            raise ContractError("props: invalid JSON: nested too deeply") from None
        return decode_event(data), made_id

    # -- answers ----------------------------------------------------------------------------------

    def _cors(self, request: Request) -> dict[str, str]:
        """CORS headers for an origin the site of the key used allows (before a key is known, any site's, so
        a page can read why it was refused). No Allow-Credentials: events need no cookies or HTTP auth."""
        credential: Credential | None = request.scope.get("clicktrail.credential")
        allowed = self.sites.cors_origin(credential.site if credential else None, _header(request, b"origin"))
        if allowed is None:
            return {}
        # Retry-After must be readable by the SDK on other origins, or it cannot honour it.
        return {"Access-Control-Allow-Origin": allowed, "Access-Control-Expose-Headers": "Retry-After",
                "Vary": "Origin"}

    def _json(self, request: Request, status: int, body: object, headers: dict[str, str] | None = None) -> Response:
        return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                        headers={**self._cors(request), **(headers or {})})

    def _refuse(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HttpError):
            pass
        elif isinstance(exc, SpoolUnavailable):
            exc = HttpError(503, "unavailable", f"storage: events cannot be made durable now ({exc}); retry",
                            {"Retry-After": RETRY_AFTER_UNAVAILABLE})
        elif isinstance(exc, ContractError):
            exc = HttpError(400, "invalid", str(exc))
        elif isinstance(exc, ClientDisconnect):
            exc = HttpError(400, "disconnected", "body: the client went away before sending all of it")
        else:
            # A bug or a fault of ours, not the client's: 503 says "retry", and a retry is safe (whatever
            # was stored before the fault is deduplicated by event_id); a bare 500 says neither.
            self.unexpected.failed(exc, "answered 503")
            exc = HttpError(503, "internal", "gateway: internal error; retry later",
                            {"Retry-After": RETRY_AFTER_UNAVAILABLE})
        self.metrics.rejected[exc.reason] += 1
        return self._json(request, exc.status, {"error": exc.message}, exc.headers)


def _header(request: Request, name: bytes, default: str = "") -> str:
    """One header's value; Starlette's Headers scans the whole list on every lookup, this dict is built once."""
    headers = request.scope.get("clicktrail.headers")
    if headers is None:
        headers = request.scope["clicktrail.headers"] = dict(request.scope["headers"])
    value = headers.get(name)
    if value is None:
        return default
    try:
        # UTF-8, as apps write it (WeChat's User-Agent ends in "微信"); for ASCII it is as fast as latin-1.
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")  # HTTP's own reading of other bytes, which never fails


def _json_object(text: str) -> dict[str, object]:
    try:
        value = orjson.loads(text)  # not msgspec: orjson refuses deep nesting with an error, not a RecursionError
    except orjson.JSONDecodeError:
        value = None
    if type(value) is not dict:  # dict.update would take a list of pairs, or fail on a string
        raise HttpError(400, "unreadable", "props: not a JSON object")
    return value


def _gunzip(body: bytes) -> bytes:
    """The inflated body. A gzip body may hold several members, one after another (RFC 1952, 2.2: what
    concatenated or streamed compressors write), each inflated in turn as gzip -d does; anything else after the
    end is refused, not dropped, as it may be events."""
    inflated: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(rest, MAX_INFLATED_BYTES + 1 - size)
        except zlib.error as exc:
            raise HttpError(400, "unreadable", f"body: not valid gzip ({exc})") from exc
        size += len(data)
        if size > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
            raise HttpError(413, "too_large", f"body: inflates to more than {MAX_INFLATED_BYTES} bytes")
        if not inflater.eof:
            raise HttpError(400, "unreadable", "body: gzip stream is truncated")
        inflated.append(data)
        rest = inflater.unused_data
        if not rest:
            return b"".join(inflated)
        if not rest.startswith(b"\x1f\x8b"):
            raise HttpError(400, "unreadable", "body: data after the end of the gzip stream")
