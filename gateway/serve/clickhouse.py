"""ClickHouse's HTTP interface, served by the gateway for the engine it embeds.

chDB cannot open ClickHouse's own ports, so analysts' tools (curl, clickhouse-connect, Grafana,
DBeaver) talk to this app instead. It follows ClickHouse's HTTP handler (src/Server/HTTPHandler.cpp)
where those tools depend on it: the query in the ``query`` parameter and/or the body, the three ways
to authenticate, ``FORMAT``/``default_format``, ``param_<name>`` placeholders, ``database``, and errors
as body, ``X-ClickHouse-Exception-Code`` header and HTTP status, and sessions (``session_id``). Other
URL parameters are ClickHouse settings, for that query (query_settings). Each user's limits, sites and
readonly level are settings ClickHouse holds on the user's connection (user_access, user_limits). The marketers'
dashboard (dashboard) queries through here too, with its session cookie in place of a password, read-only.

Bodies come as clients send them: HTTP-compressed and/or in ClickHouse's compressed blocks, multipart forms,
and INSERT data in any input format, binary ones too; answers are compressed as asked (codecs),
Native is framed for the client's protocol revision (native), and every answer carries
X-ClickHouse-Summary. A SELECT's answer is sent as the engine produces it (stream).

A request runs exactly one statement, as ClickHouse's own parser reads it, on a connection of its own:
a fresh one, or its session's. Nothing one request does to its connection (USE, SET, temporary tables)
can reach another's, and the loader's connection is never used here. Requests run side by side, each on
a thread of its own, stopped when the client goes away or an admin's KILL QUERY names it (runs).
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import math
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import chdb
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.config import ServerConfig, UserConfig
from gateway.ingest.enrich import client_ip
from gateway.ingest.sites import AuthThrottle
from gateway.serve import codecs, dashboard, multipart, native, query_settings, runs, stream, user_access
from gateway.warehouse.store import DATABASE, Connection, Progress, QueryError, Store, StoreUnavailable

#: Bodies are held in memory whole, as sent and once decompressed (each bounded by this).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: ClickHouse's max_query_size: the longest statement read, an INSERT's inline data not counted.
MAX_QUERY_SIZE = 262144
#: ClickHouse's log_queries_cut_to_length: how much of a statement system.processes (here: KILL QUERY) shows.
QUERY_TEXT_CUT = 100000
#: ClickHouse's default_session_timeout and max_session_timeout, in seconds.
DEFAULT_SESSION_TIMEOUT_S = 60
MAX_SESSION_TIMEOUT_S = 3600
#: Sessions one user may hold at a time (ClickHouse's max_sessions_for_user); each owns a connection.
MAX_SESSIONS_PER_USER = 32

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
    # Corrupt or truncated compressed bodies (TOO_LARGE_SIZE_COMPRESSED, CHECKSUM_DOESNT_MATCH,
    # UNKNOWN_COMPRESSION_METHOD, CANNOT_DECOMPRESS) are 500s there too; here they are only ever the client's
    # bytes, so a 400.
    **dict.fromkeys((39, 40, 89, 271), 400),
}

# String literals, quoted identifiers and comments, so keywords inside them are not mistaken for clauses.
_LITERALS = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`|--[^\n]*|#[^\n]*|/\*.*?\*/",
                       re.S)
# ASCII (re.A): the name goes back in the X-ClickHouse-Format header, and format names are ASCII anyway.
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\b[^;]*)?[\s;]*$", re.I | re.A)
_FORMAT_NAME = re.compile(r"\w+", re.A)
# Where an INSERT's inline data may begin: after VALUES, or after FORMAT and its name. Literals and comments
# come first in the alternation so what they hold is skipped; ClickHouse's parser confirms each candidate.
_INSERT_DATA = re.compile(_LITERALS.pattern + r"|\b(?P<keyword>VALUES|FORMAT\s+(?P<format>\w+))\b", re.S | re.I | re.A)
# ClickHouse's rule for data after FORMAT <name>: spaces skipped, then at most one line break.
_DATA_START = re.compile(r"[ \t\f]*\r?\n?")
_ENDS_WITH_FORMAT = re.compile(r" FORMAT \w+$")
# VALUES data ends at a semicolon outside its literals, and only blanks may follow (ClickHouse's Values reader).
_VALUES_END = re.compile(_LITERALS.pattern + r"|(?P<end>;)", re.S)
_BLANKS_TO_END = re.compile(r"\s*\Z")
# The statements a read-only request may run, by their first keyword as ClickHouse's formatter writes it.
# An allow-list, so what else ClickHouse can do (SYSTEM, KILL, SET ROLE, BACKUP, ...) is refused unlisted.
_READS = frozenset({"SELECT", "WITH", "EXPLAIN", "SHOW", "DESCRIBE", "EXISTS", "CHECK", "USE"})
# Matched on the raw text, literals included: a lexer of ours that disagreed with ClickHouse's (heredocs,
# nested comments) must not be able to hide the clause, and a false alarm costs only a rephrased query.
_FILE_CLAUSE = re.compile(r"OUTFILE|INFILE", re.I)

# chDB nests and repeats ClickHouse's decorations ("Code: 73. DB::Exception: Code: 73. ... (version ...).
# (UNKNOWN_FORMAT)"); they are stripped so the body carries them once, as ClickHouse's does.
_CODE_PREFIX = re.compile(r"^(?:Code: \d+\. (?:DB::Exception: )?)+")
_VERSION = re.compile(r" ?\(version [^()]*(?:\([^()]*\)[^()]*)*\)")
_REPEATED_NAME = re.compile(r"(\(([A-Z0-9_]+)\))(?:\.? \(\2\))+$")
# The statements chDB can stream (it refuses the others): their answers are sent as the engine produces them.
_STREAMED = frozenset({"SELECT", "WITH"})
# Errors of the parser check name the wrapping query; ClickHouse's answer to the request does not.
_PARSER_SCOPE = re.compile(r"\.? ?: In scope SELECT formatQuerySingleLine\(.*\)(?=\. \([A-Z0-9_]+\)$)", re.S)

_BINARY_FORMATS = ("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack", "npy",
                   "bsoneachrow", "capnproto")
_LEVELS = frozenset(map(str, range(1, 10)))  # http_zlib_compression_level


def create_app(store: Store, users: list[UserConfig], server: ServerConfig | None = None,
               dashboard_sites: list[str] | None = None) -> Starlette:
    """The ClickHouse HTTP interface over ``store`` for ``users``, to be served on its own port; ``server``
    gives the proxies in front of it and the limits on failed logins; with ``dashboard_sites`` (the gateway's
    site ids), the marketers' dashboard under /dashboard/ too, whose session cookie the interface accepts."""
    interface = _Interface(store, users, server or ServerConfig())
    board = None
    if dashboard_sites is not None:
        board = interface.dashboard = dashboard.Dashboard(interface.users, dashboard_sites, interface.check_password)
    return Starlette(routes=[
        Route("/", interface.handle, methods=["GET", "POST"]),
        Route("/ping", _ok),
        Route("/replicas_status", _ok),  # no replicated tables here, so every replica is fine
        *(board.routes() if board else []),
    ])


async def _ok(_request: Request) -> Response:
    return PlainTextResponse("Ok.\n")


class _Interface:
    def __init__(self, store: Store, users: list[UserConfig], server: ServerConfig) -> None:
        self.store = store
        self.users = {user.name: user for user in users}
        self.sessions = _Sessions()
        self.trusted_proxy_hops = server.trusted_proxy_hops
        self.auth_failures = AuthThrottle(server.auth_failure_limit, server.auth_failure_window_s)
        self.auth_limit = f"{server.auth_failure_limit} in {server.auth_failure_window_s:g} s"
        self.display_name = socket.gethostname()
        self.dashboard: dashboard.Dashboard | None = None
        # Each request's statement runs on a thread of its own, alongside others' (chDB runs connections in
        # parallel), and stops when its client goes away or an admin kills it.
        self.runs = runs.Runs(store)

    async def handle(self, request: Request) -> Response:
        params = request.query_params
        if request.method != "POST" and "query" not in params:
            return await _ok(request)  # ClickHouse's root handler: health checks, no credentials
        # The client's query_id is taken only once it has authenticated (as ClickHouse does), and checked.
        headers = {"X-ClickHouse-Server-Display-Name": self.display_name, "X-ClickHouse-Query-Id": str(uuid.uuid4()),
                   "X-ClickHouse-Summary": _summary(Progress())}
        user_name = ""
        packing: codecs.Packing | None = None  # set once the query's own errors are to be packed as its answer
        response: Response | None = None
        try:
            user, by_dashboard = self._login(request, headers)
            user_name = user.name
            headers["X-ClickHouse-Query-Id"] = _query_id(request) or headers["X-ClickHouse-Query-Id"]
            fmt = request.headers.get("x-clickhouse-format") or params.get("default_format") or "TabSeparated"
            if not _FORMAT_NAME.fullmatch(fmt):  # it goes back in the X-ClickHouse-Format header
                raise QueryError(73, f"Unknown format {fmt}. (UNKNOWN_FORMAT)")
            revision = native.parse_revision(params.get("client_protocol_version"))
            request_packing = _packing(params, request.headers)
            body = await _read_body(request)
            if expired := self.sessions.expire():
                await run_in_threadpool(_close, expired)
            buffer_size, wait_end = stream.buffer_settings(params)
            if by_dashboard and "session_id" in params:  # its connection would be the user's, not read-only
                raise QueryError(36, "session_id is not available to dashboard requests. (BAD_ARGUMENTS)")
            session = self.sessions.acquire(user, params)
            get = request.method != "POST"
            packing = request_packing  # from here on an error is the query's answer, packed as asked
            run = self.runs.start(headers["X-ClickHouse-Query-Id"], user.name)
            if session is not None:
                run.on_finish(functools.partial(self.sessions.release, session))
            try:
                async with stream.cancelled_on_disconnect(request, run):
                    answer = await run.call(
                        self._execute,
                        run=run,
                        session=session,
                        user=user.name,
                        head=params.get("query", ""),
                        body=body,
                        content_type=request.headers.get("content-type", ""),
                        packing=packing,
                        url_params=params,
                        revision=revision,
                        fmt=fmt,
                        database=request.headers.get("x-clickhouse-database") or params.get("database"),
                        params={k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")},
                        # GET is read-only in ClickHouse's HTTP semantics, whoever asks; so is the dashboard.
                        readonly=user.readonly or get or by_dashboard,
                        checked=user.readonly or by_dashboard,
                        get=get,
                    )
                    response = await stream.respond(
                        run, answer, packing,
                        functools.partial(_answer_headers, headers, answer.fmt, packing,
                                          _truthy(params.get("send_progress_in_http_headers"))),
                        buffer_size=buffer_size, wait_end=wait_end,
                        error_text=functools.partial(_error_text, user_name=user.name))
            finally:
                if not isinstance(response, StreamingResponse):  # a streamed answer finishes its run itself
                    run.finish()
        except QueryError as exc:
            return _error(exc, headers, user_name, packing)
        except StoreUnavailable as exc:
            return PlainTextResponse(f"ClickHouse is not available right now ({exc}); retry later.\n",
                                     503, headers=headers)
        assert response is not None  # the block above set it, or raised
        return response

    def _login(self, request: Request, headers: dict[str, str]) -> tuple[UserConfig, bool]:
        """The user the request authenticates as, and whether by a dashboard session: its cookie counts only with
        the dashboard's header (which no other site's page can send) and is then the only credential read."""
        if self.dashboard is not None and request.headers.get(dashboard.HEADER) == "1":
            headers.update(dashboard.API_HEADERS)
            if (user := self.dashboard.user_of(request)) is None:
                raise QueryError(516, "No dashboard session, or it has expired: log in again."
                                      " (AUTHENTICATION_FAILED)")
            return user, True
        return self.check_password(request, headers, functools.partial(_credentials, request)), False

    def check_password(self, request: Request, headers: dict[str, str],
                       credentials: Callable[[], tuple[str, str]]) -> UserConfig:
        """The user of ``credentials``; refused unchecked while the request's address has failed too often (with
        Retry-After in ``headers``), and a failure counted."""
        address = client_ip(request.scope, self.trusted_proxy_hops)  # no await from here on: see AuthThrottle
        wait = math.ceil(self.auth_failures.wait(address))
        if wait:
            headers["Retry-After"] = str(wait)
            raise QueryError(201, f"Too many failed authentication attempts from this address (the limit is"
                                  f" {self.auth_limit}); retry in {wait} s. (QUOTA_EXCEEDED)")
        try:
            return self._authenticate(*credentials())
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

    def _execute(self, *, run: runs.Run, session: _Session | None, user: str, head: str, body: bytes,
                 content_type: str, packing: codecs.Packing, url_params: Mapping[str, str], revision: int, fmt: str,
                 database: str | None, params: dict[str, str], readonly: bool, checked: bool,
                 get: bool) -> stream.Answer:
        """Run one request's query on its ``run``'s thread, on its session's connection or on one of its own
        that goes with the request; returns the answer, whole, or a SELECT's as the engine produces it (its
        connection held until its pieces end). ``checked``: refuse what reaches past the tables
        (user_access.check_reach), for read-only users and the dashboard's requests."""
        body = packing.unpack(body, MAX_BODY_BYTES)
        tables: list[multipart.ExternalTable] = []
        if multipart.is_multipart(content_type):
            # The form's fields are parameters like the URL's (which win, as in ClickHouse); the body is no
            # part of the query then.
            form = multipart.parse(content_type, body, dict(url_params))
            head = head or form.fields.get("query", "")
            params = {**{k.removeprefix("param_"): v for k, v in form.fields.items() if k.startswith("param_")},
                      **params}
            body, tables = b"", form.tables
            if tables and readonly:
                # ClickHouse makes them without DDL; here they are temporary tables, which readonly=1 forbids.
                raise QueryError(164, f"{user}: External tables are not available to read-only users here."
                                      " (READONLY)")
        raw = (head.encode() + b"\n" if head else b"") + body  # ClickHouse's rule for a query split over URL and body
        sql, whole = _text(raw)
        if not sql.strip():
            raise QueryError(62, "Empty query. (SYNTAX_ERROR)")
        account = self.users[user]
        conn = session.connection(self.store) if session else user_access.connect(self.store, account, readonly)
        loaded: list[multipart.ExternalTable] = []
        restore = None

        def release() -> None:
            if session is None:
                conn.close()
            else:  # they belong to the query, not to its session
                for table in loaded:
                    multipart.drop(conn, table)
                if restore:
                    session.restore(restore)

        streaming = False
        try:
            formatted = _format(conn, sql[:MAX_QUERY_SIZE + 1])  # longer: ClickHouse's own error, unless an INSERT
            kind = formatted.split(" ", 1)[0]
            if readonly and kind not in _READS:
                raise QueryError(164, f"{user}: Cannot execute query in readonly mode"
                                      f"{_GET_IS_READONLY if get else ''}. (READONLY)")
            if checked:
                user_access.check_reach(conn, account, formatted, params)
            insert = _split_insert(conn, sql, formatted) if kind == "INSERT" else None
            if not (whole or insert):
                raise QueryError(62, "Syntax error: the request holds bytes that are not UTF-8 text after the"
                                     " query; only an INSERT's data may be binary. (SYNTAX_ERROR)")
            statement = insert.sql if insert else sql
            run.query = statement[:QUERY_TEXT_CUT]
            if len(statement) > MAX_QUERY_SIZE:  # the part read could still be a whole statement
                raise QueryError(62, f"Max query size exceeded: the query is longer than {MAX_QUERY_SIZE} bytes."
                                     " (SYNTAX_ERROR)")
            if _FILE_CLAUSE.search(statement):
                # chDB would read or write files of the gateway's host, even on a readonly connection.
                raise QueryError(358, "INTO OUTFILE and FROM INFILE are not allowed. (INTO_OUTFILE_NOT_ALLOWED)")
            settings = query_settings.from_url(url_params.items(), multipart.is_multipart(content_type))
            restore = query_settings.apply(conn, settings, keep=session is not None)
            conn.query("USE {db:Identifier}", params={"db": database or (session.database if session else DATABASE)})
            for table in tables:
                multipart.load(conn, table)
                loaded.append(table)
            clause = _FORMAT_CLAUSE.search(_LITERALS.sub(" ", statement))
            answer_fmt = clause.group(1) if clause else fmt
            framed = bool(revision and not clause and fmt == "Native")
            if insert:
                # The data as sent, bytes and all: the text before it encodes back to the bytes it came from.
                conn.insert(insert.sql, insert.fmt, raw[len(sql[:insert.start].encode()):])
                data = b""
            elif kind == "KILL" and (killed := self.runs.kill_statement(conn, run, formatted, params,
                                                                         answer_fmt)) is not None:
                data = killed
            elif kind in _STREAMED and (framed or (headers := stream.header_lines(answer_fmt)) is not None):
                pieces = (native.stream(conn, sql, formatted, params, revision) if framed
                          else stream.joined(conn.stream(sql, fmt, params=params), headers))
                streaming = True
                return stream.Answer(answer_fmt, lambda: conn.progress,
                                                pieces=stream.Pieces(pieces, release))
            elif framed:
                data = native.query(conn, sql, formatted, params, revision)
            else:
                data = conn.query(sql, fmt, params=params)
            progress = conn.progress
            if session and kind == "USE":
                session.database = conn.query("SELECT currentDatabase()", "TabSeparatedRaw").decode().rstrip("\n")
        finally:
            if not streaming:
                release()
        return stream.Answer(answer_fmt, lambda: progress, data=data)


_GET_IS_READONLY = (". For queries over HTTP, method GET implies readonly. You should use method POST for modifying"
                    " queries")


@dataclass(frozen=True)
class _Insert:
    """An INSERT with inline data, split where ClickHouse's parser ends the statement."""

    sql: str  # up to VALUES or FORMAT <name>
    fmt: str
    start: int  # where the data begins in the request's text


def _format(conn: Connection, text: str) -> str:
    """ClickHouse's own single-line rendering of ``text``, which it parses as exactly one statement (a
    trailing ``;`` and comments allowed), as its HTTP interface does: a second one is its syntax error (62)
    whatever comments, literals or spacing disguise it."""
    try:
        return _call_formatter(conn, "formatQuerySingleLine", text)
    except QueryError as exc:
        raise QueryError(exc.code, _PARSER_SCOPE.sub("", exc.message)) from None


def _format_or_none(conn: Connection, text: str) -> str | None:
    """_format, or None where ClickHouse cannot parse ``text`` as one statement."""
    return _call_formatter(conn, "formatQuerySingleLineOrNull", text)


def _call_formatter(conn: Connection, function: str, text: str) -> Any:
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")  # parameters are TSV-escaped
    return json.loads(conn.query(f"SELECT {function}({{q:String}})", "JSONCompactEachRow", params={"q": escaped}))[0]


def _split_insert(conn: Connection, sql: str, formatted: str) -> _Insert | None:
    """Where ClickHouse's parser ends an INSERT (``formatted``) and its inline data begins; None for an
    INSERT ... SELECT, which has none.

    The data must reach the engine as data: handed the whole text, chDB would cut VALUES data at a
    semicolon and run what follows as a statement of its own. Each VALUES or FORMAT <name> outside
    literals and comments is a candidate, and the parser decides: the text up to the right one formats as
    the whole does, and the text before it is no statement yet (for INSERT ... SELECT ... FORMAT it is).
    """
    head = sql[:MAX_QUERY_SIZE + 1]
    for match in _INSERT_DATA.finditer(head):
        if not match["keyword"] or _format_or_none(conn, head[:match.end()]) != formatted:
            continue
        if _format_or_none(conn, head[:match.start()]) is not None:
            return None
        if match["format"] is None:
            data = sql[match.end():]
            end = next((end for end in _VALUES_END.finditer(data) if end["end"]), None)
            if end and not _BLANKS_TO_END.match(data, end.end()):
                # The engine would ignore it (it never runs it: the data goes as data); ClickHouse refuses it.
                raise QueryError(33, "Cannot read data after semicolon (and"
                                     " input_format_values_allow_data_after_semicolon=0). (CANNOT_READ_ALL_DATA)")
            return _Insert(sql[:match.start()], "Values", match.end())
        start = _DATA_START.match(sql, match.end())
        assert start is not None  # it matches the empty string
        return _Insert(sql[:match.start()], match["format"], start.end())
    if _ENDS_WITH_FORMAT.search(formatted):  # inline data, but where it begins is unclear: refused, not guessed
        raise QueryError(62, "Cannot tell where the INSERT's data begins: write VALUES or FORMAT <name> with no"
                             " comment inside. (SYNTAX_ERROR)")
    return None


@dataclass(eq=False)
class _Session:
    """A named session (``session_id``) owns a connection, so its current database, settings and temporary
    tables last from one of its requests to the next, and no other request sees them."""

    user: UserConfig
    timeout_s: int
    database: str = DATABASE  # the one USE chose; a request's database parameter applies to that request only
    conn: Connection | None = None  # opened by its first query, in a worker thread: opening waits for the engine
    busy: bool = False
    expires: float = math.inf

    def connection(self, store: Store) -> Connection:
        if self.conn is None:
            self.conn = user_access.connect(store, self.user, self.user.readonly)
        return self.conn

    def restore(self, settings: Callable[[], None]) -> None:
        """Put back the settings a query's URL changed (query_settings.apply). Where that fails (a readonly
        the URL raised cannot be lowered again) the session's state goes, its next query starts afresh: the
        settings of one query must not last in the session."""
        try:
            settings()
        except QueryError:
            assert self.conn is not None
            self.conn.close()
            self.conn, self.database = None, DATABASE


class _Sessions:
    """The open sessions, by user and ``session_id`` as in ClickHouse: a user cannot enter another's.

    Used on the event loop only, between awaits, so ``busy`` needs no lock."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], _Session] = {}

    def acquire(self, user: UserConfig, params: QueryParams) -> _Session | None:
        """The request's session (None without ``session_id``), marked busy until release()."""
        session_id = params.get("session_id")
        if not session_id:
            return None
        timeout = _session_timeout(params.get("session_timeout"))
        session = self.open.get((user.name, session_id))
        if session is None:
            if _truthy(params.get("session_check")):
                raise QueryError(372, f"Session {session_id} not found. (SESSION_NOT_FOUND)")
            if sum(name == user.name for name, _ in self.open) >= MAX_SESSIONS_PER_USER:
                raise QueryError(700, f"User {user.name} has {MAX_SESSIONS_PER_USER} sessions open, the most"
                                      " allowed; wait for one to expire (session_timeout) or query without"
                                      " session_id. (USER_SESSION_LIMIT_EXCEEDED)")
            session = self.open[(user.name, session_id)] = _Session(user, timeout)
        elif session.busy:
            raise QueryError(373, f"Session {session_id} is locked by a concurrent client. (SESSION_IS_LOCKED)")
        session.busy, session.timeout_s = True, timeout
        return session

    def release(self, session: _Session) -> None:
        session.busy = False
        session.expires = time.monotonic() + session.timeout_s

    def expire(self) -> list[Connection]:
        """Forget the sessions unused for their timeout; returns their connections for the caller to close
        in a worker thread (closing waits for the engine)."""
        now = time.monotonic()
        gone = [key for key, session in self.open.items() if not session.busy and session.expires <= now]
        return [conn for key in gone if (conn := self.open.pop(key).conn) is not None]


def _session_timeout(value: str | None) -> int:
    if value is None:
        return DEFAULT_SESSION_TIMEOUT_S
    if not (value.isascii() and value.isdigit()):
        raise QueryError(374, f"Invalid session timeout: '{value}'. (INVALID_SESSION_TIMEOUT)")
    if len(value.lstrip("0")) > 9 or int(value) > MAX_SESSION_TIMEOUT_S:  # int() refuses thousands of digits
        raise QueryError(374, f"Session timeout '{value}' is larger than max_session_timeout:"
                              f" {MAX_SESSION_TIMEOUT_S}. (INVALID_SESSION_TIMEOUT)")
    return int(value)


def _close(connections: list[Connection]) -> None:
    for conn in connections:
        conn.close()


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


def _text(raw: bytes) -> tuple[str, bool]:
    """The request as text, and whether that is all of it: an INSERT's binary data (Native, Parquet, ...)
    stops the text at its first byte that is not UTF-8; the statement is before it."""
    try:
        return raw.decode(), True
    except UnicodeDecodeError as exc:
        return raw[:exc.start].decode(), False


def _packing(params: QueryParams, headers: Headers) -> codecs.Packing:
    """How the request's body is packed and its answer is to be (compress, decompress, Content-Encoding,
    enable_http_compression with Accept-Encoding, http_zlib_compression_level)."""
    level = params.get("http_zlib_compression_level", str(codecs.DEFAULT_LEVEL))
    if level not in _LEVELS:
        raise QueryError(36, f"Invalid http_zlib_compression_level '{level}': it must be 1 to 9. (BAD_ARGUMENTS)")
    return codecs.Packing(
        content_encoding=headers.get("content-encoding", ""),
        blocks_in=_truthy(params.get("decompress")),
        verify=not _truthy(params.get("http_native_compression_disable_checksumming_on_decompress")),
        blocks_out=_truthy(params.get("compress")),
        response_encoding=(codecs.choose_encoding(headers.get("accept-encoding", ""))
                           if _truthy(params.get("enable_http_compression")) else None),
        level=int(level),
    )


def _summary(progress: Progress) -> str:
    """X-ClickHouse-Summary as ClickHouse writes it: a JSON object of decimal strings."""
    return json.dumps({
        "read_rows": str(progress.read_rows), "read_bytes": str(progress.read_bytes),
        "written_rows": str(progress.written_rows), "written_bytes": str(progress.written_bytes),
        # Known once the query has run: all it read was all it had to.
        "total_rows_to_read": str(progress.read_rows),
        "result_rows": str(progress.result_rows), "result_bytes": str(progress.result_bytes),
        "elapsed_ns": str(round(progress.elapsed_s * 1e9)),
    }, separators=(",", ":"))


def _too_large() -> QueryError:
    return codecs.too_large(MAX_BODY_BYTES)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def _error(exc: QueryError, headers: dict[str, str], user_name: str, packing: codecs.Packing | None = None) -> Response:
    """ClickHouse's error answer; ``packing``: the query's, which ClickHouse applies to errors the query
    itself raised, as to its data (those before it, such as a failed login, go plain)."""
    body = (_error_text(exc, user_name) + "\n").encode()
    headers = {**headers, "X-ClickHouse-Exception-Code": str(exc.code)}
    if packing is not None:
        body = packing.pack(body)
        if packing.response_encoding:
            headers["Content-Encoding"] = packing.response_encoding
    return PlainTextResponse(body, _STATUS.get(exc.code, 500), headers=headers)


def _error_text(exc: QueryError, user_name: str) -> str:
    """ClickHouse's text of an error, as its answers and its exception blocks in a streamed answer carry it."""
    message = _REPEATED_NAME.sub(r"\1", _VERSION.sub("", _CODE_PREFIX.sub("", exc.message)).strip())
    if user_name and message.startswith("default: "):
        message = f"{user_name}: {message.removeprefix('default: ')}"  # chDB's own user is always 'default'
    return f"Code: {exc.code}. DB::Exception: {message} (version {chdb.engine_version})"


def _answer_headers(headers: dict[str, str], fmt: str, packing: codecs.Packing, send_progress: bool,
                    progress: Progress) -> dict[str, str]:
    """An answer's headers, with what the statement had done when they go (``progress``)."""
    answer = {**headers, "Content-Type": _content_type(fmt), "X-ClickHouse-Format": fmt,
              "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Summary": _summary(progress)}
    if send_progress:
        # ClickHouse sends one while the query runs, every http_headers_progress_interval_ms, until the headers
        # end; these go once, so only the last is sent.
        answer["X-ClickHouse-Progress"] = answer["X-ClickHouse-Summary"]
    if packing.response_encoding:
        answer["Content-Encoding"] = packing.response_encoding
    return answer


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
