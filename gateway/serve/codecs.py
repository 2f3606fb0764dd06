"""The compression ClickHouse's HTTP interface speaks, both ways, with the libraries made for each codec.

Two layers, as in ClickHouse's HTTP handler, which unwraps a request body in this order and wraps a response
in the reverse one:

- HTTP compression: ``Content-Encoding`` of the request body (gzip, deflate, br, zstd, lz4 frames, xz, bz2),
  and the response compressed for ``Accept-Encoding`` when ``enable_http_compression=1``.
- ClickHouse's own compressed blocks (``decompress=1`` for the request body, ``compress=1`` for the response),
  as JDBC, DBeaver and Metabase send by default: each block is a CityHash128 checksum, a method byte (LZ4,
  ZSTD or none), the compressed and decompressed sizes, then the compressed data (src/Compression/
  CompressedReadBufferBase.cpp).

Every bound a decompression can grow to is the caller's ``limit``: a small body can inflate hugely.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import brotli
import lz4.block
import lz4.frame
from clickhouse_cityhash.cityhash import CityHash128

from gateway.warehouse.store import QueryError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

#: ClickHouse's http_zlib_compression_level default; it sets the level of every HTTP codec, not only zlib's.
DEFAULT_LEVEL = 3
#: ClickHouse's CompressedWriteBuffer writes a block per DBMS_DEFAULT_BUFFER_SIZE of data.
BLOCK_BYTES = 1 << 20

LZ4, ZSTD, NONE = 0x82, 0x90, 0x02
_HEADER = struct.Struct("<BII")  # method, compressed size (header included), decompressed size
_CHECKSUM = 16
# ClickHouse's DBMS_MAX_COMPRESSED_SIZE: a larger size field is corrupt data, not a block.
_MAX_BLOCK_BYTES = 1 << 30

CHECKSUM_DOESNT_MATCH, TOO_LARGE_SIZE_COMPRESSED, UNKNOWN_COMPRESSION_METHOD = 40, 39, 89
CANNOT_DECOMPRESS, NOT_IMPLEMENTED, QUERY_IS_TOO_LARGE = 271, 48, 229


class _Decompressor(Protocol):
    """What zlib, lzma, bz2, zstd and lz4.frame decompressors have in common: bounded output, and where a
    stream (gzip member, zstd or lz4 frame) ends, so concatenated streams decode as one body."""

    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _Brotli:
    """brotli's decompressor behind the same interface; a brotli stream has no concatenation."""

    unused_data = b""

    def __init__(self) -> None:
        self._decompressor = brotli.Decompressor()

    @property
    def eof(self) -> bool:
        return bool(self._decompressor.is_finished())

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return bytes(self._decompressor.process(data, output_buffer_limit=max_length))


# ClickHouse's names for each method (chooseCompressionMethod), and how to open a stream of it.
_DECOMPRESSORS: dict[str, Callable[[], _Decompressor]] = {
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "deflate": zlib.decompressobj,  # HTTP's deflate is zlib-wrapped, as ClickHouse reads and writes it
    "br": _Brotli,
    "zstd": zstd.ZstdDecompressor,
    "lz4": lz4.frame.LZ4FrameDecompressor,
    "xz": lzma.LZMADecompressor,
    "bz2": bz2.BZ2Decompressor,
}
_ALIASES = {"gz": "gzip", "brotli": "br", "zst": "zstd", "LZMA": "xz"}
_DECOMPRESSION_ERRORS = (zlib.error, lzma.LZMAError, OSError, zstd.ZstdError, RuntimeError, brotli.error)



class _Encoder(Protocol):
    """A streaming compressor as zlib's, lzma's, bz2's and zstd's are: each piece compressed as it comes (what the
    codec holds back comes later), then flush() ends the stream."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _BrotliEncoder:
    def __init__(self, level: int) -> None:
        self._compressor = brotli.Compressor(quality=level)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._compressor.process(data))

    def flush(self) -> bytes:
        return bytes(self._compressor.finish())


class _Lz4Encoder:
    """lz4's frame compressor, which writes the frame's header at begin()."""

    def __init__(self, level: int) -> None:
        self._compressor = lz4.frame.LZ4FrameCompressor(compression_level=level)
        self._head = self._compressor.begin()

    def compress(self, data: bytes) -> bytes:
        head, self._head = self._head, b""
        return head + (self._compressor.compress(data) if data else b"")

    def flush(self) -> bytes:
        head, self._head = self._head, b""
        return head + self._compressor.flush()


class _Blocks:
    """ClickHouse's compressed blocks (``compress=1``) of a stream, a block per BLOCK_BYTES as its
    CompressedWriteBuffer writes them, in LZ4, its default codec."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def compress(self, data: bytes) -> bytes:
        self._pending += data
        out = bytearray()
        while len(self._pending) >= BLOCK_BYTES:
            out += _block(self._pending[:BLOCK_BYTES])
            del self._pending[:BLOCK_BYTES]
        return bytes(out)

    def flush(self) -> bytes:
        out = _block(self._pending) if self._pending else b""
        self._pending.clear()
        return out


# The HTTP encodings of answers, each opened at http_zlib_compression_level.
_ENCODERS: dict[str, Callable[[int], _Encoder]] = {
    "zstd": zstd.ZstdCompressor,
    "br": _BrotliEncoder,
    "lz4": _Lz4Encoder,
    "gzip": lambda level: zlib.compressobj(level, zlib.DEFLATED, 31),
    "deflate": zlib.compressobj,  # zlib-wrapped, as ClickHouse writes it
    "xz": lambda level: lzma.LZMACompressor(preset=level),
    "bz2": bz2.BZ2Compressor,
}
# ClickHouse's chooseHTTPCompressionMethod: the first of these named anywhere in Accept-Encoding wins, in
# this order, whatever order or q-values the client gave (snappy, which ClickHouse ranks after lz4, is not
# served here).
_PREFERENCE = ("zstd", "br", "lz4", "gzip", "deflate", "xz", "bz2")


@dataclass(frozen=True)
class Packing:
    """How one request's body is packed and how its answer is to be."""

    content_encoding: str = ""  # the body's Content-Encoding
    blocks_in: bool = False  # decompress=1: the body is ClickHouse's compressed blocks
    verify: bool = True  # their checksums are checked (http_native_compression_disable_checksumming_on_decompress)
    blocks_out: bool = False  # compress=1: the answer is ClickHouse's compressed blocks
    response_encoding: str | None = None  # the answer's Content-Encoding (enable_http_compression=1)
    level: int = DEFAULT_LEVEL

    def unpack(self, body: bytes, limit: int) -> bytes:
        """The request body without its HTTP encoding, then without ClickHouse's blocks, in the order
        ClickHouse's handler reads them."""
        body = decode_content(body, self.content_encoding, limit)
        return decompress_blocks(body, limit, self.verify) if self.blocks_in else body

    def pack(self, data: bytes) -> bytes:
        """The answer in ClickHouse's blocks, then in its HTTP encoding, as asked."""
        packer = self.stream()
        return packer.write(data) + packer.finish()

    def stream(self) -> Packer:
        """A packer for an answer that comes in pieces."""
        stages: list[_Encoder] = []
        if self.blocks_out:
            stages.append(_Blocks())
        if self.response_encoding:
            stages.append(_ENCODERS[self.response_encoding](self.level))
        return Packer(stages)


class Packer:
    """Packs an answer piece by piece, as Packing says: ClickHouse's blocks, then the HTTP encoding. What the
    codecs hold back comes with later pieces; finish() ends their streams."""

    def __init__(self, stages: list[_Encoder]) -> None:
        self._stages = stages

    def write(self, data: bytes) -> bytes:
        for stage in self._stages:
            data = stage.compress(data)
        return data

    def finish(self) -> bytes:
        data = b""
        for stage in self._stages:
            data = stage.compress(data) + stage.flush()
        return data


def decode_content(body: bytes, encoding: str, limit: int) -> bytes:
    """The request body without its HTTP ``Content-Encoding``; concatenated streams decode as one."""
    method = encoding.strip()
    method = _ALIASES.get(method, method.lower())
    if method in ("", "identity", "none", "auto"):
        return body
    opener = _DECOMPRESSORS.get(method)
    if opener is None:
        raise QueryError(NOT_IMPLEMENTED, f"Unknown compression method '{encoding.strip()}'. Only 'gzip', 'deflate',"
                                          " 'br', 'xz', 'zstd', 'lz4', 'bz2' are supported as Content-Encoding"
                                          " here. (NOT_IMPLEMENTED)")
    out = bytearray()
    data = body
    while data:
        decompressor = opener()
        try:
            out += decompressor.decompress(data, limit + 1 - len(out))
        except _DECOMPRESSION_ERRORS as exc:
            raise QueryError(CANNOT_DECOMPRESS, f"Cannot decompress the {method} request body: {exc}."
                                                " (CANNOT_DECOMPRESS)") from None
        if len(out) > limit:
            raise too_large(limit)
        if not decompressor.eof:  # all input taken, below the limit, and the stream still open
            raise QueryError(CANNOT_DECOMPRESS, f"The {method} request body is truncated. (CANNOT_DECOMPRESS)")
        data = decompressor.unused_data
    return bytes(out)


def choose_encoding(accept_encoding: str) -> str | None:
    """The Content-Encoding ClickHouse picks for a response from the client's Accept-Encoding (None: none)."""
    return next((method for method in _PREFERENCE if method in accept_encoding), None)


def _block(data: bytes | bytearray) -> bytes:
    """One of ClickHouse's compressed blocks: checksum, then header and LZ4 payload."""
    payload = lz4.block.compress(bytes(data), store_size=False)
    block = _HEADER.pack(LZ4, _HEADER.size + len(payload), len(data)) + payload
    return checksum(block) + block


def decompress_blocks(data: bytes, limit: int, verify: bool = True) -> bytes:
    """The data of ClickHouse's compressed blocks (``decompress=1``), each checked against its checksum
    unless ``verify`` is off (http_native_compression_disable_checksumming_on_decompress)."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        start = pos + _CHECKSUM
        if start + _HEADER.size > len(data):
            raise QueryError(CANNOT_DECOMPRESS, f"The compressed block at byte {pos} of the request body is"
                                                " truncated. (CANNOT_DECOMPRESS)")
        method, size, decompressed_size = _HEADER.unpack_from(data, start)
        if size > _MAX_BLOCK_BYTES or decompressed_size > _MAX_BLOCK_BYTES:
            raise QueryError(TOO_LARGE_SIZE_COMPRESSED, f"Too large size of the compressed block at byte {pos}"
                                                        f" ({size} compressed, {decompressed_size} decompressed):"
                                                        " most likely corrupted data. (TOO_LARGE_SIZE_COMPRESSED)")
        if size < _HEADER.size or start + size > len(data):
            raise QueryError(CANNOT_DECOMPRESS, f"The compressed block at byte {pos} of the request body is"
                                                " truncated or its size is corrupt. (CANNOT_DECOMPRESS)")
        block = data[start:start + size]
        if verify and checksum(block) != data[pos:start]:
            raise QueryError(CHECKSUM_DOESNT_MATCH, f"Checksum doesn't match in the compressed block at byte {pos}"
                                                    " of the request body: corrupted data."
                                                    " (CHECKSUM_DOESNT_MATCH)")
        if len(out) + decompressed_size > limit:
            raise too_large(limit)
        out += _decompress_block(method, block[_HEADER.size:], decompressed_size, pos)
        pos = start + size
    return bytes(out)


def _decompress_block(method: int, payload: bytes, size: int, pos: int) -> bytes:
    try:
        if method == LZ4:
            data = lz4.block.decompress(payload, uncompressed_size=size)
        elif method == ZSTD:  # bounded: a crafted frame could inflate far past the size its header declares
            data = zstd.ZstdDecompressor().decompress(payload, size + 1)
        elif method == NONE:
            data = payload
        else:
            raise QueryError(UNKNOWN_COMPRESSION_METHOD, f"Unknown compression method 0x{method:02x} in the"
                                                         f" compressed block at byte {pos} of the request body:"
                                                         " LZ4 (0x82), ZSTD (0x90) and none (0x02) are read"
                                                         " here. (UNKNOWN_COMPRESSION_METHOD)")
    except (lz4.block.LZ4BlockError, zstd.ZstdError) as exc:
        raise QueryError(CANNOT_DECOMPRESS, f"Cannot decompress the compressed block at byte {pos} of the"
                                            f" request body: {exc}. (CANNOT_DECOMPRESS)") from None
    if len(data) != size:
        raise QueryError(CANNOT_DECOMPRESS, f"The compressed block at byte {pos} of the request body holds"
                                            f" {len(data)} bytes where its header says {size}."
                                            " (CANNOT_DECOMPRESS)")
    return data


def checksum(block: bytes) -> bytes:
    """ClickHouse's checksum of a compressed block (header and data): CityHash128 v1.0.2, its two 64-bit
    halves written high then low, each little-endian, as ClickHouse's UInt128 pair is."""
    value = CityHash128(block)
    return struct.pack("<QQ", value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF)


def too_large(limit: int) -> QueryError:
    return QueryError(QUERY_IS_TOO_LARGE, f"The request body is larger than {limit} bytes. (QUERY_IS_TOO_LARGE)")
