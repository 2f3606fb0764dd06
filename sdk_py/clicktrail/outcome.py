"""What became of events that did not make it: counters, the log, and the caller's ``on_error``.

Every event ends in exactly one counter, so ``sent + rejected + invalid + dropped + failed`` plus
what is still queued or in flight is everything the caller handed over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

log = logging.getLogger("clicktrail")

#: Seconds between two "queue full" warnings: during an outage every call would otherwise log one.
DROP_WARNING_INTERVAL = 10.0

Kind = Literal["rejected", "invalid", "dropped", "failed"]


class Failure(NamedTuple):
    """An event that will not reach ClickHouse, and why.

    ``error`` is the contract's string (``props.stream_id: required``) for events refused locally or
    by the gateway, else the reason delivery stopped (``queue: full``, ``HTTP 401: key: unknown write key``).
    """

    event_id: str
    error: str


@dataclass(frozen=True)
class Stats:
    """A client's counters since it was made (in a forked child: since the fork)."""

    sent: int = 0  #: accepted by the gateway, so durable there
    rejected: int = 0  #: refused one by one by the gateway (each with the contract's error)
    invalid: int = 0  #: refused here against the contract (when not ``strict``)
    dropped: int = 0  #: never queued: the queue was full, or the client was shut down
    failed: int = 0  #: given up: a final HTTP error, retries exhausted, or shutdown before delivery
    retries: int = 0  #: requests repeated after a connection error, 408, 429 or 5xx
    queued: int = 0  #: waiting in the queue now


class Outcomes:
    """Thread-safe counters, shared by the callers' threads and the consumer thread."""

    def __init__(self, on_error: Callable[[Failure], object] | None) -> None:
        self._on_error = on_error
        self.reset()

    def reset(self) -> None:
        """Fresh counters and lock; after os.fork() the parent's lock may have been held by a thread that is gone."""
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_drop_warning = -DROP_WARNING_INTERVAL

    def count(self, name: Literal["sent", "retries"], n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def record(self, kind: Kind, failures: Sequence[Failure]) -> None:
        """Count, log and report events that will not arrive."""
        with self._lock:
            self._counts[kind] += len(failures)
            total = self._counts[kind]
            now = time.monotonic()
            warn_drop = kind == "dropped" and now - self._last_drop_warning >= DROP_WARNING_INTERVAL
            if warn_drop:
                self._last_drop_warning = now
        if kind == "dropped":
            if warn_drop:
                log.warning("clicktrail: dropping events (%s); %d dropped so far", failures[0].error, total)
        elif kind == "failed":
            log.error("clicktrail: gave up on %d events: %s", len(failures), failures[0].error)
        else:
            for failure in failures:
                log.warning("clicktrail: event %s %s: %s", failure.event_id,
                            "rejected by the gateway" if kind == "rejected" else "invalid", failure.error)
        if self._on_error is not None:
            for failure in failures:
                try:
                    self._on_error(failure)
                except Exception:  # the caller's callback must not stop delivery, nor crash the caller
                    log.exception("clicktrail: on_error raised")

    def snapshot(self, queued: int) -> Stats:
        with self._lock:
            counts = dict(self._counts)
        return Stats(**counts, queued=queued)
