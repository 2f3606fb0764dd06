"""The ClickHouse HTTP interface's running queries: each request's engine work on a thread of its own, stopped
when its client goes away or an admin's KILL QUERY names it.

chDB runs the queries of different connections in parallel (measured with chdb 4.4: queries on three
connections overlap, and a KILL QUERY on a fourth stops one of them within 0.1 s), so no request's query waits
for another's, and a KILL QUERY does not wait behind the query it names. What chDB cannot do is run a query
under the client's query_id (it draws its own) or interrupt a call from another thread (its StreamingResult's
cancel() waits for the piece being fetched). So each request's calls into the engine run on one thread of its
own, and the request's query in the engine is the one whose ``thread_ids`` (system.processes) hold that
thread, which takes part in no other query: cancelling a request is ``KILL QUERY WHERE has(thread_ids, ...)``,
on a connection kept for that, repeated while the request is inside the engine (a query just starting is not
listed yet). Between calls, cancelling is a flag each call checks first (QUERY_WAS_CANCELLED, 394); a stream
left open between its pieces is closed on the request's thread.

KILL QUERY statements are answered here, as ClickHouse answers them (src/Interpreters/
InterpreterKillQueryQuery.cpp), against the requests running now: the WHERE clause is evaluated, by the engine,
over a table of them with system.processes' columns query_id (the client's, as X-ClickHouse-Query-Id says),
user, query, elapsed, is_cancelled, initial_query_id and initial_user; each request matched is cancelled; the
answer lists them (kill_status, query_id, user, query): 'waiting' (ASYNC, the default), 'finished' once nothing
of it is left in the engine (SYNC), 'unknown_status' (TEST: listed, not cancelled). Nothing matched: an empty
answer, as ClickHouse's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from gateway.warehouse.store import Connection, QueryError, Store, StoreUnavailable

log = logging.getLogger("clicktrail.clickhouse")

T = TypeVar("T")

QUERY_WAS_CANCELLED = 394
#: Between two KILLs of a request that is still inside the engine.
KILL_RETRY_S = 0.05
#: How long a request may stay inside the engine after it was cancelled before the killing gives up (logged).
KILL_PATIENCE_S = 60.0
#: How long KILL QUERY ... SYNC waits for each request it cancelled.
SYNC_WAIT_S = 60.0

# The table a KILL QUERY's WHERE is evaluated over: system.processes' columns that a request has.
_PROCESSES = ("n UInt64, query_id String, user String, query String, elapsed Float64, is_cancelled UInt8,"
              " initial_query_id String, initial_user String")
_KILLED = "kill_status String, query_id String, user String, query String"
# KILL QUERY as ClickHouse's formatter writes it (its WHERE, mode, FORMAT and SETTINGS in that order), matched on
# the text with its literals masked, so a literal holding " SYNC" or " SETTINGS " is no clause.
_KILL_QUERY = re.compile(r"KILL QUERY WHERE (?P<where>.+?)(?: (?P<mode>SYNC|ASYNC|TEST))?(?: FORMAT \w+)?"
                         r"(?: SETTINGS .*)?", re.S)
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`", re.S)


def cancelled() -> QueryError:
    return QueryError(QUERY_WAS_CANCELLED, "Query was cancelled. (QUERY_WAS_CANCELLED)")


class Run:
    """One request's work in the engine, on a thread of its own (see the module's docstring)."""

    def __init__(self, runs: Runs, number: int, query_id: str, user: str) -> None:
        self.number = number
        self.query_id = query_id
        self.user = user
        #: The statement, once the request's body is read (for KILL QUERY's WHERE and answer).
        self.query = ""
        self.started = time.monotonic()
        self.cancelled = False
        #: Set once nothing of the request is left in the engine (finished, or cancelled and stopped).
        self.stopped = threading.Event()
        #: What closes the request's open stream, if it has one: called on its thread once it is cancelled.
        self.on_cancel: Callable[[], None] | None = None
        self._runs = runs
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-query")
        self._lock = threading.Lock()
        self._thread = 0  # the native id of its thread, once it has one
        self._busy = False  # inside a call to the engine
        self._queued = 0  # later() calls not run yet
        self._on_finish: list[Callable[[], None]] = []

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on the request's thread; QUERY_WAS_CANCELLED once it is cancelled."""
        return await asyncio.wrap_future(self._executor.submit(self._call, function, *args, **kwargs))

    def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            if self.cancelled:
                raise cancelled()
            self._thread = threading.get_native_id()
            self._busy = True
        try:
            return function(*args, **kwargs)
        finally:
            with self._lock:
                self._busy = False

    def later(self, function: Callable[[], None]) -> None:
        """``function()`` on the request's thread after what is queued there, not waited for: a cleanup from a
        task being cancelled, which can await nothing."""
        with self._lock:
            self._queued += 1
        self._executor.submit(self._later, function)

    def _later(self, function: Callable[[], None]) -> None:
        try:
            function()
        except Exception:  # a cleanup that failed must not take the thread's next work with it
            log.exception("cleaning up after a query failed")
        finally:
            with self._lock:
                self._queued -= 1

    def on_finish(self, function: Callable[[], None]) -> None:
        """Call ``function()`` on the event loop once the request has finished, what was queued on its thread
        included (a session's connection is free only then)."""
        self._on_finish.append(function)

    def cancel(self) -> None:
        """Stop the request: its query in the engine is killed, its next call refused; idempotent."""
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
        threading.Thread(target=self._runs.stop, args=(self,), name="clickhouse-kill", daemon=True).start()

    def finish(self) -> None:
        """The request is over (called on the event loop, once): its on_finish calls run now if its thread has
        nothing left to do for it (the client may send its next request as soon as it has the answer), else
        once that is done; the thread then ends."""
        with self._lock:
            idle = not self._busy and not self._queued
        if idle:
            for function in self._on_finish:
                function()
        self._executor.submit(self._finished, not idle)
        self._executor.shutdown(wait=False)

    def _finished(self, callbacks: bool) -> None:
        self._runs.forget(self)
        self.stopped.set()
        if callbacks:
            for function in self._on_finish:
                self._loop.call_soon_threadsafe(function)

    def inside(self) -> int:
        """The native id of the request's thread while it is inside the engine, else 0."""
        with self._lock:
            return self._thread if self._busy else 0

    def row(self, now: float) -> dict[str, Any]:
        """The request as a row of _PROCESSES."""
        return {"n": self.number, "query_id": self.query_id, "user": self.user, "query": self.query,
                "elapsed": now - self.started, "is_cancelled": int(self.cancelled),
                "initial_query_id": self.query_id, "initial_user": self.user}


class Runs:
    """The requests running now, and the engine connection that kills their queries."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._running: dict[int, Run] = {}
        self._numbers = itertools.count(1)
        self._control: Connection | None = None

    def start(self, query_id: str, user: str) -> Run:
        run = Run(self, next(self._numbers), query_id, user)
        with self._lock:
            self._running[run.number] = run
        return run

    def forget(self, run: Run) -> None:
        with self._lock:
            self._running.pop(run.number, None)

    def stop(self, run: Run) -> None:
        """Kill ``run``'s query until the run is out of the engine, then close its open stream (in a thread of
        its own: Run.cancel)."""
        deadline = time.monotonic() + KILL_PATIENCE_S
        try:
            while thread := run.inside():
                if time.monotonic() > deadline:
                    log.warning("a cancelled query is still running after %.0f s", KILL_PATIENCE_S)
                    return
                self._kill(thread)
                time.sleep(KILL_RETRY_S)
            if run.on_cancel is not None:
                run.later(run.on_cancel)
            run.later(run.stopped.set)
        except RuntimeError:  # its thread has ended: the request finished meanwhile
            pass
        except (QueryError, StoreUnavailable) as exc:
            log.warning("cannot kill a cancelled query: %s", exc)

    def _kill(self, thread: int) -> None:
        with self._lock:
            if self._control is None:
                self._control = self.store.connect(readonly=False)
            control = self._control
        try:
            control.query("KILL QUERY WHERE has(thread_ids, {thread:UInt64}) ASYNC", params={"thread": str(thread)})
        except StoreUnavailable:
            with self._lock:  # the engine was closed (and maybe reopened): the next kill opens a new one
                if self._control is control:
                    self._control = None
            raise

    def kill_statement(self, conn: Connection, run: Run, formatted: str, params: Mapping[str, str],
                       fmt: str) -> bytes | None:
        """Answer ``formatted``, a KILL QUERY statement of ``run``'s, in ``fmt``; None if it is no KILL QUERY
        of this server's (ON CLUSTER: the engine answers it)."""
        masked = _LITERAL.sub(lambda literal: "_" * len(literal.group()), formatted)
        match = _KILL_QUERY.fullmatch(masked)
        if match is None:
            return None
        where = formatted[match.start("where"):match.end("where")]
        mode = match["mode"] or "ASYNC"
        now = time.monotonic()
        with self._lock:
            others = {r.number: r for r in self._running.values() if r is not run}
        table = orjson.dumps([r.row(now) for r in others.values()]).decode()
        found = conn.query(f"SELECT n FROM format(JSONEachRow, '{_PROCESSES}', {{clicktrail_processes:String}})"
                           f" WHERE {where} ORDER BY n",
                           "TabSeparated", params={**params, "clicktrail_processes": _escaped(table)})
        matched = [others[int(n)] for n in found.split()]
        if not matched:
            return b""
        if mode != "TEST":
            for victim in matched:
                victim.cancel()
        statuses = {"TEST": "unknown_status", "ASYNC": "waiting"}
        killed = [{"kill_status": statuses.get(mode) or ("finished" if victim.stopped.wait(SYNC_WAIT_S)
                                                          else "waiting"),
                   "query_id": victim.query_id, "user": victim.user, "query": victim.query} for victim in matched]
        return conn.query(f"SELECT * FROM format(JSONEachRow, '{_KILLED}', {{clicktrail_killed:String}})", fmt,
                          params={"clicktrail_killed": _escaped(orjson.dumps(killed).decode())})


def _escaped(value: str) -> str:
    """A query parameter's value as the engine reads it, TabSeparated-escaped (JSON holds no raw tab or line
    break, but backslashes)."""
    return value.replace("\\", "\\\\")
