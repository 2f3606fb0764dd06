"""The loader: moves sealed spool segments into ClickHouse, then deletes them.

One thread, because embedded ClickHouse runs one query at a time anyway and a single writer keeps
deduplication exact. It retries with backoff while ClickHouse is unavailable (including opening it
at start), so the gateway keeps accepting events through an outage and loads them afterwards.

Nothing a segment holds can stop the loader. A segment whose insert keeps failing, whatever
ClickHouse's error code, becomes a suspect: it stays in the spool, the segments after it load, and
then it is loaded another way, one partition (month) at a time and, where a piece still fails, in
halves down to single rows. Only rows ClickHouse refuses on their own while it accepts others are
set aside, in ``quarantine/`` (kept on disk for an operator, counted in /metrics). When every insert
fails, the trouble is ClickHouse's, not the rows': the loader backs off and sets nothing aside. Nor does
a full disk blame the rows: an insert that finds no room (NOT_ENOUGH_SPACE, ENOSPC) leaves its segments
in the spool, unsuspected, to be retried once the disk has room. A batch is kept to half the free disk
space, so that the spool the gateway stopped taking before the disk was full can always be loaded.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import defaultdict
from itertools import chain
from pathlib import Path

import orjson

from gateway.health import Part
from gateway.ingest.spool import Spool, Spools
from gateway.metrics import Metrics
from gateway.warehouse.backend import QueryError, StoreUnavailable, Warehouse

log = logging.getLogger("clicktrail.loader")

#: A lone segment whose insert fails this often becomes a suspect (at once for DATA_ERRORS).
POISON_ATTEMPTS = 3
#: ClickHouse's error codes that blame the data (parse and conversion failures), not the engine's state.
DATA_ERRORS = frozenset({6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131})
#: ClickHouse's error when it cannot reserve disk space for a new part.
NOT_ENOUGH_SPACE = 243
#: Inserts one suspect may cost (a bad row costs about 2·log2(rows)); what is left after is set aside whole.
MAX_ISOLATION_INSERTS = 256
#: Months a piece of a suspect may span: half of ClickHouse's max_partitions_per_insert_block (100).
MONTHS_PER_PIECE = 50
QUARANTINE = "quarantine"
#: Scratch files for the pieces of a suspect; the suspect itself stays in the spool until it is done.
ISOLATION = "isolation"
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 30.0


class Loader:
    def __init__(self, spool: Spool | Spools, store: Warehouse, metrics: Metrics, *, max_bytes: int) -> None:
        """``spool``: the process's own, or with ``server.processes`` above 1 every acceptor's (``Spools``)."""
        self.spool = spool
        self.store = store
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.part = Part("loader", metrics.internal_errors)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        # Failed inserts of a lone segment so far, and the suspects with when they became one.
        self._failures: dict[Path, int] = {}
        self._suspects: dict[Path, float] = {}
        #: time.monotonic() of the last successful insert: proof that ClickHouse takes rows.
        self._loaded_at = 0.0
        # After a multi-segment batch failed, load one segment at a time to find the one that fails.
        self._one_at_a_time = False

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Called when a spool seals a segment (by this process's spool, or on an acceptor's word)."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Load what is sealed (within ``timeout``), then stop."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            try:
                busy = self._step()
            except Exception as exc:  # anything at all: the loader must outlive every fault
                self.metrics.loader_errors += 1
                self.part.failed(exc, f"retrying in {backoff:.1f}s")
                if self._stopping.wait(backoff):
                    return  # what is not loaded stays in the spool for the next start
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self.part.ok()
            backoff = BACKOFF_MIN_S
            if not busy:
                if self._stopping.is_set():
                    return
                self._wake.wait(1.0)
                self._wake.clear()

    def _step(self) -> bool:
        """One insert, or the isolation of one suspect; False when there was nothing to do."""
        segments = self.spool.sealed()
        if not segments:
            return False
        self._ensure_open()
        present = set(segments)
        self._suspects = {s: t for s, t in self._suspects.items() if s in present}
        # A suspect goes first once ClickHouse has taken other rows since it failed; without that
        # proof it waits for the other segments, and goes only when there is nothing else to do.
        ready = [s for s in segments if s not in self._suspects]
        proven = [s for s, since in self._suspects.items() if self._loaded_at > since]
        if proven or not ready:
            self._isolate(min(proven or self._suspects))
        else:
            self._load(self._take(ready))
        return True

    def _ensure_open(self) -> None:
        if not self.store.is_open:
            self.store.open()
            log.info("clickhouse open at %s", self.store.path)

    def _take(self, segments: list[Path]) -> list[Path]:
        """Oldest segments up to max_bytes (at least one), so a backlog loads in few large inserts; and up to
        half the free disk space, as ClickHouse reserves room for the parts of an insert before writing them
        (less than the JSON they come from, as measured)."""
        limit = min(self.max_bytes, self.spool.free_bytes // 2)
        batch, total = [], 0
        for segment in segments:
            size = segment.stat().st_size
            if batch and (self._one_at_a_time or total + size > limit):
                break
            batch.append(segment)
            total += size
        return batch

    def _load(self, batch: list[Path]) -> None:
        started = time.monotonic()
        rows = sum(_count_lines(s) for s in batch)
        try:
            self.store.insert_segments(batch)
        except StoreUnavailable:
            raise
        except Exception as exc:
            self._insert_failed(batch, exc)
            raise
        self._inserted(rows, started)
        self._one_at_a_time = False
        for segment in batch:
            self._failures.pop(segment, None)
        self.spool.remove(batch)

    def _inserted(self, rows: int, started: float) -> None:
        self._loaded_at = time.monotonic()
        self.metrics.observe_insert(rows, self._loaded_at - started)

    def _insert_failed(self, batch: list[Path], exc: Exception) -> None:
        if len(batch) > 1:
            self._one_at_a_time = True
            return
        if _out_of_space(exc):
            return  # the disk's trouble, not the segment's
        segment = batch[0]
        failures = self._failures[segment] = self._failures.get(segment, 0) + 1
        if failures >= POISON_ATTEMPTS or (isinstance(exc, QueryError) and exc.code in DATA_ERRORS):
            del self._failures[segment]
            self._suspects[segment] = time.monotonic()
            log.warning("segment %s failed %d inserts; loading the others, then it piece by piece",
                        segment.name, failures)

    def _isolate(self, segment: Path) -> None:
        """Load a suspect one partition at a time, halving pieces that fail; set aside the rows that
        fail alone, provided ClickHouse took other rows meanwhile (else raise: its trouble, retry later)."""
        since = self._suspects[segment]
        work = self.spool.directory / ISOLATION
        work.mkdir(exist_ok=True)
        pieces = _pieces(segment.read_bytes())
        refused: list[bytes] = []
        inserts, loaded, error = 0, 0, None
        while pieces:
            piece = pieces.pop()
            if inserts >= MAX_ISOLATION_INSERTS:
                refused += piece
                continue
            inserts += 1
            started = time.monotonic()
            try:
                self._insert_piece(work, piece)
            except StoreUnavailable:
                raise
            except Exception as exc:
                if _out_of_space(exc):
                    raise  # no piece is to blame: isolate again once the disk has room
                error = exc
                if len(piece) == 1:
                    refused += piece
                else:
                    half = len(piece) // 2
                    pieces += [piece[half:], piece[:half]]
            else:
                loaded += len(piece)
                self._inserted(len(piece), started)
        if refused and not loaded and self._loaded_at <= since:
            assert error is not None
            raise error
        if refused:
            self._set_aside(segment, refused)
        log.info("segment %s loaded piece by piece: %d rows in, %d set aside", segment.name, loaded, len(refused))
        del self._suspects[segment]
        self.spool.remove([segment])

    def _insert_piece(self, work: Path, lines: list[bytes]) -> None:
        piece = work / "piece.seg"
        piece.write_bytes(b"".join(lines))
        self.store.insert_segments([piece])

    def _set_aside(self, segment: Path, lines: list[bytes]) -> None:
        """Keep refused rows on disk, under the segment's name, durably before the segment goes."""
        target = self.spool.directory / QUARANTINE
        target.mkdir(exist_ok=True)
        name = "-".join(segment.relative_to(self.spool.directory).parts)  # an acceptor's: <n>-<segment>
        with (target / name).open("wb") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        self.metrics.quarantined_segments += 1
        self.metrics.quarantined_rows += len(lines)
        log.error("%d rows of segment %s set aside in %s: ClickHouse refuses them", len(lines), segment.name, target)


def _pieces(data: bytes) -> list[list[bytes]]:
    """A segment's lines in pieces of at most MONTHS_PER_PIECE months of ts (the events table's
    partition), so no piece needs more partitions than one insert may create; lines that do not
    parse form a piece of their own, to be halved down to the refused ones."""
    months: dict[int, list[bytes]] = defaultdict(list)
    for line in data.splitlines(keepends=True):
        try:
            when = time.gmtime(orjson.loads(line)["ts"])
            month = when.tm_year * 100 + when.tm_mon
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, OSError):
            month = 0
        months[month].append(line)
    unreadable = months.pop(0, [])
    ordered = [months[m] for m in sorted(months)]
    pieces = [list(chain.from_iterable(ordered[i:i + MONTHS_PER_PIECE]))
              for i in range(0, len(ordered), MONTHS_PER_PIECE)]
    return [*pieces, unreadable] if unreadable else pieces


def _out_of_space(exc: Exception) -> bool:
    """Whether an insert failed for want of disk space (ClickHouse's reservation, or a write it or the
    loader made), which says nothing about the rows."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return isinstance(exc, QueryError) and (exc.code == NOT_ENOUGH_SPACE or "No space left on device" in exc.message)


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
