"""ClickHouse's HTTP interface, served by the gateway for the engine it embeds.

chDB cannot open ClickHouse's own ports, so analysts' tools (curl, clickhouse-connect, Grafana,
DBeaver) talk to this app instead. It follows ClickHouse's HTTP handler (src/Server/HTTPHandler.cpp)
where those tools depend on it: the query in the ``query`` parameter and/or the body, the three ways
to authenticate, ``FORMAT``/``default_format``, ``param_<name>`` placeholders, ``database``, and errors
as body, ``X-ClickHouse-Exception-Code`` header and HTTP status. Other URL parameters are ClickHouse
settings; ``Store`` cannot apply settings per query, so they are accepted and ignored (the connection's
own limits, such as ``readonly``, always hold).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import math
import re
import socket
import uuid
import zlib

import chdb
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.config import ServerConfig, UserConfig
from gateway.enrich import client_ip
from gateway.sites import AuthThrottle
from gateway.store import DATABASE, QueryError, Store, StoreUnavailable

#: Bodies are held in memory whole (Store takes one SQL string), before and after gunzip.
MAX_BODY_BYTES = 64 * 1024 * 1024

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp); codes it
# does not list, READONLY (164) among them, are 500 there too.
_STATUS = {
    194: 401,
    **dict.fromkeys((192, 193, 497, 512, 516), 403),
    **dict.fromkeys((6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168, 223, 321,
                     376, 427, 441, 675, 676), 400),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511), 404),
    229: 413, 48: 501, 381: 411, 159: 408, 779: 415,
    **dict.fromkeys((76, 209, 439), 503),
    # QUOTA_EXCEEDED, ClickHouse's answer to too many failed logins, is a 500 there; here it is only ever
    # that answer, which a client caused and can wait out, as Retry-After says.
    201: 429,
}

# String literals, quoted identifiers and comments, so keywords inside them are not mistaken for clauses.
_LITERALS = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`|--[^\n]*|#[^\n]*|/\*.*?\*/",
                       re.S)
# ASCII (re.A): the name goes back in the X-ClickHouse-Format header, and format names are ASCII anyway.
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\b[^;]*)?[\s;]*$", re.I | re.A)
_FORMAT_NAME = re.compile(r"\w+", re.A)
_SET = re.compile(r"(?:^|;)\s*SET\b", re.I)
# Matched on the raw text, literals included: a lexer of ours that disagreed with ClickHouse's (heredocs,
# nested comments) must not be able to hide the clause, and a false alarm costs only a rephrased query.
_FILE_CLAUSE = re.compile(r"OUTFILE|INFILE", re.I)

# chDB nests and repeats ClickHouse's decorations ("Code: 73. DB::Exception: Code: 73. ... (version ...).
# (UNKNOWN_FORMAT)"); they are stripped so the body carries them once, as ClickHouse's does.
_CODE_PREFIX = re.compile(r"^(?:Code: \d+\. (?:DB::Exception: )?)+")
_VERSION = re.compile(r" ?\(version [^()]*(?:\([^()]*\)[^()]*)*\)")
_REPEATED_NAME = re.compile(r"(\(([A-Z0-9_]+)\))(?:\.? \(\2\))+$")

_BINARY_FORMATS = ("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack", "npy",
                   "bsoneachrow", "capnproto")


def create_app(store: Store, users: list[UserConfig], server: ServerConfig | None = None) -> Starlette:
    """The ClickHouse HTTP interface over ``store`` for ``users``, to be served on its own port; ``server``
    gives the proxies in front of it and the limits on failed logins."""
    interface = _Interface(store, users, server or ServerConfig())
    return Starlette(routes=[
        Route("/", interface.handle, methods=["GET", "POST"]),
        Route("/ping", _ok),
    ])


async def _ok(_request: Request) -> Response:
    return PlainTextResponse("Ok.\n")


class _Interface:
    def __init__(self, store: Store, users: list[UserConfig], server: ServerConfig) -> None:
        self.store = store
        self.users = {user.name: user for user in users}
        self.trusted_proxy_hops = server.trusted_proxy_hops
        self.auth_failures = AuthThrottle(server.auth_failure_limit, server.auth_failure_window_s)
        self.auth_limit = f"{server.auth_failure_limit} in {server.auth_failure_window_s:g} s"
        self.display_name = socket.gethostname()
        # chDB runs one query at a time anyway; waiting here rather than in a worker thread leaves the
        # threadpool, which the ingest port shares, to others.
        self.lock = asyncio.Lock()

    async def handle(self, request: Request) -> Response:
        params = request.query_params
        if request.method != "POST" and "query" not in params:
            return await _ok(request)  # ClickHouse's root handler: health checks, no credentials
        # The client's query_id is taken only once it has authenticated (as ClickHouse does), and checked.
        headers = {"X-ClickHouse-Server-Display-Name": self.display_name, "X-ClickHouse-Query-Id": str(uuid.uuid4())}
        user_name = ""
        try:
            user = self._login(request, headers)
            user_name = user.name
            headers["X-ClickHouse-Query-Id"] = _query_id(request) or headers["X-ClickHouse-Query-Id"]
            fmt = request.headers.get("x-clickhouse-format") or params.get("default_format") or "TabSeparated"
            if not _FORMAT_NAME.fullmatch(fmt):  # it goes back in the X-ClickHouse-Format header
                raise QueryError(73, f"Unknown format {fmt}. (UNKNOWN_FORMAT)")
            if _truthy(params.get("compress")) or _truthy(params.get("decompress")):
                raise QueryError(48, "ClickHouse's native compression (compress/decompress) is not supported"
                                     " here; use enable_http_compression=1 or Content-Encoding: gzip."
                                     " (NOT_IMPLEMENTED)")
            body = await _read_body(request)
            gzip_response = (_truthy(params.get("enable_http_compression"))
                             and "gzip" in request.headers.get("accept-encoding", ""))
            async with self.lock:
                data, fmt = await run_in_threadpool(
                    self._execute,
                    head=params.get("query", ""),
                    body=body,
                    encoding=request.headers.get("content-encoding", ""),
                    fmt=fmt,
                    database=request.headers.get("x-clickhouse-database") or params.get("database")
                    or DATABASE,
                    params={k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")},
                    # GET is read-only in ClickHouse's HTTP semantics, whoever asks.
                    readonly=user.readonly or request.method != "POST",
                    gzip_response=gzip_response,
                )
        except QueryError as exc:
            return _error(exc, headers, user_name)
        except StoreUnavailable as exc:
            return PlainTextResponse(f"ClickHouse is not available right now ({exc}); retry later.\n",
                                     503, headers=headers)
        headers.update({"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC"})
        if gzip_response:
            headers["Content-Encoding"] = "gzip"
        return Response(data, media_type=_content_type(fmt), headers=headers)

    def _login(self, request: Request, headers: dict[str, str]) -> UserConfig:
        """The user the request authenticates as; refused unchecked while its address has failed too often."""
        address = client_ip(request.scope, self.trusted_proxy_hops)  # no await from here on: see AuthThrottle
        wait = math.ceil(self.auth_failures.wait(address))
        if wait:
            headers["Retry-After"] = str(wait)
            raise QueryError(201, f"Too many failed authentication attempts from this address (the limit is"
                                  f" {self.auth_limit}); retry in {wait} s. (QUOTA_EXCEEDED)")
        try:
            return self._authenticate(*_credentials(request))
        except QueryError:
            self.auth_failures.failed(address)
            raise

    def _authenticate(self, name: str, password: str) -> UserConfig:
        user = self.users.get(name)
        matches = hmac.compare_digest(password.encode(), user.password.encode() if user else b"")
        if user is None or not matches:
            raise QueryError(516, f"{name}: Authentication failed: password is incorrect, or there is no user"
                                  " with such name. (AUTHENTICATION_FAILED)")
        return user

    def _execute(self, *, head: str, body: bytes, encoding: str, fmt: str, database: str,
                 params: dict[str, str], readonly: bool, gzip_response: bool) -> tuple[bytes, str]:
        """Run one request's query in a worker thread; returns the response body and its format."""
        text = _decode_body(body, encoding)
        sql = (head + "\n" if head else "") + text  # ClickHouse's rule for a query split over URL and body
        if not sql.strip():
            raise QueryError(62, "Empty query. (SYNTAX_ERROR)")
        if _FILE_CLAUSE.search(sql):
            # chDB would read or write files of the gateway's host, even on the readonly connection.
            raise QueryError(358, "INTO OUTFILE and FROM INFILE are not allowed. (INTO_OUTFILE_NOT_ALLOWED)")
        code = _LITERALS.sub(" ", sql)
        if not readonly and _SET.search(code):
            # The read-write connection is the loader's too, and a SET would stay on it.
            raise QueryError(48, "SET is not supported here: it would outlive this query on the connection"
                                 " the gateway's loader uses. Use the query's SETTINGS clause instead."
                                 " (NOT_IMPLEMENTED)")
        data = self.store.query(sql, fmt, readonly=readonly, params=params, database=database)
        clause = _FORMAT_CLAUSE.search(code)
        if gzip_response:
            data = gzip.compress(data, compresslevel=3)  # ClickHouse's http_zlib_compression_level
        return data, clause.group(1) if clause else fmt


def _credentials(request: Request) -> tuple[str, str]:
    """User and password from exactly one of ClickHouse's methods; none at all means ``default``."""
    headers, params = request.headers, request.query_params
    user, key = headers.get("x-clickhouse-user", ""), headers.get("x-clickhouse-key", "")
    methods = [name for name, used in (("X-ClickHouse HTTP headers", bool(user or key)),
                                       ("Authorization HTTP header", "authorization" in headers),
                                       ("authentication via parameters", "user" in params or "password" in params))
               if used]
    if len(methods) > 1:
        raise QueryError(516, f"Invalid authentication: it is not allowed to use {methods[0]} and {methods[1]}"
                              " simultaneously. (AUTHENTICATION_FAILED)")
    if user or key:
        return user, key
    if "authorization" in headers:
        scheme, _, value = headers["authorization"].partition(" ")
        if scheme.lower() != "basic":
            raise QueryError(516, f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not"
                                  " supported. (AUTHENTICATION_FAILED)")
        try:
            user, _, key = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except ValueError:  # binascii.Error, UnicodeDecodeError, and b64decode's own for non-ASCII text
            raise QueryError(516, "Invalid authentication: malformed Basic credentials."
                                  " (AUTHENTICATION_FAILED)") from None
        return user, key
    return params.get("user", "default"), params.get("password", "")


def _query_id(request: Request) -> str:
    """The client's query_id ('' if none); it goes back in a response header, so it must be fit for one."""
    query_id = request.query_params.get("query_id") or request.headers.get("x-clickhouse-query-id", "")
    if not (query_id.isascii() and query_id.isprintable()):
        raise QueryError(36, "The query_id may contain only printable ASCII characters: it is sent back in the"
                             " X-ClickHouse-Query-Id response header. (BAD_ARGUMENTS)")
    return query_id


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


def _decode_body(body: bytes, encoding: str) -> str:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        body = _gunzip(body)
    elif encoding not in ("", "identity"):
        raise QueryError(48, f"Content-Encoding '{encoding}' is not supported here; use gzip. (NOT_IMPLEMENTED)")
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise QueryError(48, "The request body is not UTF-8 text; binary data formats cannot be sent here yet."
                             " (NOT_IMPLEMENTED)") from None


def _gunzip(data: bytes) -> bytes:
    """Inflate every gzip member, refusing to grow past MAX_BODY_BYTES (a small body can inflate hugely)."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(data, MAX_BODY_BYTES + 1 - len(out))
        except zlib.error as exc:
            raise QueryError(271, f"Cannot decompress the gzip request body: {exc}. (CANNOT_DECOMPRESS)") from None
        if len(out) > MAX_BODY_BYTES:
            raise _too_large()
        if not inflater.eof:
            raise QueryError(271, "The gzip request body is truncated. (CANNOT_DECOMPRESS)")
        data = inflater.unused_data
    return bytes(out)


def _too_large() -> QueryError:
    return QueryError(229, f"The request body is larger than {MAX_BODY_BYTES} bytes. (QUERY_IS_TOO_LARGE)")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def _error(exc: QueryError, headers: dict[str, str], user_name: str) -> Response:
    message = _REPEATED_NAME.sub(r"\1", _VERSION.sub("", _CODE_PREFIX.sub("", exc.message)).strip())
    if user_name and message.startswith("default: "):
        message = f"{user_name}: {message.removeprefix('default: ')}"  # chDB's own user is always 'default'
    return PlainTextResponse(
        f"Code: {exc.code}. DB::Exception: {message} (version {chdb.engine_version})\n",
        _STATUS.get(exc.code, 500),
        headers={**headers, "X-ClickHouse-Exception-Code": str(exc.code)},
    )


def _content_type(fmt: str) -> str:
    """The Content-Type ClickHouse's output format of that name declares."""
    name = fmt.lower()
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=" + ("present" if "with" in name else "absent")
    if "json" in name:
        return "application/json; charset=UTF-8"
    if name == "xml":
        return "application/xml; charset=UTF-8"
    if name.startswith(_BINARY_FORMATS):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"
