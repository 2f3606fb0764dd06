"""The durable spool: accepted events are on disk here before the gateway answers 2xx.

Events are appended as JSONEachRow lines to the open segment ``NNNNNNNNNNNN.open``. A segment is
sealed (renamed to ``.seg``) when it is old or large enough; the loader inserts sealed segments
into ClickHouse and only then deletes them. With ``fsync = "always"`` concurrent requests share one
fsync (group commit), so durability costs one disk flush per burst, not per event.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OPEN = ".open"
SEALED = ".seg"


class SpoolUnavailable(Exception):
    """Events cannot be made durable right now (spool full or the disk refused); the client should retry."""


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        fsync: str = "always",
        fsync_interval_ms: int = 200,
        segment_max_bytes: int = 32 << 20,
        segment_max_age_ms: int = 1000,
        max_bytes: int = 2 << 30,
        on_seal: Callable[[], None] = lambda: None,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.fsync_interval = fsync_interval_ms / 1000
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age = segment_max_age_ms / 1000
        self.max_bytes = max_bytes
        self.on_seal = on_seal
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._dirty = False
        self._bytes = 0
        self._seq = 0
        #: Set when the spool refused events, cleared once it frees room or writes again (for /readyz).
        self.refusing = False
        # Group commit: lines waiting for the next write+fsync, and the futures of their requests.
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._committer: asyncio.Task[None] | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-io")
        self._ticker: asyncio.Task[None] | None = None

    # -- start and stop ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Seal segments an earlier process left open, and count what is waiting to be loaded."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in sorted(self.directory.glob("*" + OPEN)):
            _drop_partial_line(leftover)
            leftover.rename(leftover.with_suffix(SEALED))
        segments = self.sealed()
        self._bytes = sum(p.stat().st_size for p in segments)
        self._seq = int(segments[-1].stem) + 1 if segments else 0
        self._fsync_dir()

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        """Stop the timer, write what is pending and seal the open segment for the loader."""
        if self._ticker:
            self._ticker.cancel()
        if self._committer is not None:
            await self._committer
        self._locked(self._seal)
        self._io.shutdown(wait=True)

    # -- the request path -------------------------------------------------------------------------

    async def append(self, lines: bytes) -> None:
        """Return once ``lines`` (complete JSONEachRow lines) are durable per the fsync policy.

        Requests that arrive while a write (and its fsync) is under way wait together for the next
        one, so a burst costs one write and at most one fsync, whatever the policy.
        """
        if self._bytes + len(lines) > self.max_bytes:
            self.refusing = True
            raise SpoolUnavailable(f"spool holds {self._bytes} bytes, its limit is {self.max_bytes}")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._pending.append(lines)
        self._waiters.append(waiter)
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._group_commit())
        await waiter

    async def _group_commit(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            data, waiters = b"".join(self._pending), self._waiters
            self._pending, self._waiters = [], []
            try:
                with self._lock:
                    self._write(data)
                if self.fsync == "always":
                    # The OS has the bytes once write() returns, which survives a crash of this
                    # process; only the fsync (in a thread, so the loop keeps serving) survives power loss.
                    await loop.run_in_executor(self._io, self._locked, self._sync)
            except SpoolUnavailable as exc:
                _settle(waiters, exc)
            else:
                _settle(waiters, None)

    def _locked(self, action: Callable[[], None]) -> None:
        """Run a segment operation under the lock, from whichever thread."""
        with self._lock:
            action()

    def _write(self, data: bytes) -> None:
        """Append whole lines or nothing: a failed write is cut back so no partial line remains."""
        if self._fd is None:
            self._open_segment()
        assert self._fd is not None
        start = self._size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._seal()
            self.refusing = True
            raise SpoolUnavailable(f"spool write failed: {exc.strerror}") from exc
        self.refusing = False
        self._size += len(data)
        self._bytes += len(data)
        self._dirty = True
        if self._size >= self.segment_max_bytes:
            self._seal()

    def _sync(self) -> None:
        if self._fd is not None and self._dirty and self.fsync != "off":
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise SpoolUnavailable(f"spool fsync failed: {exc.strerror}") from exc
        self._dirty = False

    # -- segments ---------------------------------------------------------------------------------

    def _open_segment(self) -> None:
        self._path = self.directory / f"{self._seq:012d}{OPEN}"
        self._seq += 1
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise SpoolUnavailable(f"cannot open a spool segment: {exc.strerror}") from exc
        self._size = 0
        self._opened_at = time.monotonic()
        self._fsync_dir()

    def _seal(self) -> None:
        """Make the open segment the loader's: flushed, closed and renamed to .seg."""
        if self._fd is None or self._path is None:
            return
        try:
            self._sync()
        finally:
            os.close(self._fd)
            self._fd = None
        if self._size:
            self._path.rename(self._path.with_suffix(SEALED))
        else:
            self._path.unlink()
        self._fsync_dir()
        self.on_seal()

    async def _tick(self) -> None:
        """Seal segments by age and, with ``fsync = "interval"``, flush on schedule."""
        loop = asyncio.get_running_loop()
        period = min(self.segment_max_age, self.fsync_interval) / 2
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            sync_due = self.fsync == "interval" and now - last_sync >= self.fsync_interval
            seal_due = self._fd is not None and now - self._opened_at >= self.segment_max_age
            if sync_due or seal_due:
                last_sync = now
                await loop.run_in_executor(self._io, self._locked, self._seal if seal_due else self._sync)

    def _fsync_dir(self) -> None:
        if self.fsync == "off":
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- the loader's side ------------------------------------------------------------------------

    def sealed(self) -> list[Path]:
        """Sealed segments, oldest first."""
        return sorted(self.directory.glob("*" + SEALED))

    def remove(self, segments: list[Path]) -> None:
        """Delete segments whose rows ClickHouse has committed."""
        for segment in segments:
            self._release(segment, segment.unlink)

    def remove_to(self, segment: Path, directory: Path) -> None:
        """Move a segment out of the loader's way, keeping its events on disk."""
        self._release(segment, lambda: segment.rename(directory / segment.name))

    def _release(self, segment: Path, how: Callable[[], object]) -> None:
        size = segment.stat().st_size
        how()
        with self._lock:
            self._bytes -= size
            self.refusing = False

    @property
    def depth_bytes(self) -> int:
        return self._bytes


def _settle(waiters: list[asyncio.Future[None]], error: SpoolUnavailable | None) -> None:
    """Answer the requests of one group commit; one whose client went away (cancelled) is skipped,
    so it cannot stop the others from being answered."""
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def _drop_partial_line(path: Path) -> None:
    """Cut a trailing line a crash left half-written: it was never acknowledged."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
