"""ClickHouse, embedded through chDB and owned by this process.

chDB allows one process per data directory, so the gateway owns the engine and everything else (loader,
analysts' HTTP port) goes through this class.
Connections share the engine, each with its own current database, settings and temporary tables
(chDB keeps those per connection): the loader and migrations have a read-write one, and the analysts'
HTTP interface opens its own, each in its user's settings profile (user_limits.py) so ClickHouse
itself enforces what they may do, and never touches the loader's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import chdb

from gateway.config import UserConfig

# The names the gateway's modules and the tests have always imported from here (the aliases mark re-exports).
from gateway.warehouse.backend import DATABASE as DATABASE
from gateway.warehouse.backend import DEDUP_INDEX as DEDUP_INDEX
from gateway.warehouse.backend import LOADING, MIGRATIONS, VIEWS, Schema, query_error
from gateway.warehouse.backend import QueryError as QueryError
from gateway.warehouse.backend import StoreUnavailable as StoreUnavailable
from gateway.warehouse.backend import quote as _quote
from gateway.warehouse.backend import split_statements as split_statements
from gateway.warehouse.user_limits import Profiles


def _query_error(exc: Exception) -> QueryError:
    return query_error(str(exc)) or QueryError(1002, str(exc).strip())


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


class Store(Schema):
    """The embedded engine (a Warehouse: see backend.py)."""

    def __init__(self, path: Path, query_timeout_s: float = 60.0,
                 referrer_channels: dict[str, dict[str, str]] | None = None, users: Sequence[UserConfig] = ()) -> None:
        """``referrer_channels``: each site's own referrer rules (domain -> channel), from the config;
        ``users``: the ClickHouse HTTP interface's, whose settings profiles the engine starts with."""
        super().__init__(referrer_channels)
        self.path = path
        #: The engine writes its parts under path: the spool keeps room on that filesystem too.
        self.disk: Path | None = path
        self.query_timeout_s = query_timeout_s
        self.profiles = Profiles(users, query_timeout_s)
        # An admin of the ClickHouse port can load events too (a server-mode gateway pointed here, a script), at
        # the same time as this gateway's loader: then each load checks for copies (Schema.remove_duplicates),
        # for about a tenth of its time; without admins this loader is the only writer, and a copy cannot occur.
        self.shared = any(not user.readonly for user in users)
        self._uri = str(path)
        self._rw: Connection | None = None  # the loader's and migrations'
        self._connections: set[Connection] = set()  # every one open, the loader's among them
        self._lock = threading.Lock()

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
        self._opened()

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

    def migrate(self) -> list[str]:  # type: ignore[override]
        """Schema.migrate, from this module's MIGRATIONS and VIEWS (a test may point them elsewhere)."""
        return super().migrate(MIGRATIONS, VIEWS)

    def insert_data(self, sql: str, fmt: str, data: bytes) -> None:
        if self._rw is None:
            raise StoreUnavailable("ClickHouse is not open")
        self._rw.insert(sql, fmt, data)

    def _load(self, segments: list[Path]) -> None:
        """The engine reads the segments itself, in one statement. A row spooled before migration 0009 has no
        dedup_ts: it takes ts, as the rows stored before it did."""
        # Segments of several acceptors' spools (server.processes) load together: named from their common folder.
        directory = Path(os.path.commonpath([s.parent for s in segments]))
        source = _quote(f"{directory}/{{{','.join(str(s.relative_to(directory)) for s in segments)}}}")
        structure = ", ".join(f"{name} {_spooled(name, type_)}" for name, type_ in self.event_columns())
        self.query(f"CREATE TEMPORARY TABLE {LOADING} AS SELECT * REPLACE (ifNull(dedup_ts, ts) AS dedup_ts)"
                   f" FROM file({source}, JSONEachRow, {_quote(structure)})", readonly=False)


def _spooled(column: str, type_: str) -> str:
    """The type a spooled row's column is read as: dedup_ts may be missing (spooled before migration 0009)."""
    return f"Nullable({type_})" if column == "dedup_ts" else type_
