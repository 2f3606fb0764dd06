"""Clients that misbehave without meaning harm: clocks set days or years wrong, connections that send slowly,
thousands of browsers keeping idle connections open. Nothing they had acknowledged is lost or stored twice, and
a probe client is as fast meanwhile as before (tests/traffic.py); real gateway, real sockets.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from tests.conftest import GatewayProcess, assert_exactly_once, make_event
from tests.test_connections import dial, exchange
from tests.traffic import assert_latency_kept, probe

Factory = Callable[..., GatewayProcess]
DAY_MS = 86_400_000
#: How far each client's clock is off (its time less the true time): behind by days and hours, ahead by minutes,
#: days and years. The gateway corrects each event's time by received_at - sent_at.
SKEWS_MS = [-3 * DAY_MS, -2 * 3_600_000, 50 * 60_000, 3 * DAY_MS, 10 * 365 * DAY_MS]
#: The site whose events the misbehaving clients send (the probe sends to site_b).
KEY, SITE = "wk_c", "site_c"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def post(events: list[dict[str, Any]]) -> bytes:
    """A POST /v1/batch of ``events``, as a kept-alive connection sends it."""
    body = orjson.dumps({"batch": events})
    return (b"POST /v1/batch HTTP/1.1\r\nHost: t\r\nX-Write-Key: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (KEY.encode(), len(body))) + body


# -- clocks -----------------------------------------------------------------------------------------


@contextmanager
def skewed_clients(gw: GatewayProcess, skews: list[int], sent: list[tuple[int, dict[str, Any]]],
                   statuses: Counter[int]) -> Iterator[None]:
    """One client per skew sending 20-event batches stamped by its clock, each batch twice: a retry re-sends it
    with a later sent_at, as an SDK does after a lost answer. ``sent`` gets each event sent with its client's skew,
    ``statuses`` counts the answers."""
    stop = threading.Event()

    def client(skew: int) -> None:
        with httpx.Client(base_url=gw.base, timeout=30) as http:
            while not stop.is_set():
                clock = now_ms() + skew
                batch = [make_event(ts=clock - 100 * i) for i in range(20)]
                for attempt in range(2):
                    body = {"batch": batch, "sent_at": now_ms() + skew}
                    response = http.post("/v1/batch", content=orjson.dumps(body), headers={"X-Write-Key": KEY})
                    statuses[response.status_code] += 1
                    if attempt == 0 and response.status_code == 200 and not response.json()["rejected"]:
                        sent.extend((skew, event) for event in batch)
                stop.wait(0.01)

    threads = [threading.Thread(target=client, args=(skew,)) for skew in skews]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def stored(condition: str = "1") -> str:
    return f"SELECT count() FROM clicktrail.events WHERE site_id = '{SITE}' AND {condition}"


def test_clock_skewed_clients_are_corrected_stored_once_and_slow_nobody(new_gateway: Factory) -> None:
    gw = new_gateway().start()
    acked: list[str] = []
    sent: list[tuple[int, dict[str, Any]]] = []
    statuses: Counter[int] = Counter()
    # The same traffic from clients whose clocks are right, then from the skewed ones: only the clocks differ.
    with skewed_clients(gw, [0] * len(SKEWS_MS), sent, statuses):
        before = probe(gw, acked)
    with skewed_clients(gw, SKEWS_MS, sent, statuses):
        during = probe(gw, acked)
    assert set(statuses) == {200}, statuses
    assert {skew for skew, _ in sent} == {0, *SKEWS_MS}  # every client's first batch had all its events accepted
    gw.wait_for(stored(), len(sent))
    # Each copy was corrected to about its own arrival, whichever copy was kept.
    assert gw.scalar(stored("abs(dateDiff('second', ts, received_at)) > 60")) == 0
    # Their clocks set right, the clients retry once more: the events' own times are now taken as they are, off
    # by the skew; where that is inside the key's window (7 days back, an hour ahead) the retry is accepted, and
    # must be dropped as the copy it is.
    retries = [event for skew, event in sent if -7 * DAY_MS < skew < 3_600_000]
    for i in range(0, len(retries), 500):
        response = gw.send(retries[i:i + 500], key=KEY)
        assert response.status_code == 200 and response.json()["rejected"] == [], response.text
    acked += [event["event_id"] for _, event in sent]
    marker = make_event()  # loaded after the retries: once it is in, so would their copies be
    assert gw.send([marker], key=KEY).status_code == 200
    gw.wait_for(stored(f"event_id = '{marker['event_id']}'"), 1)
    assert_exactly_once(gw, [*acked, marker["event_id"]])
    assert_latency_kept(before, during, "while clients with clocks days and years off send")


# -- connections ------------------------------------------------------------------------------------

#: Client addresses (all loopback) to spread connections over, each within the default 256 per address.
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 12)]


def test_slow_clients_holding_many_connections_leave_others_fast(new_gateway: Factory) -> None:
    """200 clients send their batches a few bytes every 0.2 s (a phone on a bad network): each holds a
    connection and a request in the gateway until its body is whole, and each is stored once."""
    gw = new_gateway().start()  # default limits: a body may pause up to 30 s
    acked: list[str] = []
    before = probe(gw, acked)
    batches = [[make_event() for _ in range(5)] for _ in range(200)]
    requests = [post(batch) for batch in batches]
    socks = [dial(gw.port, ADDRESSES[i % len(ADDRESSES)]) for i in range(len(requests))]
    probed = threading.Event()
    sent = [0] * len(requests)

    def trickle() -> None:
        while not probed.wait(0.2):
            for i, (sock, request) in enumerate(zip(socks, requests, strict=True)):
                sock.sendall(request[sent[i]:sent[i] + 8])
                sent[i] += 8

    slow = threading.Thread(target=trickle)
    slow.start()
    try:
        during = probe(gw, acked)
    finally:
        probed.set()
        slow.join()
    assert all(0 < n < len(request) for n, request in zip(sent, requests, strict=True)), "a body was sent whole"
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: exchange(socks[i], requests[i][sent[i]:]), range(len(requests))))
    for sock in socks:
        sock.close()
    assert set(statuses) == {200}
    acked += [event["event_id"] for batch in batches for event in batch]
    assert_latency_kept(before, during, "while 200 clients trickle their bodies")
    assert_exactly_once(gw, acked)


def test_thousands_of_idle_keep_alive_connections_leave_others_fast(new_gateway: Factory) -> None:
    """2,000 browsers each send an event and keep their connection open, idle, for the next (within the
    keep-alive timeout, raised here so the test's own pace cannot reach it): the gateway holds them all, stays
    fast for others, and answers each on its old connection when it speaks again."""
    gw = new_gateway(keep_alive_timeout_s=300.0).start()
    acked: list[str] = []
    before = probe(gw, acked)
    socks = [dial(gw.port, ADDRESSES[i % len(ADDRESSES)]) for i in range(2000)]

    def each_sends_an_event() -> None:
        events = [make_event() for _ in socks]
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: exchange(socks[i], post([events[i]])), range(len(socks))))
        assert set(statuses) == {200}
        acked.extend(event["event_id"] for event in events)

    try:
        each_sends_an_event()
        during = probe(gw, acked)
        each_sends_an_event()  # on the same connections, idle all the while
    finally:
        for sock in socks:
            sock.close()
    assert_latency_kept(before, during, "with 2,000 idle kept-alive connections open")
    assert_exactly_once(gw, acked)
