"""Nothing acknowledged is lost or counted twice: duplicates, kill -9 under load, ClickHouse away, shutdown."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.conftest import COUNT_ALL, DUPLICATES, GatewayProcess, assert_exactly_once, make_event
from tests.traffic import Load


def test_duplicate_sends_are_stored_once(gateway: GatewayProcess) -> None:
    events = [make_event() for _ in range(20)]
    for _ in range(3):
        assert gateway.send(events).status_code == 200
    repeated_inside = make_event()
    assert gateway.send([repeated_inside, repeated_inside]).json()["accepted"] == 2
    # The same event_id on another site is another event.
    assert gateway.send(events[:1], key="wk_b").status_code == 200
    ids = ",".join(f"'{e['event_id']}'" for e in [*events, repeated_inside])
    sql = f"SELECT count() FROM clicktrail.events WHERE event_id IN ({ids})"
    assert gateway.wait_for(sql, 22) == 22
    time.sleep(1.5)  # later segments of the repeats have loaded too
    assert gateway.scalar(sql) == 22
    assert gateway.scalar(DUPLICATES) == 0


def _kill_under_load(gw: GatewayProcess, seconds: float) -> list[str]:
    """kill -9 the gateway while it takes load; the ids of the events it acknowledged before dying."""
    acked: list[str] = []
    with Load(gw, acked):
        time.sleep(seconds)
        gw.kill()
    assert len(acked) > 500, "the load did not get going"
    return acked


def test_kill_9_under_load_loses_nothing_acknowledged(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway().start()
    acked: list[str] = []
    for round_ in range(2):
        acked += _kill_under_load(gw, 2.5)
        gw.start()
        # The kill left events in the spool that had not reached ClickHouse: the restart must load them.
        assert gw.log().count("from before this start; loading them") == round_ + 1
        assert_exactly_once(gw, acked)


def test_kill_9_with_interval_fsync(new_gateway: Callable[..., GatewayProcess]) -> None:
    # write() before the answer survives the death of the process even without an fsync per request.
    gw = new_gateway(fsync="interval").start()
    acked = _kill_under_load(gw, 2)
    gw.start()
    assert_exactly_once(gw, acked)


def _hold_clickhouse(data_dir: Path) -> subprocess.Popen[str]:
    """Another process opens the gateway's ClickHouse directory, so the gateway cannot (chDB allows one)."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import chdb, sys; c = chdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.readline()",
         str(data_dir / "clickhouse")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_clickhouse_unavailable_then_back(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway()
    holder = _hold_clickhouse(gw.directory / "data")
    try:
        gw.start(wait_ready=False)
        ready = gw.ops.get("/readyz")
        assert ready.status_code == 503 and ready.json()["storage"] is False
        events = [make_event() for _ in range(200)]
        for i in range(0, 200, 50):
            assert gw.send(events[i:i + 50]).status_code == 200
        time.sleep(1.0)
        assert 'clicktrail_clickhouse_up 0' in gw.ops.get("/metrics").text
    finally:
        holder.communicate("\n", timeout=30)
    assert gw.wait_for(COUNT_ALL, 200) == 200
    # The rows are queryable as soon as the insert commits, a moment before the loader reports its success.
    deadline = time.monotonic() + 10
    while (ready := gw.ops.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.05)
    assert gw.scalar(DUPLICATES) == 0
    metrics = gw.drained_metrics(timeout=10)
    assert 'clicktrail_events_accepted_total{site="site_a"} 200' in metrics
    assert "clicktrail_loaded_rows_total 200" in metrics


def test_full_spool_answers_503_and_keeps_what_it_acknowledged(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(spool_max_bytes=60_000)
    holder = _hold_clickhouse(gw.directory / "data")
    acked: list[str] = []
    try:
        gw.start(wait_ready=False)
        refused = None
        for _ in range(100):
            batch = [make_event(props={"pad": "x" * 500}) for _ in range(10)]
            response = gw.send(batch)
            if response.status_code != 200:
                refused = response
                break
            acked.extend(e["event_id"] for e in batch)
        assert refused is not None and refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"].startswith("storage: events cannot be made durable now")
        assert gw.ops.get("/readyz").json()["spool"] is False
    finally:
        holder.communicate("\n", timeout=30)
    assert_exactly_once(gw, acked)
    assert gw.send([make_event()]).status_code == 200  # room again once loaded


def test_events_after_a_restart_are_stored_too(new_gateway: Callable[..., GatewayProcess]) -> None:
    # A restart with an empty spool numbers segments from 0 again; nothing may mistake them for old ones.
    gw = new_gateway().start()
    for round_ in range(1, 4):
        assert gw.send([make_event() for _ in range(10)]).status_code == 200
        assert gw.wait_for(COUNT_ALL, 10 * round_) == 10 * round_
        gw.stop()
        gw.start()
    time.sleep(1)
    assert gw.scalar(COUNT_ALL) == 30


def test_sigterm_flushes_and_exits_cleanly(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(segment_max_age_ms=60_000).start()  # nothing seals by age: shutdown must do it
    events = [make_event() for _ in range(100)]
    assert gw.send(events).status_code == 200
    assert gw.stop() == 0
    spool = gw.directory / "data" / "spool"
    assert not list(spool.glob("*.seg")) and not list(spool.glob("*.open")), "shutdown left events unloaded"
    gw.start()
    assert gw.scalar(COUNT_ALL) == 100


def test_a_segment_clickhouse_cannot_read_is_set_aside_and_the_rest_loads(
        new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway()
    spool = gw.directory / "data" / "spool"
    spool.mkdir(parents=True)
    good = [{"site_id": "site_a", "event_id": f"good-{i}", "event": "page_view", "ts": 1795000000.5 + i,
             "received_at": 1795000001.0, "anonymous_id": "a"} for i in range(3)]
    # A segment written by a broken or older gateway: a time ClickHouse cannot parse.
    (spool / "000000000000.seg").write_bytes(orjson.dumps({**good[0], "event_id": "bad", "ts": "soon"}) + b"\n")
    (spool / "000000000001.seg").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in good))
    gw.start(wait_ready=False)
    assert gw.wait_for("SELECT count() FROM clicktrail.events WHERE event_id LIKE 'good-%'", 3) == 3
    # The good rows are queryable as soon as they commit; the suspect is loaded piece by piece after them.
    deadline = time.monotonic() + 10
    while "clicktrail_quarantined_segments_total 1" not in gw.ops.get("/metrics").text.splitlines():
        assert time.monotonic() < deadline, "the unreadable segment was not set aside"
        time.sleep(0.05)
    assert gw.scalar("SELECT count() FROM clicktrail.events WHERE event_id = 'bad'") == 0
    assert (spool / "quarantine" / "000000000000.seg").exists()
