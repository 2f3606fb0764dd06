"""The server backend (``[clickhouse] mode = "server"``) without a stock ClickHouse server: gateway B runs it pointed
at gateway A's ClickHouse HTTP port as A's admin, so B's events travel B -> clickhouse-connect -> A's HTTP interface
-> A's embedded ClickHouse. Every analytics view on A must then answer as the plain-Python reference says for the
events sent (the analytics modules' own tests, collected here again against events sent to B); B's migrations
against a current A apply nothing; B's spool holds events while A is down; and an event sent to two gateways at
once is stored once."""

from __future__ import annotations

import inspect
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import ClickHouseConfig
from gateway.warehouse.server import Server
from tests import test_analytics, test_analytics_overview, test_analytics_pipeline, test_analytics_sessions_content
from tests.analytics.generate import generate
from tests.analytics.harness import SEEDS, Loaded, send
from tests.conftest import COUNT_ALL, DUPLICATES, GatewayProcess, assert_exactly_once, free_port, make_event

ADMIN = {"user": "admin", "password": "admin-pw"}


def server_mode(directory: Path, a: GatewayProcess, **clickhouse: Any) -> GatewayProcess:
    """A gateway in server mode whose ClickHouse is ``a``'s: its queries (``rows``, ``wait_for``) go to ``a``'s
    port too, as its own analysts' port is closed in server mode."""
    gw = GatewayProcess(directory, clickhouse={"mode": "server", "urls": [f"http://127.0.0.1:{a.clickhouse_port}"],
                                               **ADMIN, **clickhouse})
    gw.clickhouse_port = a.clickhouse_port
    return gw


# -- every view, for events sent to B --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """The analytics fixture (tests/analytics/harness.py) for one seed, its deliveries sent to A's server-mode
    gateways B and C, each all of them at the same time, as clients retrying on another gateway would; and then,
    whatever that timing left to chance, every event made to collide: a second copy of each stored, as by a
    gateway whose lookup ran before the other's insert (received a second later), so every rollup is fed each
    event twice, and the deliveries sent to B again, whose loads find the copies and remove them."""
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    data = generate(SEEDS[0], int(now.timestamp() * 1000))
    a = GatewayProcess(tmp_path_factory.mktemp("a")).start()
    b = server_mode(tmp_path_factory.mktemp("b"), a).start()
    c = server_mode(tmp_path_factory.mktemp("c"), a).start()
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(send, (b, c), (data.deliveries, data.deliveries)))
        for gw in (b, c):
            gw.drained_metrics()  # every load done, and the copies it met removed
        a.query("INSERT INTO clicktrail.events SELECT * REPLACE (received_at + toIntervalSecond(1) AS received_at)"
                " FROM clicktrail.events")
        assert a.scalar(COUNT_ALL) == 2 * len(data.events)
        send(b, data.deliveries)
        b.drained_metrics()
        yield Loaded(b, data, now)
    finally:
        for gw in (c, b, a):
            gw.stop()


# The analytics modules' tests of the views over ``loaded`` (costs go in through a gateway's own port, which a
# server-mode gateway does not open, so those are left to the embedded tests), collected here against this
# module's ``loaded``: pytest resolves a test's fixtures where it is collected.
globals().update({
    f"{name}__via_b": test
    for module in (test_analytics, test_analytics_sessions_content, test_analytics_pipeline, test_analytics_overview)
    for name, test in vars(module).items()
    if name.startswith("test_") and callable(test) and "loaded" in inspect.signature(test).parameters
    and name != "test_attribution"
})


@pytest.mark.parametrize("model", ["linear"])
def test_attribution__via_b(loaded: Loaded, model: str) -> None:
    # One model: the data under test is what B loaded, the same for all five (test_analytics checks each model,
    # and spends most of its time computing the reference credits).
    test_analytics.test_attribution(loaded, model)


def test_each_event_sent_to_both_gateways_is_stored_once(loaded: Loaded) -> None:
    assert loaded.gw.scalar(COUNT_ALL) == len(loaded.data.events)
    assert loaded.gw.scalar(DUPLICATES) == 0


# -- migrations, outage, exactly once --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("a")).start()
    yield gw
    if gw.proc is not None:
        gw.stop()


def backend(a: GatewayProcess) -> Server:
    return Server(ClickHouseConfig(mode="server", urls=[f"http://127.0.0.1:{a.clickhouse_port}"], **ADMIN))


def recent(i: int) -> int:
    """A ts a minute ago (plus ``i`` ms): within what a write key may send."""
    return int(time.time() * 1000) - 60_000 + i


def test_migrations_against_a_current_server_apply_nothing(a: GatewayProcess) -> None:
    applied = a.scalar("SELECT count() FROM clicktrail.schema_migrations")
    server = backend(a)
    server.open()  # migrates, as every start does
    try:
        assert server.migrate() == []
    finally:
        server.close()
    assert a.scalar("SELECT count() FROM clicktrail.schema_migrations") == applied > 0


def test_a_url_that_does_not_answer_is_passed_over(a: GatewayProcess) -> None:
    server = Server(ClickHouseConfig(mode="server", urls=[f"http://127.0.0.1:{free_port()}",
                                                          f"http://127.0.0.1:{a.clickhouse_port}"], **ADMIN))
    server.open()
    try:
        assert server.query("SELECT 1").strip() == b"1"
    finally:
        server.close()


def test_the_spool_holds_events_while_the_server_is_down(a: GatewayProcess, tmp_path: Path) -> None:
    b = server_mode(tmp_path / "b", a).start()
    try:
        # Its own analysts' port, configured, is not opened: analysts use the server's.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{tomllib.loads(b.config.read_text())['server']['clickhouse_port']}/ping")
        a.stop()
        events = [make_event(ts=recent(i)) for i in range(300)]
        for i in range(0, len(events), 50):
            response = b.send(events[i:i + 50])
            assert response.status_code == 200 and response.json()["accepted"] == 50, response.text
        deadline = time.monotonic() + 30
        while b.ops.get("/readyz").status_code != 503:  # the loader finds ClickHouse gone
            assert time.monotonic() < deadline
            time.sleep(0.1)
        a.start()
        assert_exactly_once(b, [e["event_id"] for e in events])
        for response in (b.send(events[:50]), b.send(events[:50])):  # retries, after the load
            assert response.status_code == 200
        assert_exactly_once(b, [e["event_id"] for e in events])
    finally:
        b.stop()


def test_a_copy_another_gateway_stored_at_once_goes_with_its_rollup_rows(a: GatewayProcess, tmp_path: Path) -> None:
    # The race remove_duplicates repairs, made certain: a second copy stored (as by another gateway whose lookup
    # ran before B's insert), received a second later and with its ts 7 ms off (another request's sent_at), so
    # the touches rollup has the event at both instants; then the event loaded again by B, whose load removes
    # the later copy and its touch.
    event = make_event(ts=recent(0), url="https://a.example/offer?utm_source=newsletter")
    where = f"WHERE event_id = '{event['event_id']}'"
    b = server_mode(tmp_path / "b", a).start()
    try:
        assert b.send([event]).status_code == 200
        b.wait_for(f"SELECT count() FROM clicktrail.events {where}", 1)
        ts = a.rows(f"SELECT toString(ts) AS ts FROM clicktrail.events {where}")[0]["ts"]
        a.query("INSERT INTO clicktrail.events SELECT * REPLACE (ts + toIntervalMillisecond(7) AS ts,"
                f" received_at + toIntervalSecond(1) AS received_at) FROM clicktrail.events {where}")
        assert a.scalar(f"SELECT count() FROM clicktrail.events {where}") == 2
        assert a.scalar(f"SELECT count() FROM clicktrail.touches {where}") == 2
        assert b.send([event]).status_code == 200
        assert b.wait_for(f"SELECT count() = 1 FROM clicktrail.events {where}", 1) == 1
        b.drained_metrics()
        assert [r["ts"] for r in a.rows(f"SELECT toString(ts) AS ts FROM clicktrail.events {where}")] == [ts]
        assert [r["ts"] for r in a.rows(f"SELECT toString(ts) AS ts FROM clicktrail.touches FINAL {where}")] == [ts]
    finally:
        b.stop()


def test_the_same_batches_sent_to_three_gateways_at_once_are_stored_once(a: GatewayProcess, tmp_path: Path) -> None:
    # A's own loader and two server-mode gateways loading into A, each sent every batch (B twice).
    b, c = server_mode(tmp_path / "b", a).start(), server_mode(tmp_path / "c", a).start()
    events = [make_event(ts=recent(i)) for i in range(2000)]

    def send_all(gw: GatewayProcess) -> None:
        for i in range(0, len(events), 100):
            assert gw.send(events[i:i + 100], key="wk_b").status_code == 200

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send_all, (a, b, c, b)))
        stored = "SELECT uniqExact(event_id) = 2000 AND count() = 2000 FROM clicktrail.events WHERE site_id = 'site_b'"
        assert a.wait_for(stored, 1) == 1
        for gw in (a, b, c):
            gw.drained_metrics()
        assert a.scalar(stored) == 1 and a.scalar(DUPLICATES) == 0
    finally:
        b.stop()
        c.stop()
