"""The client: checks each event in the caller, queues it, and lets a background thread deliver it.

A call costs the caller a few microseconds: the event is checked against the contract and written
as JSON right away (so a mistake surfaces in the caller's stack, and later changes to the caller's
dicts cannot alter what is sent), then appended to a bounded in-memory queue. Nothing in a call
waits on the network unless ``sync_mode`` or ``block`` asks for it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict, Unpack

from clicktrail.consumer import Consumer, Item, RetryPolicy, Uploader
from clicktrail.contract import CORE_FIELDS, MAX_BATCH_EVENTS, ContractError, encode
from clicktrail.outcome import Failure, Outcomes, Stats
from clicktrail.request import Connection

log = logging.getLogger("clicktrail")

DEFAULT_HOST = "http://127.0.0.1:8000"
#: Seconds shutdown waits for the thread after the flush's timeout ran out (see Client.shutdown).
SHUTDOWN_GRACE = 0.2

Time = int | float | str | datetime
Mode = Literal["live", "replay"]
Stage = Literal["lead", "mql", "sal", "sql", "opportunity", "won", "lost", "nurture"]


class OtherFields(TypedDict, total=False):
    """The core fields of every event (schemas/event.schema.json) but ``user_id``.

    For the calls that take ``user_id`` as an argument; :class:`Fields` adds it.
    """

    #: Default: a new UUID. Pass your own (a webhook's delivery id) so a redelivered webhook is stored once.
    event_id: str
    anonymous_id: str | None
    session_id: str | None
    ts: Time | None  #: ms since the epoch, RFC 3339, or an aware datetime; default: the time of the call
    channel: str | None  #: channel code (渠道码)
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_content: str | None
    utm_term: str | None
    sharer: str | None  #: who shared the link (分享人)
    url: str | None
    referrer: str | None
    title: str | None
    # The client of the event's real origin, when you track on behalf of a browser or app (from the request
    # your server is handling); default: the request's, your server's address and this SDK's User-Agent.
    # Only a site's secret key may set them: the gateway refuses them with a write key.
    ip: str | None  #: IPv4 or IPv6 address
    user_agent: str | None  #: its User-Agent header, at most 1000 characters


class Fields(OtherFields, total=False):
    """The core fields of every event; at least one of ``anonymous_id`` and ``user_id`` must be set."""

    user_id: str | None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(when: datetime) -> int:
    if when.utcoffset() is None:
        raise ContractError("ts: a datetime without tzinfo names no instant; use an aware one, "
                            "e.g. datetime.now(timezone.utc)")
    return (when - _EPOCH) // _MS


def _props(props: Mapping[str, Any] | None, **declared: object) -> dict[str, Any]:
    """The caller's extra props with the event's declared ones on top; unset optional ones left out."""
    merged = dict(props) if props else {}
    merged.update((key, value) for key, value in declared.items() if value is not None)
    return merged


class Client:
    """Sends events to a Clicktrail gateway without slowing down or failing the caller.

    ``key``: the site's secret key (``sk_...``) or write key. ``host``: the gateway's base URL.

    Delivery: ``batch_size`` events (at most 500) or ``flush_interval`` seconds make a batch;
    ``max_queue_size`` events wait at most, beyond which new events are dropped and counted, unless
    ``block`` gives a call that many seconds to wait for room. Each request has ``timeout``
    seconds; a failed one is retried ``max_retries`` times, after ``backoff`` seconds doubling up
    to ``backoff_max`` (with jitter), or the gateway's Retry-After. ``shutdown_timeout`` bounds
    how long :meth:`shutdown`, and so interpreter exit, waits for the queue to drain.

    Mistakes: with ``strict`` an event that breaks the contract raises :class:`ContractError`
    (use it in development and tests); without, it is logged and counted as ``invalid``.
    ``validate=False`` leaves every check to the gateway. ``on_error`` is called with a
    :class:`Failure` for every event that will not arrive, from whichever thread learnt it.

    ``sync_mode`` sends each event before the call returns, for scripts and tests.
    ``debug`` logs each request on the ``clicktrail`` logger.
    """

    def __init__(self, key: str, host: str = DEFAULT_HOST, *, batch_size: int = MAX_BATCH_EVENTS,
                 flush_interval: float = 0.5, max_queue_size: int = 10_000, block: float = 0.0,
                 timeout: float = 10.0, max_retries: int = 10, backoff: float = 0.5, backoff_max: float = 30.0,
                 shutdown_timeout: float = 5.0, strict: bool = False, validate: bool = True,
                 sync_mode: bool = False, debug: bool = False,
                 on_error: Callable[[Failure], object] | None = None) -> None:
        if not key:
            raise ValueError("key: required (the site's secret key or write key)")
        if not 1 <= batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_size: must be 1 to {MAX_BATCH_EVENTS}")
        if max_queue_size < 1 or max_retries < 0 or min(flush_interval, block, backoff, backoff_max) < 0:
            raise ValueError("max_queue_size must be >= 1; max_retries, flush_interval, block and backoffs >= 0")
        self._key = key
        self._host = host
        self._timeout = timeout
        self._retry = RetryPolicy(max_retries, backoff, backoff_max)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_queue_size = max_queue_size
        self._block = block
        self._shutdown_timeout = shutdown_timeout
        self._strict = strict
        self._validate = validate
        self._sync = sync_mode
        self._closed = False
        self._outcomes = Outcomes(on_error)
        if debug:
            log.setLevel(logging.DEBUG)
            if not log.handlers:
                log.addHandler(logging.StreamHandler())
        self._reset()
        with _open_lock:
            _open.add(self)

    def _reset(self) -> None:
        """The per-process state: in a forked child, none of the parent's may be used."""
        self._queue: deque[Item | threading.Event] = deque()
        self._stop = threading.Event()
        self._room = threading.Condition() if self._block else None
        self._lock = threading.Lock()  # starting the thread; in sync mode, the connection
        self._uploader = Uploader(Connection(self._host, self._key, self._timeout), self._outcomes, self._stop,
                                  self._retry)
        self._consumer: Consumer | None = None

    # -- events -------------------------------------------------------------------------------------

    def track(self, event: str, props: Mapping[str, Any] | None = None, **fields: Unpack[Fields]) -> str | None:
        """Send any event: a reserved one (schemas/README.md) with its props, or one of your own.

        Returns the event's ``event_id``, or None when it was not queued (invalid, or the queue full).
        """
        return self._send(event, props, fields)

    def page(self, props: Mapping[str, Any] | None = None, **fields: Unpack[Fields]) -> str | None:
        """A ``page_view`` (页面浏览), e.g. from server-side rendering: pass ``url``, ``title``, ``referrer``."""
        return self._send("page_view", props, fields)

    def identify(self, user_id: str, traits: Mapping[str, Any] | None = None,
                 **fields: Unpack[OtherFields]) -> str | None:
        """An ``identify`` (识别用户): ``user_id`` is now known; pass ``anonymous_id`` to link the visitor to it."""
        return self._send("identify", _props(None, traits=traits), {**fields, "user_id": user_id})

    def registration(self, stream_id: str, props: Mapping[str, Any] | None = None,
                     **fields: Unpack[Fields]) -> str | None:
        """A confirmed ``registration`` (报名) for live stream ``stream_id``."""
        return self._send("registration", _props(props, stream_id=stream_id), fields)

    def live_heartbeat(self, stream_id: str, view_id: str, watched_ms: int, *, mode: Mode = "live",
                       position_s: float | None = None, duration_s: float | None = None,
                       props: Mapping[str, Any] | None = None, **fields: Unpack[Fields]) -> str | None:
        """A ``live_heartbeat`` (观看时长): ``watched_ms`` is the playing time of ``view_id`` so far (cumulative)."""
        declared = _props(props, stream_id=stream_id, view_id=view_id, mode=mode, watched_ms=watched_ms,
                          position_s=position_s, duration_s=duration_s)
        return self._send("live_heartbeat", declared, fields)

    def lead_stage(self, user_id: str, stage: Stage, amount: float | None = None, *, reason: str | None = None,
                   props: Mapping[str, Any] | None = None, **fields: Unpack[OtherFields]) -> str | None:
        """A ``lead_stage`` (线索阶段): lead ``user_id`` moved to ``stage``, worth ``amount``, because of ``reason``
        (a loss or recycling reason, for ``lost`` and ``nurture``); usually from a CRM."""
        declared = _props(props, stage=stage, amount=amount, reason=reason)
        return self._send("lead_stage", declared, {**fields, "user_id": user_id})

    def _send(self, name: str, props: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> str | None:
        event: dict[str, Any] = {"event": name, **fields}
        if props is not None:
            event["props"] = props
        event_id = event.get("event_id")
        if event_id is None:
            event_id = event["event_id"] = uuid.uuid4().hex
        try:
            ts = event.get("ts")
            if ts is None:
                event["ts"] = time.time_ns() // 1_000_000  # the event's own time, whatever delivery waits for
            elif isinstance(ts, datetime):
                event["ts"] = _ms(ts)
            if not event.keys() <= CORE_FIELDS:
                unknown = ", ".join(sorted(event.keys() - CORE_FIELDS))
                raise ContractError(f"{unknown}: not an event field (the fields are {', '.join(sorted(CORE_FIELDS))})")
            data = encode(event, validate=self._validate)
        except ContractError as exc:
            if self._strict:
                raise
            self._outcomes.record("invalid", [Failure(str(event_id), str(exc))])
            return None
        return event_id if self._put((event_id, data)) else None

    def _put(self, item: Item) -> bool:
        if self._closed:
            self._outcomes.record("dropped", [Failure(item[0], "client: shut down")])
            return False
        if self._sync:
            with self._lock:
                self._uploader.upload([item])
            return True
        queue = self._queue
        if len(queue) >= self._max_queue_size and not self._wait_for_room():
            self._outcomes.record("dropped", [Failure(item[0], "queue: full")])
            return False
        queue.append(item)
        consumer = self._consumer
        if consumer is None:
            self._start()
        elif len(queue) >= self._batch_size and not consumer.wake.is_set():
            consumer.wake.set()
        return True

    def _wait_for_room(self) -> bool:
        if self._room is None:
            return False
        with self._room:
            return self._room.wait_for(lambda: len(self._queue) < self._max_queue_size, self._block)

    def _start(self) -> None:
        with self._lock:
            if self._consumer is None:
                consumer = Consumer(self._queue, self._uploader, self._stop, batch_size=self._batch_size,
                                    flush_interval=self._flush_interval, room=self._room)
                consumer.start()
                self._consumer = consumer

    # -- control ------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued before this call is settled (delivered or given up on).

        Returns False if ``timeout`` seconds passed first.
        """
        consumer = self._consumer
        if consumer is None or not consumer.is_alive():
            return not self._queue
        return consumer.flush().wait(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush for at most ``timeout`` seconds (default ``shutdown_timeout``), then stop the thread.

        Events still queued then are counted as failed, and later calls drop their events.
        Returns True if everything was settled in time. Runs by itself at interpreter exit.
        """
        if self._closed:
            return True
        self._closed = True
        with _open_lock:
            _open.discard(self)
        deadline = time.monotonic() + (self._shutdown_timeout if timeout is None else timeout)
        settled = self.flush(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        consumer = self._consumer
        if consumer is not None:
            consumer.wake.set()
            # Stopping wakes the thread from a backoff wait at once: a moment more lets it record
            # the batch it holds as failed, even when the flush took all of the timeout.
            consumer.join(max(SHUTDOWN_GRACE, deadline - time.monotonic()))
            if consumer.is_alive():
                log.warning("clicktrail: shut down with a request still in flight")
        left: list[Failure] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, threading.Event):
                item.set()
            else:
                left.append(Failure(item[0], "client: shut down before delivery"))
        if left:
            self._outcomes.record("failed", left)
        # Only an idle connection is closed here: one a thread is still using is left to exit.
        idle = consumer is None or not consumer.is_alive()
        if idle and self._lock.acquire(timeout=SHUTDOWN_GRACE):  # in sync mode, a call may be sending
            self._uploader.close()
            self._lock.release()
        return settled and not left

    def stats(self) -> Stats:
        """The counters: sent, rejected, invalid, dropped, failed, retries, and what is queued now."""
        return self._outcomes.snapshot(sum(1 for item in list(self._queue) if isinstance(item, tuple)))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _after_fork_in_child(self) -> None:
        # The parent keeps delivering what it queued; sending it from here too would only be deduplicated.
        self._outcomes.reset()
        self._reset()


# Open clients, kept alive until shut down so that exit still flushes one the caller let go of.
_open: set[Client] = set()
_open_lock = threading.Lock()


def _shutdown_all() -> None:
    for client in list(_open):
        client.shutdown()


def _after_fork_in_child() -> None:
    global _open_lock
    _open_lock = threading.Lock()
    for client in list(_open):
        client._after_fork_in_child()


atexit.register(_shutdown_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
