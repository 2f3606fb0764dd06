"""The loader: moves sealed spool segments into ClickHouse, then deletes them.

One thread, because embedded ClickHouse runs one query at a time anyway and a single writer keeps
deduplication exact. It retries with backoff while ClickHouse is unavailable (including opening it
at start), so the gateway keeps accepting events through an outage and loads them afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from gateway.metrics import Metrics
from gateway.spool import Spool
from gateway.store import QueryError, Store, StoreUnavailable

log = logging.getLogger("clicktrail.loader")

#: A batch ClickHouse refuses this often for its data is set aside, not retried forever.
POISON_ATTEMPTS = 3
QUARANTINE = "quarantine"
#: ClickHouse's error codes that blame the data (parse and conversion failures), not the engine's state.
DATA_ERRORS = frozenset({6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131})


class Loader:
    def __init__(self, spool: Spool, store: Store, metrics: Metrics, *, max_bytes: int) -> None:
        self.spool = spool
        self.store = store
        self.metrics = metrics
        self.max_bytes = max_bytes
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self._failures = 0
        # After a multi-segment batch kept failing, load one segment at a time to isolate the bad one.
        self._one_at_a_time = False

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Called by the spool when it seals a segment."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Load what is sealed (within ``timeout``), then stop."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.2
        while True:
            segments = self.spool.sealed()
            if not segments:
                if self._stopping.is_set():
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._ensure_open()
                self._load(self._take(segments))
            except (StoreUnavailable, QueryError) as exc:
                self.metrics.loader_errors += 1
                log.warning("load failed, retrying in %.1fs: %s", backoff, _short(exc))
                if self._stopping.wait(backoff) and not self.store.is_open:
                    return
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = 0.2

    def _ensure_open(self) -> None:
        if not self.store.is_open:
            self.store.open()
            log.info("clickhouse open at %s", self.store.path)

    def _take(self, segments: list[Path]) -> list[Path]:
        """Oldest segments up to max_bytes (at least one), so a backlog loads in few large inserts."""
        batch, total = [], 0
        for segment in segments:
            size = segment.stat().st_size
            if batch and (self._one_at_a_time or total + size > self.max_bytes):
                break
            batch.append(segment)
            total += size
        return batch

    def _load(self, batch: list[Path]) -> None:
        started = time.monotonic()
        rows = sum(_count_lines(s) for s in batch)
        try:
            self.store.insert_segments(batch)
        except QueryError as exc:
            if exc.code not in DATA_ERRORS:
                raise
            self._failures += 1
            if self._failures < POISON_ATTEMPTS:
                raise
            self._quarantine(batch)
            return
        self.metrics.observe_insert(rows, time.monotonic() - started)
        self._failures = 0
        self._one_at_a_time = False
        self.spool.remove(batch)

    def _quarantine(self, batch: list[Path]) -> None:
        """Set a segment ClickHouse keeps refusing aside (kept on disk for an operator), so it cannot block the rest.

        A batch of several segments is first retried one segment at a time; only a lone segment
        that still fails is moved.
        """
        self._failures = 0
        if len(batch) > 1:
            self._one_at_a_time = True
            return
        target = self.spool.directory / QUARANTINE
        target.mkdir(exist_ok=True)
        self.spool.remove_to(batch[0], target)
        self.metrics.quarantined_segments += 1
        log.error("segment %s set aside in %s after %d failed inserts", batch[0].name, target, POISON_ATTEMPTS)


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
