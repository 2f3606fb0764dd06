"""Grafana's ClickHouse data source over HTTP, against a real gateway process.

The plugin talks through clickhouse-go (conn_http.go): every request is a POST of the SQL with
``default_format=Native&client_protocol_version=54460`` in the URL (plus ``compress=1`` when the data source
uses LZ4), the first one its handshake ``SELECT displayName(), version(), revision(), timezone()``. It decodes
the answers as lib/proto/block.go does: the handshake at its own revision, every later answer at the revision
the handshake returned, both past 54454, so each block starts with a BlockInfo and each column's type is
followed by a "custom serialization" flag it refuses to see set. The requests here are those, and the answers
are decoded that way, with clickhouse-connect's column readers for the column data."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from clickhouse_connect.datatypes import registry
from clickhouse_connect.driver.ctypes import RespBuffCls
from clickhouse_connect.driver.exceptions import StreamCompleteException
from clickhouse_connect.driver.query import QueryContext

from tests.clickhouse_blocks import make_block, read_blocks
from tests.conftest import GatewayProcess, make_event

CLIENT_TCP_PROTOCOL_VERSION = 54460  # clickhouse-go v2's lib/proto/const.go DBMS_TCP_PROTOCOL_VERSION
CUSTOM_SERIALIZATION = 54454
HANDSHAKE = "SELECT displayName(), version(), revision(), timezone()"


@pytest.fixture(scope="module")
def grafana(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    # clickhouse-go puts the user and password in the URL, which Go's client sends as Basic auth.
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.clickhouse_port}", auth=("analyst", "analyst-pw"),
                      params={"default_format": "Native", "client_protocol_version": CLIENT_TCP_PROTOCOL_VERSION},
                      headers={"User-Agent": "clickhouse-go/2.40.0 (lv:go/1.24.0; os:linux) grafana-datasource"},
                      timeout=30) as client:
        yield client


def decode(body: bytes, revision: int) -> tuple[list[tuple[str, str]], list[list[Any]]]:
    """The columns (name, type) and rows of a Native answer, read as clickhouse-go's Block.Decode reads it."""
    source = RespBuffCls(SimpleNamespace(gen=iter([body]), close=lambda: None))
    header: list[tuple[str, str]] = []
    columns: list[list[Any]] = []
    while True:
        try:
            if revision > 0:  # BlockInfo: field 1 is_overflows (bool), field 2 bucket_num (Int32), field 0 ends
                info = source.read_bytes(8)
                assert (info[0], info[2], info[7]) == (1, 2, 0), info
        except StreamCompleteException:
            break
        count, rows = source.read_leb128(), source.read_leb128()
        block = []
        for _ in range(count):
            name, type_ = source.read_leb128_str(), source.read_leb128_str()
            if revision >= CUSTOM_SERIALIZATION:
                assert source.read_byte() == 0, f"custom serialization for {name}: clickhouse-go refuses it"
            block.append((name, type_))
            values = registry.get_from_name(type_).read_column(source, rows, QueryContext()) if rows else []
            if len(columns) < count:
                columns.append([])
            columns[len(block) - 1].extend(values)
        assert not header or header == block, "every block has the same columns"
        header = block
    return header, [list(row) for row in zip(*columns, strict=True)]


def handshake(grafana: httpx.Client, **params: str) -> tuple[str, str, int, str]:
    response = grafana.post("/", content=HANDSHAKE, params=params)
    assert response.status_code == 200, response.text
    body = read_blocks(response.content)[0] if params.get("compress") == "1" else response.content
    header, rows = decode(body, CLIENT_TCP_PROTOCOL_VERSION)
    assert [type_ for _, type_ in header] == ["String", "String", "UInt32", "String"]
    (display_name, version, revision, timezone), = rows
    return display_name, version, revision, timezone


def test_handshake(grafana: httpx.Client) -> None:
    display_name, version, revision, timezone = handshake(grafana)
    assert display_name and version.startswith("26.") and timezone == "UTC"
    assert revision >= CLIENT_TCP_PROTOCOL_VERSION  # what clickhouse-go decodes every later answer at


def test_dashboard_queries(grafana: httpx.Client, gateway: GatewayProcess) -> None:
    revision = handshake(grafana)[2]
    now = int(time.time() * 1000)
    events = [make_event("page_view", ts=now - 60_000 * (i % 5), url=f"https://example.com/p?ch=grafana_{i % 2}")
              for i in range(10)]
    assert gateway.send(events, key="sk_a").status_code == 200
    gateway.wait_for("SELECT count() FROM clicktrail.events WHERE channel LIKE 'grafana_%'", 10)

    # A time series panel: the plugin's $__timeFilter and $__timeInterval macros expanded.
    sql = ("SELECT toStartOfInterval(ts, INTERVAL 60 second) AS time, channel, count() AS views"
           " FROM clicktrail.events WHERE ts >= toDateTime({start:Int64}) AND ts <= toDateTime({end:Int64})"
           " AND channel LIKE 'grafana_%' GROUP BY time, channel ORDER BY time, channel")
    response = grafana.post("/", content=sql, params={"param_start": str(now // 1000 - 3600),
                                                      "param_end": str(now // 1000 + 60)})
    assert response.status_code == 200, response.text
    header, rows = decode(response.content, revision)
    assert [name for name, _ in header] == ["time", "channel", "views"]
    assert header[0][1].startswith("DateTime") and "UTC" in header[0][1]  # the zone in the type, as at 54460
    assert header[1][1] == "LowCardinality(String)" or header[1][1] == "String"
    assert sum(row[2] for row in rows) == 10 and {row[1] for row in rows} == {"grafana_0", "grafana_1"}

    # The schema browser.
    header, rows = decode(grafana.post("/", content="SELECT database, name FROM system.tables ORDER BY database,"
                                                    " name").content, revision)
    assert ["clicktrail", "events"] in rows
    header, rows = decode(grafana.post("/", content='DESCRIBE TABLE "clicktrail"."events"').content, revision)
    assert [name for name, _ in header][:2] == ["name", "type"] and ["ts", "DateTime64(3, 'UTC')"] in \
        [row[:2] for row in rows]
    header, rows = decode(grafana.post("/", content="SELECT DISTINCT channel FROM clicktrail.events WHERE channel"
                                                    " LIKE 'grafana_%' ORDER BY channel").content, revision)
    assert rows == [["grafana_0"], ["grafana_1"]]


def test_types_a_dashboard_may_return(grafana: httpx.Client) -> None:
    revision = handshake(grafana)[2]
    sql = ("SELECT number AS n, toDateTime(number, 'Asia/Shanghai') AS local, toDateTime64(number, 3) AS ms,"
           " toLowCardinality(toString(number % 3)) AS lc, if(number % 2, NULL, number) AS maybe,"
           " [number, 1] AS arr, map('k', number) AS m, toDecimal64(number, 2) AS money,"
           " toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0') AS id FROM numbers(70000)")  # more than one block
    header, rows = decode(grafana.post("/", content=sql).content, revision)
    assert dict(header)["local"] == "DateTime('Asia/Shanghai')"
    assert len(rows) == 70000 and rows[5][0] == 5 and rows[5][3] == "2" and rows[5][4] is None
    assert rows[5][5] == [5, 1] and rows[5][6] == {"k": 5} and str(rows[5][7]) == "5.00"
    assert rows[5][1].tzinfo is not None and rows[5][1].utcoffset().total_seconds() == 8 * 3600


def test_lz4_data_source(grafana: httpx.Client) -> None:
    """With LZ4 (or ZSTD) compression clickhouse-go sends compress=1 and reads the answer as blocks."""
    revision = handshake(grafana, compress="1")[2]
    response = grafana.post("/", content="SELECT number FROM numbers(3)", params={"compress": "1"})
    assert decode(read_blocks(response.content)[0], revision)[1] == [[0], [1], [2]]


def test_empty_answers_and_errors(grafana: httpx.Client) -> None:
    response = grafana.post("/", content="SELECT 1 WHERE 0")
    assert response.status_code == 200 and response.headers["Content-Length"] == "0"  # clickhouse-go: no rows
    response = grafana.post("/", content="SELECT * FROM nowhere")
    assert response.status_code == 404 and response.headers["X-ClickHouse-Exception-Code"] == "60"
    response = grafana.post("/", content="INSERT INTO clicktrail.events (site_id) VALUES ('x')")
    assert response.headers["X-ClickHouse-Exception-Code"] == "164"  # a read-only data source stays read-only
    response = grafana.post("/", content="SELECT 1", params={"client_protocol_version": "54460x"})
    assert response.status_code == 400 and response.headers["X-ClickHouse-Exception-Code"] == "6"


def test_a_format_clause_and_revision_zero_are_answered_as_chdb_writes_them(grafana: httpx.Client) -> None:
    plain = struct.pack("<BB", 1, 1) + b"\x011\x05UInt8\x01"  # 1 column, 1 row, "1" UInt8 = 1: no BlockInfo
    assert grafana.post("/", content="SELECT 1", params={"client_protocol_version": "0"}).content == plain
    assert grafana.post("/", content="SELECT 1 FORMAT Native").content == plain


def test_clickhouse_go_batch_insert(gateway: GatewayProcess, grafana: httpx.Client) -> None:
    """clickhouse-go's PrepareBatch over HTTP (conn_http_batch.go): DESCRIBE TABLE for the columns, then the
    rows as Native blocks of revision 0 in ClickHouse's LZ4 blocks (decompress=1), the INSERT in the URL."""
    admin = ("admin", "admin-pw")
    table = "default.go_batch"
    assert grafana.post("/", content=f"CREATE TABLE {table} (id UInt32, name String) ENGINE = MergeTree ORDER BY id",
                        auth=admin).status_code == 200
    revision = handshake(grafana)[2]
    rows = decode(grafana.post("/", content=f"DESCRIBE TABLE {table}", auth=admin).content, revision)[1]
    assert [row[:2] for row in rows] == [["id", "UInt32"], ["name", "String"]]
    # Native of revision 0 is what clickhouse-go encodes for HTTP, and what the engine writes without one.
    sql = "SELECT number::UInt32 AS id, 'go-' || toString(number) AS name FROM numbers(1000)"
    block = grafana.post("/", content=sql, params={"client_protocol_version": "0"}, auth=admin).content
    response = grafana.post("/", content=make_block(block) + make_block(block), auth=admin,
                            params={"query": f"INSERT INTO {table} (id, name) FORMAT Native", "decompress": "1",
                                    "compress": "1"}, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.content
    assert gateway.scalar(f"SELECT countIf(name LIKE 'go-%') FROM {table}") == 2000
