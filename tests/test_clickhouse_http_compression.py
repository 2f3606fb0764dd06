"""Compression both ways through the gateway's ClickHouse port, against a real gateway process: HTTP
Content-Encoding / Accept-Encoding as clickhouse-connect and curl send them, and ClickHouse's own compressed
blocks (compress=1, decompress=1) in the request sequence JDBC drivers (DBeaver, Metabase) send.

The blocks are built and read by tests/clickhouse_blocks.py from ClickHouse's documented format with the
reference libraries (lz4, zstd, clickhouse-cityhash), and that reader is first checked here against blocks
ClickHouse itself wrote: the column files of a table of the gateway's engine."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator

import brotli
import clickhouse_connect
import httpx
import lz4.frame
import pytest

from tests.clickhouse_blocks import LZ4, NONE, ZSTD, checksum, make_block, read_blocks, zstd
from tests.conftest import GatewayProcess

ADMIN = ("admin", "admin-pw")
ANALYST = ("analyst", "analyst-pw")


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.clickhouse_port}", timeout=30) as client:
        yield client


def test_the_block_reader_reads_what_clickhouse_itself_wrote(gateway: GatewayProcess, http: httpx.Client) -> None:
    """Column files of MergeTree parts are ClickHouse's compressed blocks: the gateway's own tables have some,
    LZ4 by default and ZSTD where a column's codec says so."""
    table = f"default.c_{uuid.uuid4().hex[:8]}"
    for sql in (f"CREATE TABLE {table} (a UInt64, b String CODEC(ZSTD(1))) ENGINE = MergeTree ORDER BY a"
                " SETTINGS min_bytes_for_wide_part = 0",
                f"INSERT INTO {table} SELECT number, toString(number) FROM numbers(10000)"):
        assert http.post("/", content=sql.encode(), auth=ADMIN).status_code == 200
    path = http.post("/", content=f"SELECT path FROM system.parts WHERE database || '.' || table = '{table}'".encode(),
                     auth=ADMIN).text.strip()
    part = gateway.directory / "data" / "clickhouse" / path  # relative to the engine's data directory
    a, a_methods = read_blocks((part / "a.bin").read_bytes())
    assert a == b"".join(struct.pack("<Q", n) for n in range(10000)) and set(a_methods) == {LZ4}
    b, b_methods = read_blocks((part / "b.bin").read_bytes())
    assert b.startswith(b"0123456789101112") and set(b_methods) == {ZSTD}  # the characters; sizes apart


# -- HTTP compression: clickhouse-connect ------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", "br", False])
def test_clickhouse_connect_queries_and_inserts_with_each_compression(gateway: GatewayProcess,
                                                                     compress: bool | str) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=gateway.clickhouse_port, username=ADMIN[0],
                                           password=ADMIN[1], compress=compress)
    # The client asks for compressed answers only where the server lets it set enable_http_compression.
    assert bool(client.compression) == bool(compress)
    table = f"default.cc_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE TABLE {table} (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    rows = [[i, f"渠道码-{i % 7}"] for i in range(20000)]
    assert client.insert(table, rows, column_names=["id", "name"]).written_rows == 20000
    result = client.query(f"SELECT id, name FROM {table} ORDER BY id")
    assert [list(row) for row in result.result_rows] == rows
    assert client.query_df(f"SELECT count() AS n FROM {table}")["n"].tolist() == [20000]
    client.close()


# -- HTTP compression: each codec, with its own library ----------------------------------------------------

CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "gzip": (gzip.compress, gzip.decompress),
    "deflate": (zlib.compress, zlib.decompress),
    "br": (brotli.compress, brotli.decompress),
    "zstd": (zstd.compress, zstd.decompress),
    "lz4": (lz4.frame.compress, lz4.frame.decompress),
    "xz": (lzma.compress, lzma.decompress),
    "bz2": (bz2.compress, bz2.decompress),
}


@pytest.mark.parametrize("codec", CODECS)
def test_each_content_encoding_both_ways(http: httpx.Client, codec: str) -> None:
    compress, decompress = CODECS[codec]
    sql = b"SELECT number, toString(number) FROM numbers(5000) FORMAT TSV"
    with http.stream("POST", "/", content=compress(sql), auth=ANALYST, params={"enable_http_compression": "1"},
                     headers={"Content-Encoding": codec, "Accept-Encoding": codec}) as response:
        raw = b"".join(response.iter_raw())  # as sent, not as httpx would decode it
    assert response.status_code == 200, raw
    assert response.headers["Content-Encoding"] == codec
    assert decompress(raw).splitlines()[4999] == b"4999\t4999"


def test_the_response_encoding_is_chosen_as_clickhouse_chooses_it(http: httpx.Client) -> None:
    def chosen(accept: str, enabled: str = "1") -> str | None:
        response = http.post("/", content=b"SELECT 1", auth=ANALYST, params={"enable_http_compression": enabled},
                             headers={"Accept-Encoding": accept})
        return response.headers.get("Content-Encoding")

    # ClickHouse's own order of preference, whatever the client's order or weights.
    assert chosen("gzip, deflate, br, zstd") == "zstd"
    assert chosen("gzip;q=1.0, br;q=0.1") == "br"
    assert chosen("deflate, lz4") == "lz4"
    assert chosen("identity") is None
    assert chosen("gzip", enabled="0") is None


def test_compressed_bodies_are_bounded(http: httpx.Client) -> None:
    bomb = gzip.compress(b"SELECT 1 -- " + b"0" * (65 * 1024 * 1024), compresslevel=9)
    response = http.post("/", content=bomb, auth=ANALYST, headers={"Content-Encoding": "gzip"})
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (413, "229")
    blocks = b"".join(make_block(b"0" * (1 << 20)) for _ in range(65))
    response = http.post("/", params={"decompress": "1"}, content=blocks, auth=ANALYST)
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (413, "229")


@pytest.mark.parametrize("body, code", [
    (b"not zstd at all", "271"),
    (zstd.compress(b"SELECT 1")[:-3], "271"),
])
def test_bad_compressed_bodies_are_the_client_s_error(http: httpx.Client, body: bytes, code: str) -> None:
    response = http.post("/", content=body, auth=ANALYST, headers={"Content-Encoding": "zstd"})
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (400, code)
    assert "(CANNOT_DECOMPRESS)" in response.text


# -- ClickHouse's blocks: the JDBC request sequence -----------------------------------------------------


def test_jdbc_sequence_with_compress_and_decompress(http: httpx.Client) -> None:
    table = f"default.jdbc_{uuid.uuid4().hex[:8]}"
    # What the drivers ask first, answered in LZ4 blocks (compress=1 is their default).
    response = http.post("/", params={"compress": "1", "database": "default", "query_id": "jdbc-1"},
                         content=b"SELECT currentUser(), timezone(), version() FORMAT TabSeparatedWithNamesAndTypes",
                         auth=ADMIN)
    assert response.status_code == 200, response.text
    text, methods = read_blocks(response.content)
    assert text.startswith(b"currentUser()\ttimezone()\tversion()\nString\tString\tString\n")
    assert set(methods) == {LZ4} and "Content-Encoding" not in response.headers

    http.post("/", params={"compress": "1"}, auth=ADMIN,
              content=f"CREATE TABLE {table} (id UInt32, name String) ENGINE = MergeTree ORDER BY id".encode())
    # A batch insert: RowBinary rows in blocks, LZ4, ZSTD and uncompressed ones in one body, the statement in
    # the URL.
    rows = [struct.pack("<I", i) + bytes([len(f"n{i}")]) + f"n{i}".encode() for i in range(3000)]
    body = make_block(b"".join(rows[:1000])) + make_block(b"".join(rows[1000:2000]), ZSTD) + \
        make_block(b"".join(rows[2000:]), NONE)
    response = http.post("/", params={"compress": "1", "decompress": "1",
                                      "query": f"INSERT INTO {table} (id, name) FORMAT RowBinary"},
                         content=body, auth=ADMIN)
    assert response.status_code == 200, response.text
    assert response.content == b""  # nothing to compress
    # A large answer spans blocks of at most 1 MiB of data each, as ClickHouse writes them.
    response = http.post("/", params={"compress": "1"}, auth=ADMIN,
                         content=f"SELECT id, name, repeat('x', 1000) FROM {table} ORDER BY id FORMAT TSV".encode())
    data, methods = read_blocks(response.content)
    lines = data.splitlines()
    assert len(lines) == 3000 and lines[2999].startswith(b"2999\tn2999\t") and len(methods) == 3

    # The same through HTTP compression as well: blocks inside the Content-Encoding.
    response = http.post("/", params={"compress": "1", "enable_http_compression": "1"},
                         headers={"Accept-Encoding": "gzip"}, auth=ADMIN,
                         content=f"SELECT count() FROM {table}".encode())
    assert response.headers["Content-Encoding"] == "gzip" and read_blocks(response.content)[0] == b"3000\n"

    # The query's own errors come back as its data would: in blocks.
    response = http.post("/", params={"compress": "1"}, content=b"SELECT * FROM nowhere", auth=ADMIN)
    assert response.status_code == 404 and response.headers["X-ClickHouse-Exception-Code"] == "60"
    assert read_blocks(response.content)[0].startswith(b"Code: 60. DB::Exception: ")


def test_corrupt_blocks_get_clickhouse_s_errors(http: httpx.Client) -> None:
    block = bytearray(make_block(b"SELECT 42"))
    block[-1] ^= 0xFF  # inside the compressed data, after the checksum was taken

    def send(body: bytes, **params: str) -> httpx.Response:
        return http.post("/", params={"decompress": "1", **params}, content=body, auth=ANALYST)

    response = send(bytes(block))
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (400, "40")
    assert "(CHECKSUM_DOESNT_MATCH)" in response.text
    plain = bytearray(make_block(b"SELECT 41", NONE))
    plain[-1] = ord("2")  # uncompressed data altered: only the checksum can tell
    response = send(bytes(plain), http_native_compression_disable_checksumming_on_decompress="1")
    assert response.text == "42\n"

    unknown = bytearray(make_block(b"SELECT 1", NONE))
    unknown[16] = 0x91
    unknown[:16] = checksum(bytes(unknown[16:]))
    response = send(bytes(unknown))
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (400, "89")
    response = send(make_block(b"SELECT 1")[:-2])
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (400, "271")
    huge = bytearray(make_block(b"SELECT 1", NONE))
    huge[17:21] = struct.pack("<I", 0x7FFFFFFF)
    response = send(bytes(huge))
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (400, "39")
