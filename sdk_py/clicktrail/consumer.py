"""Delivery: the consumer thread that batches the queue, and the uploader that sends a batch until it is settled.

A batch is settled when the gateway answered it (accepted, with per-event rejections reported) or
when it was given up on: a refusal that will not change on retry (400, 401, 403, 413, 415), retries
exhausted, or shutdown. Connection errors, 408, 429 and 5xx are retried with exponential backoff
and full jitter, never sooner than the gateway's Retry-After. Each event keeps its ``event_id``
across retries, so an answer lost on the way back costs nothing: the gateway stores the event once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import deque
from http.client import HTTPException
from typing import NamedTuple

from clicktrail.outcome import Failure, Outcomes
from clicktrail.request import Connection

log = logging.getLogger("clicktrail")

#: The gateway refuses bodies beyond 512 KiB; this leaves room for the envelope around the events.
MAX_BATCH_BYTES = 512 * 1024 - 64
#: zlib's fastest level: JSON events still shrink several times over, at a fraction of level 6's CPU,
#: which here is taken from the caller's process.
GZIP_LEVEL = 1

Item = tuple[str, bytes]  # (event_id, the event's JSON)


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class RetryPolicy(NamedTuple):
    max_retries: int
    backoff: float  # the first retry waits up to this long; each next one up to twice as long
    backoff_max: float

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter: clients that failed together do not come back together; never before Retry-After."""
        return max(retry_after or 0.0, random.uniform(0, min(self.backoff_max, self.backoff * 2 ** (attempt - 1))))


class Uploader:
    """Sends one batch at a time, retrying until it is settled; used by the consumer thread and by sync mode."""

    def __init__(self, connection: Connection, outcomes: Outcomes, stop: threading.Event, retry: RetryPolicy) -> None:
        self._connection = connection
        self._outcomes = outcomes
        self._stopping = stop
        self._retry = retry

    def upload(self, batch: list[Item]) -> None:
        events = b",".join([data for _, data in batch])
        attempt = 0
        while True:
            # sent_at is the clock at each attempt, so the gateway's skew correction does not take
            # the time spent retrying for clock skew.
            body = b'{"sent_at":%d,"batch":[%b]}' % (time.time_ns() // 1_000_000, events)
            started = time.perf_counter()
            try:
                answer = self._connection.post(zlib.compress(body, GZIP_LEVEL, wbits=31))
            except (OSError, HTTPException) as exc:
                reason, wait = f"connection: {str(exc) or type(exc).__name__}", None
            else:
                log.debug("clicktrail: %d events, %d bytes: HTTP %d in %.1f ms", len(batch), len(body),
                          answer.status, (time.perf_counter() - started) * 1000)
                if 200 <= answer.status < 300 or (answer.status == 400 and "rejected" in answer.body):
                    self._settle(batch, answer.body.get("rejected"))
                    return
                error = answer.body.get("error")
                reason = f"HTTP {answer.status}: {error}" if error else f"HTTP {answer.status}"
                if not _retryable(answer.status):
                    self._give_up(batch, reason)
                    return
                wait = answer.retry_after
            attempt += 1
            if attempt > self._retry.max_retries:
                self._give_up(batch, f"gave up after {attempt} attempts: {reason}")
                return
            delay = self._retry.delay(attempt, wait)
            self._outcomes.count("retries")
            log.info("clicktrail: retrying %d events in %.2f s: %s", len(batch), delay, reason)
            if self._stopping.wait(delay):
                self._give_up(batch, f"shut down before delivery: {reason}")
                return

    def _settle(self, batch: list[Item], rejected: object) -> None:
        """Count an answered batch; the gateway names each refused event by its index in the batch."""
        failures = []
        for entry in rejected if isinstance(rejected, list) else ():
            index = entry.get("index") if isinstance(entry, dict) else None
            if isinstance(index, int) and 0 <= index < len(batch):
                failures.append(Failure(batch[index][0], str(entry.get("error"))))
        self._outcomes.count("sent", len(batch) - len(failures))
        if failures:
            self._outcomes.record("rejected", failures)

    def _give_up(self, batch: list[Item], reason: str) -> None:
        self._outcomes.record("failed", [Failure(event_id, reason) for event_id, _ in batch])

    def close(self) -> None:
        self._connection.close()


class Consumer(threading.Thread):
    """Takes batches off the queue (by count, bytes and time) and uploads them, until stopped.

    A daemon thread: exit waits for it through the client's atexit hook, which bounds the wait,
    and not through the interpreter's join of non-daemon threads, which would not.
    """

    def __init__(self, queue: deque[Item | threading.Event], uploader: Uploader, stop: threading.Event, *,
                 batch_size: int, flush_interval: float, room: threading.Condition | None) -> None:
        super().__init__(name="clicktrail-consumer", daemon=True)
        self.wake = threading.Event()
        self._queue = queue
        self._uploader = uploader
        self._stopping = stop
        self._batch_size = batch_size
        self._interval = flush_interval
        self._room = room
        self._flush_lock = threading.Lock()
        self._flushes = 0  # flush markers in the queue

    def flush(self) -> threading.Event:
        """Put a marker behind everything queued; it is set once all of that is settled."""
        done = threading.Event()
        self._queue.append(done)
        with self._flush_lock:
            self._flushes += 1
        self.wake.set()
        return done

    def run(self) -> None:
        while not self._stopping.is_set():
            # The wait ends early for a full batch or a flush; these are checked here rather than
            # trusted to the event, so a wake-up that lands between wait() and clear() is not lost.
            if len(self._queue) < self._batch_size and not self._flushes:
                self.wake.wait(self._interval)
                self.wake.clear()
            batch, marker = self._take()
            if batch:
                try:
                    self._uploader.upload(batch)
                except Exception:  # a bug here must not silently end delivery for the process
                    log.exception("clicktrail: delivery failed")
            if marker is not None:
                marker.set()

    def _take(self) -> tuple[list[Item], threading.Event | None]:
        """The next batch, up to the count and byte limits, and the flush marker that ended it, if one did."""
        queue = self._queue
        batch: list[Item] = []
        size = 0
        marker = None
        while queue and len(batch) < self._batch_size:
            item = queue.popleft()
            if isinstance(item, threading.Event):
                with self._flush_lock:
                    self._flushes -= 1
                marker = item
                break
            size += len(item[1]) + 1
            if size > MAX_BATCH_BYTES and batch:
                queue.appendleft(item)
                break
            batch.append(item)
        if batch and self._room is not None:
            with self._room:
                self._room.notify_all()
        return batch, marker
