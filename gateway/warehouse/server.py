"""ClickHouse on a server or cluster (``[clickhouse] mode = "server"``), written to over HTTP(S) with
clickhouse-connect: a Warehouse (backend.py) like the embedded Store, with the same migrations, views, persons
reloads and dedup insert (backend.Schema), only run on the server.

A batch of spool segments travels as it is (JSONEachRow), compressed, into the temporary table ``loading`` of
this gateway's own session, one request per segment; the dedup insert then reads that table on the server, as the
embedded engine reads its own. Temporary tables live in a session on one server, so the session keeps to one URL;
when that server cannot be reached the next URL is tried, with a new session (the loader retries the batch whole:
its dedup finds what an interrupted insert stored).

Nothing here is process-wide: each Server has its own clients and session, so any number of gateway processes
(each with its own spool and loader) load into one server side by side; the dedup insert keeps each event once
within a gateway, and backend.Schema.remove_duplicates across them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.compression import get_compressor
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from gateway.config import ClickHouseConfig
from gateway.warehouse import cluster
from gateway.warehouse.backend import DATABASE, LOADING, Schema, StoreUnavailable, query_error

T = TypeVar("T")

#: Seconds to wait for a server to accept a connection before trying the next URL.
CONNECT_TIMEOUT_S = 10
#: Seconds a statement of the loader's may run: a load takes seconds, but a migration's backfill of a large table
#: minutes, and a statement given up on would go on running on the server while the loader ran it again. A server
#: that stops answering altogether shows on /readyz as the loader's lag (max_loader_lag_s) long before.
STATEMENT_TIMEOUT_S = 3600


class Server(Schema):
    #: Other gateways load into the same server: each load removes the copies they stored at the same time.
    shared = True

    def __init__(self, config: ClickHouseConfig, referrer_channels: dict[str, dict[str, str]] | None = None) -> None:
        super().__init__(referrer_channels)
        self.config = config
        self.path = ", ".join(config.urls)
        self.disk: Path | None = None  # the server's disks are the server's to watch
        self._client: Client | None = None
        self._url = 0  # the index of the URL in use, or to try first
        # One statement at a time: they share the session (its temporary table), which ClickHouse locks per query.
        self._lock = threading.RLock()
        self._projection_function = False  # whether the server has mergeTreeProjection (found out on open)
        if config.cluster:
            on = f"ON CLUSTER '{config.cluster}'"
            # The shards read the batch's keys from this session's temporary table; the extra copies of an event
            # lie on its shard (sharded by device), whose part names and offsets the DELETE's condition names.
            self._batch_in = "GLOBAL IN"
            self._events_to_alter = f"{cluster.local_name(f'{DATABASE}.events')} {on}"

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        """Connect to the first URL that answers, in turn from the last one used, then bring the schema up to date
        (the migrations not applied yet, the views) as the embedded Store does; StoreUnavailable if no URL answers."""
        with self._lock:
            if self._client is not None:
                return
            errors = []
            for attempt in range(len(self.config.urls)):
                index = (self._url + attempt) % len(self.config.urls)
                try:
                    self._client = self._connect(self.config.urls[index])
                except ClickHouseError as exc:
                    errors.append(f"{self.config.urls[index]}: {exc}")
                    continue
                self._url = index
                break
            else:
                raise StoreUnavailable("no ClickHouse server answers: " + "; ".join(errors))
            self._projection_function = self.query(
                "SELECT count() FROM system.table_functions WHERE name = 'mergeTreeProjection'").strip() == b"1"
            self._opened()

    def _connect(self, url: str) -> Client:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        return clickhouse_connect.get_client(
            interface=parts.scheme, host=parts.hostname, port=parts.port or (8443 if https else 8123),
            username=self.config.user, password=self.config.password, secure=https,
            verify=self.config.verify, ca_cert=self.config.ca_cert or None,
            # Answers to the loader are a few bytes; its inserts are compressed by insert_data.
            compress=False, session_id=f"clicktrail-loader-{uuid.uuid4().hex}",
            connect_timeout=CONNECT_TIMEOUT_S, send_receive_timeout=STATEMENT_TIMEOUT_S,
            # A failed statement is the loader's to retry: clickhouse-connect's own retries would repeat it unseen.
            query_retries=0,
            # On a cluster: inserts done on every shard before they return, joins across shards exact (cluster.py).
            settings=dict(cluster.SESSION_SETTINGS) if self.config.cluster else None,
        )

    # -- on a cluster (see backend.Schema for what each names) -------------------------------------------------

    def _ddl(self, statements: list[str]) -> list[str]:
        return cluster.on_cluster(statements, self.config.cluster) if self.config.cluster else statements

    def _views_ddl(self, statements: list[str]) -> list[str]:
        return cluster.views_on_cluster(statements, self.config.cluster) if self.config.cluster else statements

    def _reload(self, dictionary: str, table: str) -> list[str]:
        """On a cluster every node holds the dictionary and, replicated, its table: each node reloads once it has
        every part of the table (an insert on one node reaches the others a moment later)."""
        if not self.config.cluster:
            return super()._reload(dictionary, table)
        on = f"ON CLUSTER '{self.config.cluster}'"
        return [f"SYSTEM SYNC REPLICA {on} {table}", f"SYSTEM RELOAD DICTIONARY {on} {dictionary}"]

    def _block_number(self, table: str) -> str:
        """On a cluster, the highest of every node's: rows may have arrived at another first."""
        query = super()._block_number(table)
        if not self.config.cluster:
            return query
        return query.replace("FROM system.parts", f"FROM clusterAllReplicas('{self.config.cluster}', system.parts)")

    def _stored(self) -> str:
        """On a cluster, the Distributed events table: each shard looks up the keys it holds. On a server too old
        for mergeTreeProjection, the table (as exact, the lookup only slower)."""
        if self.config.cluster or not self._projection_function:
            return f"{DATABASE}.events"
        return super()._stored()

    def rollups_by_event(self) -> list[str]:
        """On a cluster, by the names the ALTERs are given (cluster.on_cluster finds each one's local table)."""
        tables = super().rollups_by_event()
        if not self.config.cluster:
            return tables
        return sorted({table.removesuffix(cluster.LOCAL) for table in tables} - {f"{DATABASE}.events"})

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def query(self, sql: str, fmt: str = "TabSeparated", *, readonly: bool = True,
              params: dict[str, str] | None = None) -> bytes:
        """Run one statement on the session; ``readonly`` ones with ClickHouse's readonly = 1 for that statement."""
        settings = {"default_format": fmt, **({"readonly": 1} if readonly else {})}
        return self._call(lambda client: client.raw_query(sql, parameters=params, settings=settings))

    def insert_data(self, sql: str, fmt: str, data: bytes) -> None:
        """The statement and its data in one body, compressed (``[clickhouse] compression``) as clickhouse-connect
        compresses its own inserts: the server reads the data after FORMAT as data."""
        body = f"{sql} FORMAT {fmt}\n".encode() + data
        compression = None if self.config.compression == "none" else self.config.compression
        if compression:
            body = bytes(get_compressor(compression).compress_block(body))
        self._call(lambda client: client.raw_insert(None, None, body, compression=compression))

    def _load(self, segments: list[Path]) -> None:
        """A segment's rows into LOADING as they are; dedup_ts missing (a row spooled before migration 0009)
        takes ts, as the rows stored before it did."""
        structure = ", ".join(f"{name} {type_}" + (" DEFAULT ts" if name == "dedup_ts" else "")
                              for name, type_ in self.event_columns())
        self.query(f"CREATE TEMPORARY TABLE {LOADING} ({structure})", readonly=False)
        for segment in segments:
            self.insert_data(f"INSERT INTO {LOADING}", "JSONEachRow", segment.read_bytes())

    def _call(self, run: Callable[[Client], T]) -> T:
        """``run`` with the session's client: ClickHouse's refusals as QueryError; a server that cannot be reached,
        or answers without a ClickHouse error (a proxy's 502), as StoreUnavailable, after which open() reconnects,
        trying the next URL first."""
        with self._lock:
            if self._client is None:
                raise StoreUnavailable("ClickHouse is not open")
            try:
                return run(self._client)
            except ClickHouseError as exc:
                error = None if isinstance(exc, OperationalError) else query_error(str(exc))
                if error is not None:
                    raise error from exc
                url = self.config.urls[self._url]
                self.close()
                self._url = (self._url + 1) % len(self.config.urls)
                raise StoreUnavailable(f"{url}: {exc}") from exc
