"""The seam between the gateway and the ClickHouse it loads events into: embedded (store.Store, chDB in this
process) or a server (server.Server, over HTTP with clickhouse-connect), chosen by ``[clickhouse] mode``.

``Warehouse`` is what the loader and the app use. ``Schema`` holds what both backends do with the same SQL, on
top of the two ways each runs a statement (``query``) and sends data as data (``insert_data``): the migrations
and their bookkeeping, the views, the sites' referrer rules, the persons dictionary's reload, the loader's dedup
insert, and the removal of copies that another gateway stored at the same moment. Only how a batch's spool
segments become the temporary table ``loading`` differs (the embedded engine reads the files, a server is sent
their bytes), so the rows stored, and the dedup, are the same.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Protocol

import orjson

log = logging.getLogger("clicktrail.warehouse")

DATABASE = "clicktrail"
MIGRATIONS = Path(__file__).resolve().parent.parent / "_data" / "migrations"  # see pyproject.toml: package-data
VIEWS = Path(__file__).resolve().parent.parent / "_data" / "views"

UNKNOWN_TABLE = 60
#: The events table's projection the loader deduplicates by (migration 0009).
DEDUP_INDEX = "by_dedup_ts"
#: The temporary table holding the rows of the insert under way (see Schema.insert_segments).
LOADING = "loading"
#: What makes a row the same event: the loader stores each once (migration 0009 says why dedup_ts).
KEY = "(site_id, dedup_ts, event_id)"
_DICTIONARY_OR_FUNCTION = re.compile(r"CREATE (?:OR REPLACE )?(?:DICTIONARY|FUNCTION)\b", re.I)
_MATERIALIZED_VIEW = re.compile(
    r"CREATE MATERIALIZED VIEW (?:IF NOT EXISTS )?\S+ TO (?P<target>\S+)\s+AS\s+(?P<select>SELECT\b.*)", re.S | re.I)
_CODE = re.compile(r"Code: (\d+)\. (?:DB::Exception: )?(.*)", re.S)


class StoreUnavailable(Exception):
    """ClickHouse cannot be opened, reached or used right now; retry later."""


class QueryError(Exception):
    """ClickHouse refused a query; ``code`` is ClickHouse's error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def query_error(text: str) -> QueryError | None:
    """The ClickHouse error (``Code: N. DB::Exception: ...``) that ``text`` reports, None if it reports none."""
    match = _CODE.search(text.strip())
    return QueryError(int(match.group(1)), match.group(2).strip()) if match else None


class Warehouse(Protocol):
    """What the loader and the app need of ClickHouse, whichever backend it is."""

    #: Where it lives, for logs: the embedded engine's data directory, or the server's URL(s).
    @property
    def path(self) -> Path | str: ...

    #: The local directory the engine writes, whose filesystem the spool keeps room on; None for a server.
    @property
    def disk(self) -> Path | None: ...

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None:
        """Open (connect), apply pending migrations, recreate the views; StoreUnavailable if it cannot."""

    def close(self) -> None: ...

    def migrate(self) -> list[str]: ...

    def insert_segments(self, segments: list[Path]) -> None:
        """Insert spool segments into ``events``, each event once (see Schema.insert_segments)."""

    def refresh_persons(self) -> None: ...

    def query(self, sql: str, fmt: str = "TabSeparated", *, readonly: bool = True,
              params: dict[str, str] | None = None) -> bytes: ...


class Schema(ABC):
    """What both backends do with the same SQL: see the module's docstring."""

    #: Whether other gateways load into the same tables: then each load ends with remove_duplicates.
    shared = False

    def __init__(self, referrer_channels: dict[str, dict[str, str]] | None) -> None:
        """``referrer_channels``: each site's own referrer rules (domain -> channel), from the config."""
        self.referrer_channels = referrer_channels or {}
        self._columns: list[tuple[str, str]] | None = None  # the events table's, read once per open
        self._persons_block: bytes | None = None  # identity_links' highest block number at the last reload

    @abstractmethod
    def query(self, sql: str, fmt: str = "TabSeparated", *, readonly: bool = True,
              params: dict[str, str] | None = None) -> bytes:
        """Run one statement; its result comes back serialized in ``fmt`` (a FORMAT clause wins)."""

    @abstractmethod
    def insert_data(self, sql: str, fmt: str, data: bytes) -> None:
        """Run ``sql``, an INSERT without FORMAT or data, with ``data`` in ``fmt``, sent as data (never parsed as
        query text, where a ';' would end the statement)."""

    @abstractmethod
    def _load(self, segments: list[Path]) -> None:
        """Fill the temporary table LOADING (the events table's columns, dedup_ts never NULL) with the rows of
        ``segments``, on the connection (session) the following statements run on."""

    # How the statements below name what they read and change: one engine's own tables here; a cluster's
    # (Distributed tables in front of local ones, ON CLUSTER) in server.py.

    def _ddl(self, statements: list[str]) -> list[str]:
        """A migration's statements as this backend runs them."""
        return statements

    def _views_ddl(self, statements: list[str]) -> list[str]:
        """The views' statements as this backend runs them."""
        return statements

    def _reload(self, dictionary: str, table: str) -> list[str]:
        """The statements that reload ``dictionary`` from ``table``, its source, as it is now."""
        return [f"SYSTEM RELOAD DICTIONARY {dictionary}"]

    def _block_number(self, table: str) -> str:
        """A query of ``table``'s highest block number: only an insert raises it (merges keep it)."""
        return (f"SELECT max(max_block_number) FROM system.parts WHERE database = '{DATABASE}' AND table = '{table}'"
                " AND active")

    def _stored(self) -> str:
        """What the loader looks stored events up in: the dedup index (the projection), or the table while a part
        lacks it (before the migration's background materialization is done, or if someone cleared it)."""
        unindexed = self.query(f"SELECT count() FROM system.parts WHERE database = '{DATABASE}' AND table = 'events'"
                               f" AND active AND NOT has(projections, '{DEDUP_INDEX}')", readonly=False)
        return f"{DATABASE}.events" if int(unindexed) else f"mergeTreeProjection({DATABASE}, events, {DEDUP_INDEX})"

    #: How a lookup in _stored() reads the batch's keys (a cluster's shards read them from this session: GLOBAL).
    _batch_in = "IN"
    #: The table whose rows remove_duplicates deletes, as an ALTER names it.
    _events_to_alter = f"{DATABASE}.events"

    def _opened(self) -> None:
        """What every open does once connected: the schema, the sites' referrer rules, the persons."""
        self._columns = None
        self.migrate()
        self._write_referrer_channels()
        self.refresh_persons()

    def migrate(self, migrations: Path = MIGRATIONS, views: Path = VIEWS) -> list[str]:
        """Apply each ``clickhouse/migrations/NNNN_name.sql`` not applied yet, in order, then (re)create the
        analysts' views of ``clickhouse/views/``; return the names of the migrations applied.

        A materialized view created by a migration is backfilled from the events already stored (its
        SELECT inserted into its target), so an existing install gets complete rollups; the rollups keep
        only idempotent states, so what the view adds meanwhile, or a re-run after a crash (or by another
        gateway starting at the same time), doubles nothing.
        Views hold no state, so each start replaces them: their current definition is the file's.
        """
        for statement in self._ddl([
            f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
            f"CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations"
            " (version UInt32, name String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version",
        ]):
            self.query(statement, readonly=False)
        done = {int(v) for v in self.query(f"SELECT version FROM {DATABASE}.schema_migrations",
                                           readonly=False).split()}
        applied = []
        for path in sorted(migrations.glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            if version in done:
                continue
            for statement in self._ddl(split_statements(path.read_text())):
                self.query(statement, readonly=False)
                if backfill := _MATERIALIZED_VIEW.match(statement):
                    self.query(f"INSERT INTO {backfill['target']} {backfill['select']}", readonly=False)
            self.query(
                f"INSERT INTO {DATABASE}.schema_migrations (version, name) VALUES ({version}, '{path.stem}')",
                readonly=False,
            )
            applied.append(path.stem)
        self._create_views(self._views_ddl(
            [st for path in sorted(views.glob("*.sql")) for st in split_statements(path.read_text())]))
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
        for statement in self._ddl([f"ALTER TABLE {table} DELETE WHERE site_id != '' SETTINGS mutations_sync = 2"]):
            self.query(statement, readonly=False)
        rules = [{"site_id": site, "domain": domain.lower(), "channel": channel}
                 for site, domains in self.referrer_channels.items() for domain, channel in domains.items()]
        if rules:
            # As data, never as query text: a channel name may hold a ';'.
            self.insert_data(f"INSERT INTO {table}", "JSONEachRow", orjson.dumps(rules))
        for statement in self._reload(f"{table}_dict", table):
            self.query(statement, readonly=False)

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

        The segments are parsed once, into the temporary table LOADING (``_load``), which both the insert and
        the lookup read. The materialized views get the rows in parallel (two cores, not one).
        """
        stored = self._stored()
        try:
            self._load(segments)
            self.query(
                f"INSERT INTO {DATABASE}.events SELECT * FROM {LOADING} WHERE {KEY} NOT IN ("
                f"  SELECT {KEY} FROM {stored} WHERE {KEY} {self._batch_in} (SELECT {KEY} FROM {LOADING}))"
                f" LIMIT 1 BY {KEY} SETTINGS parallel_view_processing = 1",
                readonly=False,
            )
            if self.shared:
                self.remove_duplicates(stored)
        finally:
            self.query(f"DROP TEMPORARY TABLE IF EXISTS {LOADING}", readonly=False)
        self.refresh_persons()

    def remove_duplicates(self, stored: str) -> int:
        """Delete the copies, stored by other gateways, of the events just inserted (LOADING's); return how many.

        Each gateway's insert stores an event only if its lookup found it absent, so a second copy exists only
        where two gateways loaded the same event at the same time, each lookup before the other's insert. This
        runs after each insert, so the later of the two runs after both inserts and sees both copies: they go
        before that loader takes its next batch, or, if it stops first, when it loads the batch again (the
        segment stays in its spool until this is done).

        The first copy received stays (ties broken by ts, then by part and offset: an order every gateway agrees
        on); the others are deleted by part and offset, which names one row of one part, so two gateways deleting
        at once cannot take the last copy (a part merged or mutated meanwhile has another name: the delete finds
        nothing). The rollups' states are the same for one identical copy or two (min, max, argMin, uniqExact of
        ids, replacing); a copy with another ts (corrected by another request's sent_at) also left its rows at
        that ts in the rollups keyed by an event's time (``rollups_by_event``), which go with it.

        The lookup reads the dedup index, as the insert's does; only keys found twice are read from the table.
        """
        columns = KEY[1:-1]
        repeated = self.query(f"SELECT {columns} FROM {stored} WHERE {KEY} {self._batch_in} (SELECT {KEY} FROM"
                              f" {LOADING}) GROUP BY {columns} HAVING count() > 1", "JSONCompactEachRow",
                              readonly=False)
        if not repeated.strip():
            return 0
        keys = ", ".join(f"({quote(site)}, {quote(dedup_ts)}, {quote(event_id)})"
                         for site, dedup_ts, event_id in map(orjson.loads, repeated.splitlines()))
        copies = self.query(
            f"SELECT {columns}, toString(ts), _part, _part_offset FROM {DATABASE}.events WHERE {KEY} IN ({keys})"
            f" ORDER BY {columns}, received_at, ts, _part, _part_offset", "JSONCompactEachRow", readonly=False)
        kept: dict[tuple[str, str, str], str] = {}
        extra, stale = [], set()
        for site, dedup_ts, event_id, ts, part, offset in map(orjson.loads, copies.splitlines()):
            if (site, dedup_ts, event_id) not in kept:  # the first in the order above
                kept[site, dedup_ts, event_id] = ts
                continue
            extra.append(f"({quote(part)}, {offset}, {quote(site)}, {quote(dedup_ts)}, {quote(event_id)})")
            if ts != kept[site, dedup_ts, event_id]:
                stale.add(f"({quote(site)}, {quote(event_id)}, {quote(ts)})")
        if not extra:
            return 0  # removed meanwhile, by the gateway that stored them
        self.query(f"ALTER TABLE {self._events_to_alter} DELETE WHERE (_part, _part_offset, {columns})"
                   f" IN ({', '.join(extra)}) SETTINGS mutations_sync = 2", readonly=False)
        if stale:
            for table in self.rollups_by_event():
                for statement in self._ddl([f"ALTER TABLE {table} DELETE WHERE (site_id, event_id, ts)"
                                            f" IN ({', '.join(sorted(stale))}) SETTINGS mutations_sync = 2"]):
                    self.query(statement, readonly=False)
        log.info("removed %d copies of events that another gateway stored at the same time", len(extra))
        return len(extra)

    def rollups_by_event(self) -> list[str]:
        """The tables a materialized view fills with a row per event at its time: those with the columns site_id,
        event_id and ts (touches, lead_stages, page leaves by time), as the migrations made them."""
        rows = self.query(
            "SELECT c.table FROM system.columns AS c JOIN system.tables AS t ON t.database = c.database"
            " AND t.name = c.table WHERE c.database = {db:String} AND c.table != 'events'"
            " AND t.engine LIKE '%MergeTree' AND c.name IN ('site_id', 'event_id', 'ts')"
            " GROUP BY c.table HAVING count() = 3 ORDER BY c.table",
            "TabSeparatedRaw", readonly=False, params={"db": DATABASE})
        return [f"{DATABASE}.{table}" for table in rows.decode().split()]

    def refresh_persons(self) -> None:
        """Reload the persons dictionary (clickhouse/views/people.sql) when identity_links has changed since
        the last load: the views resolve every event's person through it, and it never reloads by itself.
        Only an insert raises the table's highest block number (merges keep it), so this reloads after the
        loads that brought an identify, and otherwise costs a look at part metadata.
        """
        block = self.query(self._block_number("identity_links"), readonly=False).strip()
        if block != self._persons_block:
            for statement in self._reload(f"{DATABASE}.persons", f"{DATABASE}.identity_links"):
                self.query(statement, readonly=False)
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

    def event_columns(self) -> list[tuple[str, str]]:
        """The events table's (name, type), as LOADING has them; read once per open (migrations change them)."""
        if self._columns is None:
            self._columns = self.columns("events")
        return self._columns


def quote(value: str) -> str:
    """``value`` as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements at semicolons that end a line (comments dropped)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.M)
    return [p.strip() for p in parts if p.strip()]
