"""ClickHouse, embedded through chDB and owned by this process.

chDB runs one query at a time per process and allows one process per data directory, so the
gateway owns the engine and everything else (loader, analysts' HTTP port) goes through this class.
Connections share the engine, each with its own current database, settings and temporary tables
(chDB keeps those per connection): the loader and migrations have a read-write one, and the analysts'
HTTP interface opens its own, locked to ``readonly=1`` for analysts so ClickHouse itself enforces what
they may do, and never touches the loader's.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import chdb
import orjson

DATABASE = "clicktrail"
MIGRATIONS = Path(__file__).resolve().parent / "_data" / "migrations"  # see pyproject.toml: package-data
VIEWS = Path(__file__).resolve().parent / "_data" / "views"

UNKNOWN_TABLE = 60
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


class Connection:
    """A connection of the engine's own: its current database, settings and temporary tables are seen by
    no other. Queries on any connection wait for the Store's lock (chDB runs one at a time anyway), which
    also keeps Store.close from closing a connection under a running query."""

    def __init__(self, store: Store, conn: chdb.state.sqlitelike.Connection) -> None:
        self._store = store
        self._conn: chdb.state.sqlitelike.Connection | None = conn

    def query(self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> bytes:
        """Run ``sql``; the result comes back serialized in ``fmt`` (a FORMAT clause wins)."""
        with self._store._lock:
            if self._conn is None:
                raise StoreUnavailable("ClickHouse is not open")
            try:
                result = self._conn.query(sql, fmt, params=params or None)
            except Exception as exc:
                raise _query_error(exc) from exc
        return result.bytes() if result is not None else b""

    def insert(self, sql: str, fmt: str, data: str) -> None:
        """Run ``sql``, an INSERT without FORMAT or data, with ``data`` in ``fmt``: the engine reads the data
        as data, whatever it contains, where a query's text would be split into statements at semicolons."""
        with self._store._lock:
            if self._conn is None:
                raise StoreUnavailable("ClickHouse is not open")
            try:
                with self._conn.send_insert(sql, fmt) as inserter:
                    inserter.append(data)
                    inserter.finish()
            except Exception as exc:
                raise _query_error(exc) from exc

    def close(self) -> None:
        with self._store._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._store._connections.discard(self)


class Store:
    def __init__(self, path: Path, query_timeout_s: float = 60.0,
                 referrer_channels: dict[str, dict[str, str]] | None = None) -> None:
        """``referrer_channels``: each site's own referrer rules (domain -> channel), from the config."""
        self.path = path
        self.query_timeout_s = query_timeout_s
        self.referrer_channels = referrer_channels or {}
        self._rw: Connection | None = None  # the loader's and migrations'
        self._connections: set[Connection] = set()  # every one open, the loader's among them
        self._lock = threading.Lock()
        self._structure: str | None = None

    @property
    def is_open(self) -> bool:
        return self._rw is not None

    def open(self) -> None:
        """Open the engine and apply pending migrations; raises StoreUnavailable if it cannot."""
        with self._lock:
            if self._rw is not None:
                return
            self.path.mkdir(parents=True, exist_ok=True)
            self._rw = self._connect(readonly=False)
        self.migrate()
        self._write_referrer_channels()

    def close(self) -> None:
        """Close every connection, those handed out by connect() too; the engine stops with the last."""
        with self._lock:
            for conn in list(self._connections):
                conn._close()
            self._rw = None

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
            conn = chdb.connect(str(self.path))
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
        """Run CREATE VIEW statements whatever their order across files: one that reads a view not
        created yet (UNKNOWN_TABLE) waits for the next pass, until a pass creates nothing."""
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
        """Insert spool segments into ``events`` once: rows whose (site_id, event_id) is stored already,
        or repeated within the segments, are skipped.

        The check reads the by_event_id projection, which is committed in the same parts as the rows,
        so a retry after a crash at any point (even between the insert and the segment's deletion)
        finds exactly what was stored. It is the only dedup: ClickHouse's own insert deduplication is
        off, as its tokens and block hashes know nothing of event ids.
        """
        directory = segments[0].parent
        source = f"{directory}/{{{','.join(s.name for s in segments)}}}"
        if self._structure is None:
            self._structure = ", ".join(f"{name} {type_}" for name, type_ in self.columns("events"))
        self.query(
            f"INSERT INTO {DATABASE}.events"
            f" SELECT * FROM file({_quote(source)}, JSONEachRow, {_quote(self._structure)})"
            f" WHERE (site_id, event_id) NOT IN ("
            f"   SELECT site_id, event_id FROM {DATABASE}.events WHERE (site_id, event_id) IN ("
            f"     SELECT site_id, event_id FROM file({_quote(source)}, JSONEachRow,"
            f"     'site_id String, event_id String')))"
            f" LIMIT 1 BY site_id, event_id",
            readonly=False,
        )

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


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements at semicolons that end a line (comments dropped)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.M)
    return [p.strip() for p in parts if p.strip()]
