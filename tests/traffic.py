"""Traffic for the fault tests: background load that records what the gateway acknowledged, and a probe
client whose latency during a fault is compared with its latency before it.

Latency is judged as a ratio, during a fault against before it, measured seconds apart on the same machine
under the same background load, so that a slow or busy machine (two cores, shared with other test runs) slows
both sides alike; no absolute time is asserted.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from types import TracebackType

import httpx
import orjson

from tests.conftest import GatewayProcess, make_event

#: How much slower a probe may be during a fault than before it: generous, as the machine is shared.
LATENCY_BOUND = 5.0


#: A live viewer's heartbeat: what most of the traffic is.
HEARTBEAT = {"stream_id": "s1", "view_id": "v1", "mode": "live", "watched_ms": 1000}


class Load:
    """Batches of ``size`` events ``name`` with ``props`` from ``workers`` threads, each pausing ``pause`` seconds
    between batches, for as long as the ``with`` block lasts. ``acked`` gets the ids of the events answered 2xx,
    ``statuses`` counts every answer by status, and ``broken`` the requests that got none (the gateway died
    mid-request: not acknowledged)."""

    def __init__(self, gw: GatewayProcess, acked: list[str], *, workers: int = 4, size: int = 50,
                 pause: float = 0.0, name: str = "live_heartbeat", props: dict[str, object] = HEARTBEAT) -> None:
        self.gw, self.acked, self.size, self.pause = gw, acked, size, pause
        self.name, self.props = name, props
        self.statuses: Counter[int] = Counter()
        self.broken = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work) for _ in range(workers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        with httpx.Client(base_url=self.gw.base, timeout=30) as client:
            while not self._stop.is_set():
                batch = [make_event(self.name, props=self.props) for _ in range(self.size)]
                try:
                    response = client.post("/v1/batch", content=orjson.dumps({"batch": batch}),
                                           headers={"X-Write-Key": "wk_a"})
                except httpx.TransportError:
                    self.broken += 1
                    return
                self.statuses[response.status_code] += 1
                if response.is_success:
                    self.acked.extend(e["event_id"] for e in batch)
                self._stop.wait(self.pause)


def probe(gw: GatewayProcess, acked: list[str], rounds: int = 6, count: int = 15) -> float:
    """A probe client's latency: ``rounds`` rounds, 0.25 s apart, of ``count`` one-event POSTs one after another on
    a kept-alive connection; the median of each round, and of those the least. Other processes on the machine
    slow some rounds, seldom all of them: what a fault does to latency, it does to every round. Every POST must be
    answered 200, and its event joins ``acked``."""
    medians = []
    with httpx.Client(base_url=gw.base, timeout=30) as client:
        for round_ in range(rounds):
            if round_:
                time.sleep(0.25)
            times = []
            for _ in range(count):
                event = make_event()
                started = time.perf_counter()
                response = client.post("/v1/batch", content=orjson.dumps({"batch": [event]}),
                                       headers={"X-Write-Key": "wk_b"})
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                acked.append(event["event_id"])
            medians.append(statistics.median(times))
    return min(medians)


def assert_latency_kept(before: float, during: float, fault: str) -> None:
    print(f"probe median {before * 1000:.1f} ms before, {during * 1000:.1f} ms {fault}")
    assert during <= LATENCY_BOUND * before, (
        f"a probe took {during / before:.1f}x as long {fault} ({during * 1000:.1f} ms against {before * 1000:.1f} ms)")
