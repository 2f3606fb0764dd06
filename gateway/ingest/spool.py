"""The durable spool: accepted events are on disk here before the gateway answers 2xx.

Events are appended as JSONEachRow lines to the open segment ``NNNNNNNNNNNN.open``. A segment is
sealed (renamed to ``.seg``) when it is old or large enough; the loader inserts sealed segments
into ClickHouse and only then deletes them. With ``fsync = "always"`` concurrent requests share one
fsync (group commit), so durability costs one disk flush per burst, not per event.

One task, the committer, does every segment operation in order (write, fsync, seal); the timer
only asks it to. So no two operations race, the event loop never waits on a lock held across disk
I/O, and a request waits at most ``commit_timeout_s`` before it gets a 503, even on a hung disk.
A failed operation is reported (``health.Part``) and retried: a segment whose rename failed stays
on the list to hand over, so events already acknowledged always reach the loader once the disk
lets them.

The spool refuses events before the disk is full, not when it is: ClickHouse must reserve room for
each insert, so a spool that took the last free bytes could never be loaded (NOT_ENOUGH_SPACE) nor
therefore shrink. Below ``min_free_bytes`` free on the spool's or ClickHouse's filesystem, events
get 503 until the loader has moved enough of the spool into ClickHouse; nobody has to step in.

One process writes a spool directory (it holds ``.lock`` while it runs). With ``server.processes`` above 1 each
acceptor writes its own, ``<root>/<n>``, and the owner's loader reads them all through ``Spools``; an acceptor's
spool then learns from its directory which segments the owner has loaded (``loaded_elsewhere``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.config import MiB
from gateway.health import Part, short

log = logging.getLogger("clicktrail.spool")

OPEN = ".open"
SEALED = ".seg"
LOCK = ".lock"
#: How long a starting process waits for the spool directory's lock: a process of an earlier run (an acceptor
#: whose owner was killed) may still be sealing it.
LOCK_WAIT_S = 30.0
#: Once it refuses events for want of disk space, the spool takes them again only with this share more free than
#: min_free_bytes, so that near the threshold it does not flip between the two with every request.
RESUME_MARGIN = 1 / 16


class SpoolUnavailable(Exception):
    """Events cannot be made durable right now (spool full, disk short of free space, or the disk refused); the
    client should retry."""


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
        min_free_bytes: int = 0,
        watch: Sequence[Path] = (),
        commit_timeout_s: float = 10.0,
        on_seal: Callable[[], None] = lambda: None,
        errors: Counter[str] | None = None,
        loaded_elsewhere: bool = False,
    ) -> None:
        """``loaded_elsewhere``: another process's loader deletes the sealed segments (an acceptor's spool); the
        spool then counts its depth down from its directory each tick instead of from ``remove``."""
        self.directory = directory
        self.loaded_elsewhere = loaded_elsewhere
        self.fsync = fsync
        self.fsync_interval = fsync_interval_ms / 1000
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age = segment_max_age_ms / 1000
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        #: Where free space is judged: the spool's filesystem and ``watch``'s (ClickHouse's data directory).
        self._watched = [directory, *watch]
        self.commit_timeout = commit_timeout_s
        self.on_seal = on_seal
        errors = Counter() if errors is None else errors
        #: Writes and fsyncs of acknowledged events.
        self.committer = Part("committer", errors)
        #: Handing segments to the loader (close, rename).
        self.sealer = Part("sealer", errors)
        #: Measuring the free space of the watched filesystems.
        self.disk = Part("disk", errors)
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._dirty = False
        self._seq = 0
        #: Closed segments whose rename to .seg has not succeeded yet, with their sizes, oldest first.
        self._unsealed: list[tuple[Path, int]] = []
        # Bytes not yet loaded: the loader thread subtracts, the loop adds; the sealed segments' share by name.
        self._bytes = 0
        self._segment_bytes: dict[str, int] = {}
        self._bytes_lock = threading.Lock()
        self._lock_fd: int | None = None
        #: The least free space of the watched filesystems at the last look (each tick), less what the spool
        #: wrote since: between looks it can only overstate what the spool has used, never what is free.
        self.free_bytes = 0
        #: Why the spool refuses events for want of free disk space (see _look), else None.
        self._low_disk: str | None = None
        #: Why the spool last refused events (full, or the disk refused a write), until a write succeeds or a
        #: segment is loaded.
        self._refused: str | None = None
        # Group commit: lines waiting for the next write+fsync, and the futures of their requests.
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._sync_due = False
        self._seal_due = False
        self._committer: asyncio.Task[None] | None = None
        #: time.monotonic() when the disk operation under way began (None: none is).
        self._io_since: float | None = None
        #: The requests whose lines the committer is writing now.
        self._writing: list[asyncio.Future[None]] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-io")
        self._ticker: asyncio.Task[None] | None = None

    # -- start and stop ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Take the directory (waiting for a process of an earlier run to let go of it), seal segments an earlier
        process left open, and count what is waiting to be loaded."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock(self.directory, LOCK_WAIT_S)
        seal_leftovers(self.directory)
        segments = self.sealed()
        if not self.loaded_elsewhere:
            segments += self._adopt(segments)
        self._segment_bytes = {p.name: p.stat().st_size for p in segments}
        self._bytes = sum(self._segment_bytes.values())
        self._seq = int(segments[-1].stem) + 1 if segments else 0
        self._fsync_dir()
        self._look()

    def _adopt(self, segments: list[Path]) -> list[Path]:
        """Move in what the acceptors of an earlier run with more ``processes`` left unloaded in ``<n>/``, numbered
        after this spool's own segments; a directory an acceptor still holds is left for the next start."""
        seq = int(segments[-1].stem) + 1 if segments else 0
        adopted: list[Path] = []
        for directory in _acceptor_dirs(self.directory):
            fd = lock(directory, 0.0, or_none=True)
            if fd is None:
                log.warning("spool %s is still in use by another process; its segments load at the next start",
                            directory)
                continue
            try:
                seal_leftovers(directory)
                for segment in sorted(directory.glob("*" + SEALED)):
                    target = self.directory / f"{seq:012d}{SEALED}"
                    segment.rename(target)
                    adopted.append(target)
                    seq += 1
            finally:
                os.close(fd)
        if adopted:
            log.info("took over %d segments acceptors of an earlier run left", len(adopted))
        return adopted

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        """Stop the timer, write what is pending and seal the open segment for the loader."""
        if self._ticker:
            self._ticker.cancel()
        self._seal_due = True
        self._kick()
        if self._committer is not None:
            await self._committer
        self._io.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock: the directory is sealed and ours no more
            self._lock_fd = None

    # -- the request path -------------------------------------------------------------------------

    async def append(self, lines: bytes) -> None:
        """Return once ``lines`` (complete JSONEachRow lines) are durable per the fsync policy.

        Requests that arrive while a write (and its fsync) is under way wait together for the next
        one, so a burst costs one write and at most one fsync, whatever the policy. SpoolUnavailable
        when the spool is full, the disk refuses, or it does not confirm within ``commit_timeout_s``.
        """
        if self._bytes + len(lines) > self.max_bytes:
            self._refused = f"spool holds {self._bytes} bytes, its limit is {self.max_bytes}"
            raise SpoolUnavailable(self._refused)
        if self._low_disk or self.free_bytes - len(lines) < self.min_free_bytes:
            self._look(len(lines))  # refuse on a fresh look only: the loader may have freed space since the last one
            if self._low_disk:
                raise SpoolUnavailable(self._low_disk)
        if self.stuck:
            raise self._hung()
        waiter = asyncio.get_running_loop().create_future()
        self._pending.append(lines)
        self._waiters.append(waiter)
        self._kick()
        await waiter  # answered by the committer, or by the timer once the disk hangs (see _tick)

    @property
    def refusing(self) -> str | None:
        """Why the spool refuses new events now, None while it takes them (for /readyz)."""
        return self._low_disk or self._refused

    def _look(self, size: int = 0) -> None:
        """Measure the free space of the watched filesystems and judge whether ``size`` more bytes may be spooled:
        not below min_free_bytes, and, once refusing, not until RESUME_MARGIN more is free. On failure keep the
        (cautious) estimate and the judgement."""
        try:
            self.free_bytes = min(_available(path) for path in self._watched)
        except OSError as exc:
            self.disk.failed(exc, "judging free space by the last measurement")
            return
        self.disk.ok()
        needed = self.min_free_bytes * (1 + RESUME_MARGIN) if self._low_disk else self.min_free_bytes
        self._low_disk = self._short_of_disk() if self.free_bytes - size < needed else None

    def _short_of_disk(self) -> str:
        return (f"{self.free_bytes / MiB:.1f} MiB free on disk, {self.min_free_bytes / MiB:.1f} MiB are kept for"
                " ClickHouse to load the spool (min_free_disk_bytes)")

    def _hung(self) -> SpoolUnavailable:
        return SpoolUnavailable(f"the disk did not confirm the write within {self.commit_timeout:g}s")

    @property
    def stuck(self) -> bool:
        """A disk operation has run longer than a request may wait (a hung disk)."""
        since = self._io_since
        return since is not None and time.monotonic() - since > self.commit_timeout

    def _kick(self) -> None:
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit())

    async def _commit(self) -> None:
        """Do what is asked, in order, until nothing is: write and fsync pending lines, answer their
        requests, then fsync or seal if due. Every failure is reported and answered, never raised,
        so the task cannot die and strand the requests that wait on it."""
        while self._pending or self._sync_due or self._seal_due:
            data, waiters = b"".join(self._pending), self._waiters
            self._pending, self._waiters = [], []
            self._writing = waiters
            if data:
                try:
                    self._write(data)
                    if self.fsync == "always":
                        # The OS has the bytes once write() returns, which survives a crash of this
                        # process; only the fsync (in a thread, so the loop keeps serving) survives power loss.
                        await self._in_thread(self._sync)
                except Exception as exc:
                    self.committer.failed(exc, "answering 503 with Retry-After")
                    error = exc if isinstance(exc, SpoolUnavailable) else SpoolUnavailable(
                        f"spool write failed: {short(exc)}")
                    self._refused = str(error)
                    _settle(waiters, error)
                else:
                    self._refused = None
                    self.committer.ok()
                    _settle(waiters, None)
            if self._sync_due:
                self._sync_due = False
                try:
                    await self._in_thread(self._sync)
                except Exception as exc:
                    self.committer.failed(exc, "flushing again at the next interval")
            if self._seal_due or self._size >= self.segment_max_bytes:
                self._seal_due = False
                try:
                    await self._in_thread(self._seal)
                except Exception as exc:
                    self.sealer.failed(exc, "retrying at the next tick")
                else:
                    self.sealer.ok()

    async def _in_thread(self, operation: Callable[[], None]) -> None:
        self._io_since = time.monotonic()
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, operation)
        finally:
            self._io_since = None

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
                # Nothing more may follow the partial line; the loader sets that one line aside.
                self._seal_due = True
            raise SpoolUnavailable(f"spool write failed: {exc.strerror}") from exc
        self._size += len(data)
        self.free_bytes -= len(data)
        with self._bytes_lock:
            self._bytes += len(data)
        self._dirty = True

    def _sync(self) -> None:
        if self._fd is not None and self._dirty and self.fsync != "off":
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise SpoolUnavailable(f"spool fsync failed: {exc.strerror}") from exc
        self._dirty = False

    # -- segments ---------------------------------------------------------------------------------

    def _open_segment(self) -> None:
        path = self.directory / f"{self._seq:012d}{OPEN}"
        self._seq += 1
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise SpoolUnavailable(f"cannot open a spool segment: {exc.strerror}") from exc
        self._path = path
        self._size = 0
        self._opened_at = time.monotonic()
        self._fsync_dir()

    def _seal(self) -> None:
        """Close the open segment and hand it, and any whose rename failed before, to the loader."""
        if self._fd is not None and self._path is not None:
            fd, path, size = self._fd, self._path, self._size
            self._fd, self._size = None, 0
            try:
                self._sync()
            finally:
                # Closed and listed even if the fsync failed: what it holds was acknowledged (or,
                # with fsync = "interval", may have been) and must reach the loader.
                os.close(fd)
                if size:
                    self._unsealed.append((path, size))
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()
        handed = False
        while self._unsealed:
            path, size = self._unsealed[0]
            path.rename(path.with_suffix(SEALED))
            self._unsealed.pop(0)
            # Counted once sealed: before, an acceptor's look at its directory would find no such segment.
            with self._bytes_lock:
                self._segment_bytes[path.with_suffix(SEALED).name] = size
            handed = True
        if handed:
            self.on_seal()
            self._fsync_dir()

    async def _tick(self) -> None:
        """Look at the free disk space, ask the committer to seal segments by age (and retry failed
        handovers) and, with ``fsync = "interval"``, to flush on schedule."""
        period = min(self.segment_max_age, self.fsync_interval) / 2
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(period)
            self._look()
            now = time.monotonic()
            if self.fsync == "interval" and now - last_sync >= self.fsync_interval:
                last_sync = now
                self._sync_due = True
            if self._unsealed or (self._fd is not None and now - self._opened_at >= self.segment_max_age):
                self._seal_due = True
            if self.loaded_elsewhere:
                self._count_loaded()
            if self._sync_due or self._seal_due:
                self._kick()
            if self.stuck:
                # One timer bounds every request's wait (a timeout per request costs each one a timer):
                # on a hung disk, those waiting hear 503 now; lines not yet written are dropped with them.
                _settle(self._writing + self._waiters, self._hung())
                self._pending, self._waiters = [], []

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
        """Delete segments whose rows ClickHouse has committed (or the loader set aside elsewhere)."""
        for segment in segments:
            segment.unlink()
            self._loaded([segment.name])

    def _loaded(self, names: Iterable[str]) -> None:
        with self._bytes_lock:
            for name in names:
                self._bytes -= self._segment_bytes.pop(name, 0)
        self._refused = None

    def _count_loaded(self) -> None:
        """Count down the segments another process's loader has deleted (an acceptor's spool, each tick)."""
        try:
            present = set(os.listdir(self.directory))
        except OSError as exc:
            self.disk.failed(exc, "counting loaded segments at the next tick")
            return
        with self._bytes_lock:
            gone = [name for name in self._segment_bytes if name not in present]
        if gone:
            self._loaded(gone)

    @property
    def depth_bytes(self) -> int:
        return self._bytes


class Spools:
    """Every spool under one root as the owner's loader sees them (``server.processes`` above 1): the root's own
    segments (a single-process run's) and each acceptor's ``<root>/<n>``, the acceptors of an earlier run with
    more processes included. The acceptors write; only the loader deletes, so a segment is loaded once; a
    segment that sealed after a listing is in the next one. Isolation and quarantine use the root."""

    def __init__(self, root: Path, *, watch: Sequence[Path] = ()) -> None:
        self.directory = root
        self._watched = [root, *watch]

    def recover(self) -> None:
        """Seal what processes of an earlier run left open, in every directory no process holds now (the
        acceptors recover their own as they start): called before the acceptors start and after they stop."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for directory in [self.directory, *_acceptor_dirs(self.directory)]:
            fd = lock(directory, 0.0, or_none=True)
            if fd is not None:
                try:
                    seal_leftovers(directory)
                finally:
                    os.close(fd)

    def directories(self) -> list[Path]:
        return [self.directory, *_acceptor_dirs(self.directory)]

    def sealed(self) -> list[Path]:
        """Sealed segments, each directory's oldest first and the directories taken in turn, so no acceptor's
        backlog waits behind another's (names order segments within a directory only)."""
        lists = [sorted(directory.glob("*" + SEALED)) for directory in self.directories()]
        return [s for s in itertools.chain.from_iterable(itertools.zip_longest(*lists)) if s is not None]

    def oldest(self) -> list[Path]:
        """Each directory's oldest sealed segment: the loader's lag is the longest wait among them."""
        return [s for s in (min(d.glob("*" + SEALED), default=None) for d in self.directories()) if s is not None]

    def remove(self, segments: list[Path]) -> None:
        for segment in segments:
            segment.unlink()

    @property
    def free_bytes(self) -> int:
        """The least free space of the root's and the watched filesystems, measured now."""
        return min(_available(path) for path in self._watched)

    @property
    def depth_bytes(self) -> int:
        """Bytes in every spool (sealed and open segments) not yet loaded."""
        total = 0
        for directory in self.directories():
            for path in itertools.chain(directory.glob("*" + SEALED), directory.glob("*" + OPEN)):
                with contextlib.suppress(FileNotFoundError):  # loaded or sealed since the listing
                    total += path.stat().st_size
        return total


def _acceptor_dirs(root: Path) -> list[Path]:
    """The acceptors' spools under ``root`` (named by number, unlike quarantine/ and isolation/)."""
    return sorted((p for p in root.glob("[0-9]*") if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def lock(directory: Path, wait_s: float, *, or_none: bool = False) -> int | None:
    """Hold ``directory``'s lock file (released when the returned descriptor closes, or the process dies): one
    process writes a spool. Waits up to ``wait_s`` for another holder; then None with ``or_none`` (a caller
    that skips a directory in use), else OSError."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                if or_none:
                    return None
                raise OSError(f"spool {directory} is in use by another process (its {LOCK} is locked)") from None
            time.sleep(0.1)


def seal_leftovers(directory: Path) -> None:
    """Seal the segments a process that stopped without sealing (killed) left open; call with the lock held."""
    for leftover in sorted(directory.glob("*" + OPEN)):
        _drop_partial_line(leftover)
        leftover.rename(leftover.with_suffix(SEALED))



def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Answer the requests of one group commit; one whose client went away (cancelled) is skipped,
    so it cannot stop the others from being answered."""
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def _available(path: Path) -> int:
    """Bytes free for writing on the filesystem of ``path``, or of its nearest existing parent (ClickHouse's
    directory does not exist before its first start)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _drop_partial_line(path: Path) -> None:
    """Cut a trailing line a crash left half-written: it was never acknowledged."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
