"""ClickHouse, embedded through chDB and owned by this process.

chDB runs one query at a time per process and allows one process per data directory, so the
gateway owns the engine and everything else (loader, analysts' HTTP port) goes through this class.
Two connections share the engine: a read-write one for the loader and admin users, and one locked
to ``readonly=1`` for analysts, so ClickHouse itself enforces what they may do.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import chdb

DATABASE = "clicktrail"
MIGRATIONS = Path(__file__).resolve().parent / "_data" / "migrations"  # see pyproject.toml: package-data

_USE = re.compile(r"\s*USE\b", re.I)
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


class Store:
    def __init__(self, path: Path, query_timeout_s: float = 60.0) -> None:
        self.path = path
        self.query_timeout_s = query_timeout_s
        self._rw = None
        self._ro = None
        self._lock = threading.Lock()
        self._structure: str | None = None
        self._database: dict[int, str] = {}  # the current database of each connection

    @property
    def is_open(self) -> bool:
        return self._rw is not None

    def open(self) -> None:
        """Open the engine and apply pending migrations; raises StoreUnavailable if it cannot."""
        with self._lock:
            if self._rw is not None:
                return
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                rw = chdb.connect(str(self.path))
                ro = chdb.connect(str(self.path))
                # Times are UTC whatever the host's zone, as the HTTP interface's X-ClickHouse-Timezone says.
                for conn in (rw, ro):
                    conn.query("SET session_timezone = 'UTC'")
                ro.query(f"SET max_execution_time = {self.query_timeout_s}")
                ro.query("SET readonly = 1")
            except Exception as exc:
                raise StoreUnavailable(str(exc).strip()) from exc
            self._rw, self._ro = rw, ro
        self.migrate()

    def close(self) -> None:
        with self._lock:
            for conn in (self._ro, self._rw):
                if conn is not None:
                    conn.close()
            self._rw = self._ro = None
            self._database.clear()

    def query(self, sql: str, fmt: str = "TabSeparated", *, readonly: bool = True,
              params: dict[str, str] | None = None, database: str | None = None) -> bytes:
        """Run one statement; the result comes back serialized in ``fmt`` (a FORMAT clause wins).

        ``database`` is the one unqualified names resolve in; the connection keeps it until the
        next query that names another, so the usual case costs no extra USE.
        """
        with self._lock:
            conn = self._ro if readonly else self._rw
            if conn is None:
                raise StoreUnavailable("ClickHouse is not open")
            try:
                if database is not None and self._database.get(id(conn)) != database:
                    conn.query("USE {db:Identifier}", params={"db": database})
                    self._database[id(conn)] = database
                if _USE.match(sql):  # the query moves the connection itself
                    self._database.pop(id(conn), None)
                result = conn.query(sql, fmt, params=params or None)
            except Exception as exc:
                raise _query_error(exc) from exc
        return result.bytes() if result is not None else b""

    def migrate(self) -> list[str]:
        """Apply each ``clickhouse/migrations/NNNN_name.sql`` not applied yet, in order; return their names."""
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
            self.query(
                f"INSERT INTO {DATABASE}.schema_migrations (version, name) VALUES ({version}, '{path.stem}')",
                readonly=False,
            )
            applied.append(path.stem)
        return applied

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
