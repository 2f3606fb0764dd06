"""Answers of the ClickHouse HTTP interface sent as the engine produces them, as ClickHouse's HTTP handler sends
them (src/Server/HTTPHandler.cpp, src/Server/HTTP/WriteBufferFromHTTPServerResponse.cpp), so a result of any
size costs the gateway a few of its pieces in memory, not the whole result:

- The first ``buffer_size`` bytes (the URL parameter, or the setting http_response_buffer_size; 1 MiB by
  default) are held before anything is sent: a result that fits, or an error within them, is answered whole,
  with Content-Length, its full X-ClickHouse-Summary and, for an error, its status and X-ClickHouse-Exception-Code.
- Beyond that the headers go, with X-ClickHouse-Summary (and X-ClickHouse-Progress if asked) counting what the
  query had done by then, as ClickHouse's do, and X-ClickHouse-Exception-Tag; then the rest, piece by piece,
  packed as asked (ClickHouse's compressed blocks and/or the HTTP encoding, streamed: codecs.Packer).
- ``wait_end_of_query=1`` (or the setting http_wait_end_of_query) holds the whole answer, beyond buffer_size in a
  temporary file, and sends it once the query has ended, with its full summary.
- An error after the headers went: the status (200) is sent already, so the exception goes into the body as
  ClickHouse 25.11 and later write it, ``\\r\\n__exception__\\r\\n<tag>\\r\\n<message>\\n<length> <tag>``
  ``\\r\\n__exception__\\r\\n``, <tag> being the response's X-ClickHouse-Exception-Tag (clickhouse-connect and
  the Node client look for it), and the response is broken off without its last chunk, so no client can take
  the truncated body for a whole one. Where ClickHouse leaves an HTTP compression stream unfinished, it is
  finished here, so the client can read the exception.

A client that goes away cancels its query (runs): while the answer is prepared, by the
``http.disconnect`` a watcher waits for; while it streams, by Starlette's own, which stops the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import string
import tempfile
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import IO

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from gateway.serve.codecs import Packer, Packing
from gateway.serve.runs import Run
from gateway.warehouse.store import Progress, QueryError, StoreUnavailable

#: ClickHouse's DBMS_DEFAULT_BUFFER_SIZE, its default buffer_size for HTTP answers.
DEFAULT_BUFFER_BYTES = 1 << 20
#: The body of a held (wait_end_of_query) answer is read back and sent in pieces of this size.
SEND_BYTES = 1 << 20
#: ClickHouse's MAX_EXCEPTION_SIZE: the exception block, markers and all, is cut to this.
MAX_EXCEPTION_BYTES = 16 * 1024
TAG_LENGTH = 16
_MARKER = b"__exception__"
# What the block adds to the message: \r\n, marker, \r\n, tag, \r\n, up to 8 digits of length, a space, tag, \r\n,
# marker, \r\n.
_BLOCK_OVERHEAD = 2 + len(_MARKER) + 2 + TAG_LENGTH + 2 + 8 + 1 + TAG_LENGTH + 2 + len(_MARKER) + 2
# uvicorn's words for a response that ended without its last chunk, which a broken answer is on purpose.
_INCOMPLETE = "ASGI callable returned without completing response."


class Pieces:
    """A statement's answer as the engine produces it, and what its request holds until the answer ends (its
    connection): ``release()`` runs once the pieces end or fail, or close() is called, started or not."""

    def __init__(self, pieces: Generator[bytes, None, None], release: Callable[[], None]) -> None:
        self._pieces, self._release = pieces, release
        self.open = True

    def __iter__(self) -> Pieces:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._pieces)
        except BaseException:  # the end (StopIteration) or a failure: the statement is over either way
            self.close()
            raise

    def close(self) -> None:
        """Cancel the statement if it still runs, and release what it holds; idempotent."""
        if self.open:
            self.open = False
            try:
                self._pieces.close()
            finally:
                self._release()


# The engine formats each block of a streamed answer on its own. These formats' answers are their blocks' answers
# one after the other, so they are sent as produced (Pretty's too: ClickHouse draws a table per block as well);
# the ...WithNames formats are once the repeated header lines are dropped. Any other format (JSON, XML, Values,
# Parquet, ...) is one document with a head and a tail, or numbers its rows: its answer is made whole.
_JOINABLE = frozenset(name.lower() for name in (
    "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV", "TSKV", "LineAsString", "RawBLOB", "Null",
    "JSONEachRow", "JSONLines", "NDJSON", "JSONStringsEachRow", "JSONCompactEachRow", "JSONCompactStringsEachRow",
    "JSONEachRowWithProgress", "JSONStringsEachRowWithProgress", "RowBinary", "Native", "MsgPack",
    "Pretty", "PrettyCompact", "PrettyCompactMonoBlock", "PrettySpace", "PrettyNoEscapes", "PrettyCompactNoEscapes",
    "PrettySpaceNoEscapes",
))
_HEADED = {"withnames": 1, "withnamesandtypes": 2}
_HEADED_BASES = frozenset(name.lower() for name in (
    "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV", "JSONCompactEachRow", "JSONCompactStringsEachRow"))


def header_lines(fmt: str) -> int | None:
    """How many header lines each block's answer in ``fmt`` repeats (0: none), or None when ``fmt``'s answer
    cannot be sent block by block."""
    name = fmt.lower()
    if name in _JOINABLE:
        return 0
    for suffix, lines in _HEADED.items():
        if name.endswith(suffix) and name.removesuffix(suffix) in _HEADED_BASES:
            return lines
    return None


def joined(pieces: Generator[bytes, None, None], headers: int) -> Generator[bytes, None, None]:
    """``pieces`` with the ``headers`` lines every block repeats kept in the first only."""
    seen = False  # whether a block's answer (its header with it) has gone
    for piece in pieces:
        if headers and seen:
            piece = piece.split(b"\n", headers)[-1] if piece.count(b"\n") >= headers else b""
        seen = seen or bool(piece)
        yield piece


@dataclass(frozen=True)
class Answer:
    """A statement's answer, before packing: whole (``data``) or as the engine produces it (``pieces``)."""

    fmt: str
    progress: Callable[[], Progress]  # the counts so far (final once the answer is whole or its pieces ended)
    data: bytes = b""
    pieces: Pieces | None = None


@contextlib.asynccontextmanager
async def cancelled_on_disconnect(request: Request, run: Run) -> AsyncIterator[None]:
    """Cancel ``run`` if the client goes away within the block (its body must have been read whole)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        run.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def respond(run: Run, answer: Answer, packing: Packing, headers: Callable[[Progress], dict[str, str]], *,
                  buffer_size: int, wait_end: bool, error_text: Callable[[QueryError], str]) -> Response:
    """The response for ``answer``, packed as ``packing`` says, with ``headers(progress)``; raises what the query
    raises before the response starts. A streamed response finishes ``run`` when it ends; the caller finishes it
    for any other."""
    if answer.pieces is None:
        return Response(await run.call(packing.pack, answer.data), headers=headers(answer.progress()))
    pieces = answer.pieces
    run.on_cancel = pieces.close
    packer = packing.stream()
    try:
        if wait_end:
            held = tempfile.SpooledTemporaryFile(max_size=buffer_size)  # noqa: SIM115 - the response closes it
            try:
                size = await run.call(_hold, pieces, packer, held)
            except BaseException:
                held.close()
                raise
            return _Held(run, held, size, headers(answer.progress()))
        head, ended = await run.call(_take, pieces, packer, buffer_size)
    except BaseException:
        if pieces.open:  # not started (the request was cancelled first), or the task awaiting it was
            run.later(pieces.close)
        raise
    if ended:
        return Response(head, headers=headers(answer.progress()))
    return _Stream(run, pieces, packer, head, headers(answer.progress()), error_text)


def _take(pieces: Pieces, packer: Packer, limit: int) -> tuple[bytes, bool]:
    """The pieces, packed, until ``limit`` bytes of them (unpacked) are taken, at least one; and whether they
    ended (the packing finished then)."""
    out = bytearray()
    taken = 0
    for piece in pieces:
        out += packer.write(piece)
        taken += len(piece)
        if taken >= limit:
            return bytes(out), False
    return bytes(out + packer.finish()), True


def _hold(pieces: Pieces, packer: Packer, held: IO[bytes]) -> int:
    """All the pieces, packed, into ``held``; returns their size and rewinds it."""
    for piece in pieces:
        held.write(packer.write(piece))
    held.write(packer.finish())
    size = held.tell()
    held.seek(0)
    return size


class _Held(StreamingResponse):
    """A wait_end_of_query answer: its whole packed body, from its temporary file, with Content-Length."""

    def __init__(self, run: Run, held: IO[bytes], size: int, headers: dict[str, str]) -> None:
        self.run, self.held = run, held
        super().__init__(self._body(), headers={**headers, "Content-Length": str(size)})

    async def _body(self) -> AsyncIterator[bytes]:
        read = False
        try:
            while piece := await self.run.call(self.held.read, SEND_BYTES):
                yield piece
            read = True
        finally:
            if read:
                self.held.close()
            else:  # the client went away, maybe while its thread reads the file
                self.run.later(self.held.close)
            self.run.finish()


class _Stream(StreamingResponse):
    """An answer sent as its pieces come: the head taken so far, then the rest; an error on the way ends it
    with the exception block and breaks the response off."""

    def __init__(self, run: Run, pieces: Pieces, packer: Packer, head: bytes, headers: dict[str, str],
                 error_text: Callable[[QueryError], str]) -> None:
        self.run, self.pieces, self.packer, self.head, self.error_text = run, pieces, packer, head, error_text
        self.tag = "".join(secrets.choice(string.ascii_lowercase) for _ in range(TAG_LENGTH))
        self.broken = False
        super().__init__(self._body(), headers={**headers, "X-ClickHouse-Exception-Tag": self.tag})
        _broken_answer.set(self)

    async def _body(self) -> AsyncIterator[bytes]:
        ended = False
        try:
            yield self.head
            while True:
                piece, ended = await self.run.call(_take, self.pieces, self.packer, 1)
                if piece:
                    yield piece
                if ended:
                    return
        except (QueryError, StoreUnavailable) as exc:
            ended = True  # the query is over, failed
            error = exc if isinstance(exc, QueryError) else QueryError(1002, f"ClickHouse is not available ({exc})")
            yield self.packer.write(self._exception(self.error_text(error))) + self.packer.finish()
            self.broken = True
        finally:
            if not ended:  # the client went away (Starlette cancels the body), or a send failed
                self.run.cancel()
            if self.pieces.open:
                self.run.later(self.pieces.close)
            self.run.finish()

    def _exception(self, text: str) -> bytes:
        """ClickHouse's exception block (WriteBufferFromHTTP1ServerResponse::cancelWithException)."""
        tag = self.tag.encode()
        message = text.encode()[:MAX_EXCEPTION_BYTES - _BLOCK_OVERHEAD]
        if not message.endswith(b"\n"):
            message += b"\n"
        return (b"\r\n" + _MARKER + b"\r\n" + tag + b"\r\n" + message + str(len(message)).encode() + b" " + tag
                + b"\r\n" + _MARKER + b"\r\n")

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not self.broken:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


# The answer being sent on this task, if it is one that may break off: uvicorn logs the break as an error in the
# request's task, after the app returned (its stream ran in a task of Starlette's, a copy of this context).
_broken_answer: contextvars.ContextVar[_Stream | None] = contextvars.ContextVar("broken_answer", default=None)


class _QuietBreaks(logging.Filter):
    """Drops uvicorn's error for a response broken off on purpose (a query's failure is no server error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        answer = _broken_answer.get()
        return not (answer is not None and answer.broken and record.getMessage() == _INCOMPLETE)


logging.getLogger("uvicorn.error").addFilter(_QuietBreaks())


def buffer_settings(params: Mapping[str, str]) -> tuple[int, bool]:
    """What to hold before sending (bytes; ClickHouse holds at least DEFAULT_BUFFER_BYTES) and whether to hold
    it all, from a request's buffer_size and wait_end_of_query, or the settings of those names
    (http_response_buffer_size, http_wait_end_of_query), which the engine checks as it checks any setting."""
    size = params.get("buffer_size") or params.get("http_response_buffer_size") or "0"
    wait = params.get("wait_end_of_query") or params.get("http_wait_end_of_query") or "0"
    if not (size.isascii() and size.isdigit() and len(size) <= 19):
        raise QueryError(6, f"Cannot parse buffer_size '{size}': it must be an unsigned integer. (CANNOT_PARSE_TEXT)")
    return max(int(size), DEFAULT_BUFFER_BYTES), wait.lower() in ("1", "true", "yes", "on")
