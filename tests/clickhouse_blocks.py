"""ClickHouse's compressed blocks, built and read from the documented format with the reference libraries, for
the tests that speak compress=1 / decompress=1 as JDBC drivers and clickhouse-go do.

A block: checksum (16 bytes: CityHash128 v1.0.2 of the rest, its high half then its low half, each
little-endian), method (1 byte: 0x82 LZ4, 0x90 ZSTD, 0x02 none), compressed size including these 9 header
bytes (UInt32 LE), decompressed size (UInt32 LE), then the data."""

from __future__ import annotations

import struct
import sys

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = ["LZ4", "NONE", "ZSTD", "checksum", "make_block", "read_blocks", "zstd"]

LZ4, ZSTD, NONE = 0x82, 0x90, 0x02


def checksum(block: bytes) -> bytes:
    value = CityHash128(block)
    return struct.pack("<QQ", value >> 64, value & (2**64 - 1))


def make_block(data: bytes, method: int = LZ4) -> bytes:
    payload = {LZ4: lambda: lz4.block.compress(data, store_size=False), ZSTD: lambda: zstd.compress(data),
               NONE: lambda: data}[method]()
    block = struct.pack("<BII", method, 9 + len(payload), len(data)) + payload
    return checksum(block) + block


def read_blocks(body: bytes) -> tuple[bytes, list[int]]:
    """The data of the blocks and each one's method; every checksum is checked."""
    out, methods, pos = bytearray(), [], 0
    while pos < len(body):
        method, size, decompressed = struct.unpack_from("<BII", body, pos + 16)
        block = body[pos + 16:pos + 16 + size]
        assert checksum(block) == body[pos:pos + 16], f"bad checksum at {pos}"
        payload = block[9:]
        if method == LZ4:
            out += lz4.block.decompress(payload, uncompressed_size=decompressed)
        elif method == ZSTD:
            out += zstd.decompress(payload)
        else:
            assert method == NONE, f"method 0x{method:02x}"
            out += payload
        methods.append(method)
        pos += 16 + size
    return bytes(out), methods
