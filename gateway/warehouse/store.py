"""ClickHouse, embedded through chDB and owned by this process.

chDB allows one process per data directory, so the gateway owns the engine and everything else (loader,
analysts' HTTP port) goes through this class.
Connections share the engine, each with its own current database, settings and temporary tables
(chDB keeps those per connection): the loader and migrations have a read-write one, and the analysts'
HTTP interface opens its own, each in its user's settings profile (user_limits.py) so ClickHouse
itself enforces what they may do, and never touches the loader's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import chdb
import orjson

from gateway.config import UserConfig
from gateway.warehouse.user_limits import Profiles

DATABASE = "clicktrail"
MIGRATIONS = Path(__file__).resolve().parent.parent / "_data" / "migrations"  # see pyproject.toml: package-data
VIEWS = Path(__file__).resolve().parent.parent / "_data" / "views"

UNKNOWN_TABLE = 60
#: The events table's projection the loader deduplicates by (migration 0009).
DEDUP_INDEX = "by_dedup_ts"
#: The temporary table holding the rows of the insert under way (see Store.insert_segments).
_LOADING = "loading"
_DICTIONARY_OR_FUNCTION = re.compile(r"CREATE (?:OR REPLACE )?(?:DICTIONARY|FUNCTION)\b", re.I)
_MATERIALIZED_VIEW = re.compile(
    r"CREATE MATERIALIZED VIEW (?:IF NOT EXISTS )?\S+ TO (?P<target>\S+)\s+AS\s+(?P<select>SELECT\b.*)", re.S | re.I)

_CODE = re.compile(r"Code: (\d+)\. (?:DB::Exception: )?(.*)", re.S)


class StoreUnavailable(Exception):
    """The engine cannot be opened or used right now; retry later."""


class QueryError(Exception):
    """ClickHouse refused a query; ``code`` is ClickHouse's error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _query_error(exc: Exception) -> QueryError:
    text = str(exc).strip()
    match = _CODE.search(text)
    if match:
        return QueryError(int(match.group(1)), match.group(2).strip())
    return QueryError(1002, text)


@dataclass(frozen=True)
class Progress:
    """What a statement read, wrote and returned, as ClickHouse's X-ClickHouse-Summary counts it: rows and
    bytes read from tables, written to them, and in the result."""

    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    elapsed_s: float = 0.0


class Connection:
    """A connection of the engine's own: its current database, settings and temporary tables are seen by
    no other. It runs one statement at a time (its lock, which also keeps close from closing it under a
    running one); statements on other connections run alongside: chDB runs each connection's queries in
    parallel (measured with chdb 4.4: see loadtests/bench_freshness.py), so an analyst's long query holds
    up neither the loader's inserts nor other analysts."""

    def __init__(self, store: Store, conn: chdb.state.sqlitelike.Connection) -> None:
        self._store = store
        self._conn: chdb.state.sqlitelike.Connection | None = conn
        self._lock = threading.Lock()
        #: The last statement's counts (query() or insert()), or a stream's so far (stream()).
        self.progress = Progress()

    def query(self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> bytes:
        """Run ``sql``; the result comes back serialized in ``fmt`` (a FORMAT clause wins)."""
        with self._lock:
            conn = self._engine()
            try:
                result = conn.query(sql, fmt, params=params or None)
            except Exception as exc:
                raise _query_error(exc) from exc
        if result is None:
            self.progress = Progress()
            return b""
        # chDB's rows_read/bytes_read count the result; storage_* what was read from tables.
        self.progress = Progress(result.storage_rows_read(), result.storage_bytes_read(), result.rows_written(),
                                 result.bytes_written(), result.rows_read(), result.bytes_read(), result.elapsed())
        return result.bytes()

    def stream(self, sql: str, fmt: str = "TabSeparated",
               params: dict[str, str] | None = None) -> Generator[bytes, None, None]:
        """Run ``sql``, a SELECT (chDB streams no other statement), and yield its result in ``fmt`` (a FORMAT
        clause wins) piece by piece as the engine produces it, a block or more each; ``progress`` holds the
        counts so far. The engine works only while the next piece is asked for; closing the generator before
        its end cancels the query.

        The pieces come from chDB's own connection: its StreamingResult drops pieces without rows, which an
        empty result's only piece is (JSON's meta, CSVWithNames' header).
        """
        started = time.monotonic()
        with self._lock:
            engine = self._engine()._conn
            try:
                running = engine.send_query(sql, fmt, params=params or {})
            except Exception as exc:
                raise _query_error(exc) from exc
        self.progress = Progress()
        over = False
        try:
            while True:
                with self._lock:
                    engine = self._engine()._conn
                    try:
                        piece = engine.streaming_fetch_result(running)
                    except Exception as exc:
                        over = True  # a query that failed has ended
                        raise _query_error(exc) from exc
                data = piece.bytes() if piece is not None else b""
                if piece is None or (not data and not piece.rows_read()):  # chDB's end of the stream
                    over = True
                    return
                p = self.progress
                self.progress = Progress(p.read_rows + piece.storage_rows_read(),
                                         p.read_bytes + piece.storage_bytes_read(), 0, 0,
                                         p.result_rows + piece.rows_read(), p.result_bytes + piece.bytes_read(),
                                         time.monotonic() - started)
                yield data
        finally:
            if not over:
                with self._lock:
                    if self._conn is not None:  # closing the connection has cancelled it already
                        self._conn._conn.streaming_cancel_query(running)

    def insert(self, sql: str, fmt: str, data: str | bytes) -> None:
        """Run ``sql``, an INSERT without FORMAT or data, with ``data`` in ``fmt`` (any input format, binary
        ones too): the engine reads the data as data, whatever it contains, where a query's text would be
        split into statements at semicolons."""
        with self._lock:
            conn = self._engine()
            try:
                with conn.send_insert(sql, fmt) as inserter:
                    inserter.append(data)
                    result = inserter.finish()
            except Exception as exc:
                raise _query_error(exc) from exc
        self.progress = Progress(written_rows=result.rows_written, written_bytes=result.bytes_written,
                                 elapsed_s=result.elapsed)

    def close(self) -> None:
        """Close the connection, once the statement it runs (if any) is over; a stream open on it is cancelled."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
        with self._store._lock:
            self._store._connections.discard(self)

    def _engine(self) -> chdb.state.sqlitelike.Connection:
        if self._conn is None:
            raise StoreUnavailable("ClickHouse is not open")
        return self._conn


class Store:
    def __init__(self, path: Path, query_timeout_s: float = 60.0,
                 referrer_channels: dict[str, dict[str, str]] | None = None, users: Sequence[UserConfig] = ()) -> None:
        """``referrer_channels``: each site's own referrer rules (domain -> channel), from the config;
        ``users``: the ClickHouse HTTP interface's, whose settings profiles the engine starts with."""
        self.path = path
        self.query_timeout_s = query_timeout_s
        self.referrer_channels = referrer_channels or {}
        self.profiles = Profiles(users, query_timeout_s)
        self._uri = str(path)
        self._rw: Connection | None = None  # the loader's and migrations'
        self._connections: set[Connection] = set()  # every one open, the loader's among them
        self._lock = threading.Lock()
        self._structure: str | None = None
        self._persons_block: bytes | None = None  # identity_links' highest block number at the last reload

    @property
    def is_open(self) -> bool:
        return self._rw is not None

    def open(self) -> None:
        """Open the engine and apply pending migrations; raises StoreUnavailable if it cannot."""
        with self._lock:
            if self._rw is not None:
                return
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                config = self.profiles.write(self.path.with_name(self.path.name + "_config"))
            except OSError as exc:
                raise StoreUnavailable(f"cannot write the engine's configuration: {exc}") from exc
            self._uri = f"{self.path}?config-file={config}"
            self._rw = self._connect(readonly=False)
        self.migrate()
        self._write_referrer_channels()
        self.refresh_persons()

    def close(self) -> None:
        """Close every connection, those handed out by connect() too, each once its running statement is over;
        the engine stops with the last."""
        with self._lock:
            connections = list(self._connections)
            self._rw = None
        for conn in connections:  # not under the lock: Connection.close takes it
            conn.close()

    def connect(self, readonly: bool) -> Connection:
        """A new connection of its own (see Connection); with ``readonly`` it is locked to ``readonly=1``
        and stops queries after the query timeout. The caller closes it, or close() does."""
        with self._lock:
            if self._rw is None:
                raise StoreUnavailable("ClickHouse is not open")
            return self._connect(readonly)

    def _connect(self, readonly: bool) -> Connection:
        # Times are UTC whatever the host's zone, as the HTTP interface's X-ClickHouse-Timezone says.
        settings = "session_timezone = 'UTC'"
        if readonly:  # readonly last: it forbids changing settings, itself included
            settings += f", max_execution_time = {self.query_timeout_s}, readonly = 1"
        try:
            conn = chdb.connect(self._uri)
        except Exception as exc:
            raise StoreUnavailable(str(exc).strip()) from exc
        try:
            conn.query(f"SET {settings}")
        except Exception as exc:
            conn.close()
            raise StoreUnavailable(str(exc).strip()) from exc
        connection = Connection(self, conn)
        self._connections.add(connection)
        return connection

    def query(self, sql: str, fmt: str = "TabSeparated", *, readonly: bool = True,
              params: dict[str, str] | None = None) -> bytes:
        """Run one statement on the loader's read-write connection or, ``readonly``, on a read-only
        connection of its own; the result comes back serialized in ``fmt`` (a FORMAT clause wins)."""
        if not readonly:
            if self._rw is None:
                raise StoreUnavailable("ClickHouse is not open")
            return self._rw.query(sql, fmt, params)
        conn = self.connect(readonly=True)
        try:
            return conn.query(sql, fmt, params)
        finally:
            conn.close()

    def migrate(self) -> list[str]:
        """Apply each ``clickhouse/migrations/NNNN_name.sql`` not applied yet, in order, then (re)create the
        analysts' views of ``clickhouse/views/``; return the names of the migrations applied.

        A materialized view created by a migration is backfilled from the events already stored (its
        SELECT inserted into its target), so an existing install gets complete rollups; the rollups keep
        only idempotent states, so what the view adds meanwhile, or a re-run after a crash, doubles nothing.
        Views hold no state, so each start replaces them: their current definition is the file's.
        """
        self.query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}", readonly=False)
        self.query(
            f"CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations"
            " (version UInt32, name String, applied_at DateTime DEFAULT now())"
            " ENGINE = MergeTree ORDER BY version",
            readonly=False,
        )
        done = {int(v) for v in self.query(f"SELECT version FROM {DATABASE}.schema_migrations",
                                           readonly=False).split()}
        applied = []
        for path in sorted(MIGRATIONS.glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            if version in done:
                continue
            for statement in split_statements(path.read_text()):
                self.query(statement, readonly=False)
                if backfill := _MATERIALIZED_VIEW.match(statement):
                    self.query(f"INSERT INTO {backfill['target']} {backfill['select']}", readonly=False)
            self.query(
                f"INSERT INTO {DATABASE}.schema_migrations (version, name) VALUES ({version}, '{path.stem}')",
                readonly=False,
            )
            applied.append(path.stem)
        self._create_views([st for path in sorted(VIEWS.glob("*.sql")) for st in split_statements(path.read_text())])
        return applied

    def _create_views(self, statements: list[str]) -> None:
        """Run the views' statements whatever their order across files: dictionaries and functions first
        (views resolve the ones they call when created), then views; one that reads a view not created
        yet (UNKNOWN_TABLE) waits for the next pass, until a pass creates nothing."""
        statements = sorted(statements, key=lambda st: 0 if _DICTIONARY_OR_FUNCTION.match(st) else 1)
        while statements:
            waiting: list[str] = []
            error: QueryError | None = None
            for statement in statements:
                try:
                    self.query(statement, readonly=False)
                except QueryError as exc:
                    if exc.code != UNKNOWN_TABLE:
                        raise
                    waiting.append(statement)
                    error = exc
            if len(waiting) == len(statements):
                assert error is not None
                raise error
            statements = waiting

    def _write_referrer_channels(self) -> None:
        """Replace the sites' referrer rules with the config's (the built-in classes, site '', stay): the
        views compute a touch's channel when read, so a changed rule applies to every touch ever stored."""
        table = f"{DATABASE}.referrer_channels"
        self.query(f"ALTER TABLE {table} DELETE WHERE site_id != '' SETTINGS mutations_sync = 2", readonly=False)
        rules = [{"site_id": site, "domain": domain.lower(), "channel": channel}
                 for site, domains in self.referrer_channels.items() for domain, channel in domains.items()]
        if rules:
            assert self._rw is not None
            # As data, never as query text: a channel name may hold a ';'.
            self._rw.insert(f"INSERT INTO {table}", "JSONEachRow", orjson.dumps(rules).decode())
        self.query(f"SYSTEM RELOAD DICTIONARY {table}_dict", readonly=False)

    def insert_segments(self, segments: list[Path]) -> None:
        """Insert spool segments into ``events`` once: rows whose (site_id, dedup_ts, event_id) is stored
        already, or repeated within the segments, are skipped.

        dedup_ts is the same for every copy of an event (see migration 0009), and the by_dedup_ts projection
        is ordered by it, so the lookup reads where the batch's own times lie, not every id of the site. It
        reads the projection directly: ClickHouse would choose the table's larger granules over the
        projection's smaller ones whenever it needs fewer of them. While a part lacks the projection (before
        the migration's background materialization is done, or if someone cleared it), the lookup reads the
        table instead, as exact, only slower: inserts and merges keep the projection, so no part loses it
        between the check and the insert. The projection is committed in the same parts as the rows, so a
        retry after a crash at any point (even between the insert and the segment's deletion) finds exactly
        what was stored. It is the only dedup: ClickHouse's own insert deduplication is off, as its tokens
        and block hashes know nothing of event ids.

        The segments are parsed once, into a temporary table of the loader's connection, which both the
        insert and the lookup read. A row spooled before migration 0009 has no dedup_ts: it takes ts, as the
        rows stored before it did. The materialized views get the rows in parallel (two cores, not one).
        """
        directory = segments[0].parent
        source = _quote(f"{directory}/{{{','.join(s.name for s in segments)}}}")
        if self._structure is None:
            self._structure = ", ".join(f"{name} {_spooled(name, type_)}" for name, type_ in self.columns("events"))
        unindexed = self.query(f"SELECT count() FROM system.parts WHERE database = '{DATABASE}' AND table = 'events'"
                               f" AND active AND NOT has(projections, '{DEDUP_INDEX}')", readonly=False)
        stored = (f"{DATABASE}.events" if int(unindexed) else f"mergeTreeProjection({DATABASE}, events, {DEDUP_INDEX})")
        key = "(site_id, dedup_ts, event_id)"
        try:
            self.query(f"CREATE TEMPORARY TABLE {_LOADING} AS SELECT * REPLACE (ifNull(dedup_ts, ts) AS dedup_ts)"
                       f" FROM file({source}, JSONEachRow, {_quote(self._structure)})", readonly=False)
            self.query(
                f"INSERT INTO {DATABASE}.events SELECT * FROM {_LOADING} WHERE {key} NOT IN ("
                f"  SELECT {key} FROM {stored} WHERE {key} IN (SELECT {key} FROM {_LOADING}))"
                f" LIMIT 1 BY {key} SETTINGS parallel_view_processing = 1",
                readonly=False,
            )
        finally:
            self.query(f"DROP TEMPORARY TABLE IF EXISTS {_LOADING}", readonly=False)
        self.refresh_persons()

    def refresh_persons(self) -> None:
        """Reload the persons dictionary (clickhouse/views/people.sql) when identity_links has changed since
        the last load: the views resolve every event's person through it, and it never reloads by itself.
        Only an insert raises the table's highest block number (merges keep it), so this reloads after the
        loads that brought an identify, and otherwise costs a look at part metadata.
        """
        block = self.query(
            f"SELECT max(max_block_number) FROM system.parts WHERE database = '{DATABASE}'"
            " AND table = 'identity_links' AND active",
            readonly=False,
        ).strip()
        if block != self._persons_block:
            self.query(f"SYSTEM RELOAD DICTIONARY {DATABASE}.persons", readonly=False)
            self._persons_block = block

    def columns(self, table: str) -> list[tuple[str, str]]:
        """(name, type) of a table's columns, in order."""
        rows = self.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}"
            " ORDER BY position",
            "TabSeparatedRaw",
            readonly=False,
            params={"db": DATABASE, "t": table},
        )
        return [tuple(line.split("\t", 1)) for line in rows.decode().splitlines()]  # type: ignore[misc]


def _spooled(column: str, type_: str) -> str:
    """The type a spooled row's column is read as: dedup_ts may be missing (spooled before migration 0009)."""
    return f"Nullable({type_})" if column == "dedup_ts" else type_


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements at semicolons that end a line (comments dropped)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.M)
    return [p.strip() for p in parts if p.strip()]
