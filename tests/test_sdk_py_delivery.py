"""The Python SDK against real gateway processes: delivery into ClickHouse, refusals, outages, exit and fork."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import clicktrail
import pytest

from tests.conftest import GatewayProcess, free_port
from tests.test_durability import _hold_clickhouse

DUPLICATES = ("SELECT count() FROM (SELECT site_id, event_id FROM clicktrail.events "
              "GROUP BY site_id, event_id HAVING count() > 1)")
# Retries this quick would hammer a gateway that asked for patience: only Retry-After slows them.
IMPATIENT: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.02, "max_retries": 1000}


def marker() -> str:
    """An anonymous_id unique to one test, to find its rows."""
    return "sdk-" + uuid.uuid4().hex[:12]


def count(anonymous_id: str) -> str:
    return f"SELECT count() FROM clicktrail.events WHERE anonymous_id = '{anonymous_id}'"


def metric(gw: GatewayProcess, sample: str) -> float:
    """One sample of the gateway's /metrics, e.g. 'clicktrail_events_rejected_total{reason="rate_limited"}'."""
    for line in gw.ops.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


ACCEPTED_A = 'clicktrail_events_accepted_total{site="site_a"}'


def _ms(value: str) -> int:
    return round(datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp() * 1000)


# --- delivery ------------------------------------------------------------------------------------


def test_every_call_arrives_in_clickhouse(gateway: GatewayProcess) -> None:
    anon = marker()
    at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # 1795428000000 ms
    with clicktrail.Client("sk_a", host=gateway.base, strict=True) as client:
        client.page(anonymous_id=anon, url="https://e.com/live?ch=poster_3&sharer=emp_7", title="发布会")
        client.track("webinar_poll", anonymous_id=anon, props={"answer": "B", "n": 3}, channel="wx", ts=at)
        client.identify("u-1", traits={"company": "Acme"}, anonymous_id=anon)
        client.registration("live-1", anonymous_id=anon, props={"source": "crm"})
        client.live_heartbeat("live-1", "v-1", 30000, mode="replay", position_s=12.5, anonymous_id=anon)
        client.lead_stage("u-1", "won", 1200.5, reason="framework agreement", anonymous_id=anon, event_id="crm-deal-9")
    assert client.stats() == clicktrail.Stats(sent=6)
    assert gateway.wait_for(count(anon), 6) == 6
    rows = {r["event"]: r for r in gateway.rows(
        f"SELECT event, event_id, user_id, channel, sharer, title, props, ts FROM clicktrail.events "
        f"WHERE anonymous_id = '{anon}'")}
    assert {e: json.loads(r["props"]) for e, r in rows.items()} == {
        "page_view": {},
        "webinar_poll": {"answer": "B", "n": 3},
        "identify": {"traits": {"company": "Acme"}},
        "registration": {"source": "crm", "stream_id": "live-1"},
        "live_heartbeat": {"stream_id": "live-1", "view_id": "v-1", "mode": "replay", "watched_ms": 30000,
                           "position_s": 12.5},
        "lead_stage": {"stage": "won", "amount": 1200.5, "reason": "framework agreement"},
    }
    assert (rows["page_view"]["channel"], rows["page_view"]["sharer"], rows["page_view"]["title"]) \
        == ("poster_3", "emp_7", "发布会")
    assert rows["webinar_poll"]["channel"] == "wx"
    assert abs(_ms(rows["webinar_poll"]["ts"]) - 1795428000000) < 1000  # the gateway adds the few ms of skew
    assert rows["lead_stage"]["user_id"] == "u-1" and rows["lead_stage"]["event_id"] == "crm-deal-9"
    assert all(len(r["event_id"]) == 32 for e, r in rows.items() if e != "lead_stage")


def test_batches_are_split_by_count_and_bytes(gateway: GatewayProcess) -> None:
    # 1200 events of ~2 KB: 2.4 MB, more than four bodies of 512 KB and two batches of 500.
    anon = marker()
    with clicktrail.Client("sk_a", host=gateway.base, strict=True, max_queue_size=2000) as client:
        for i in range(1200):
            client.track("padded", anonymous_id=anon, props={"i": i, "pad": "p" * 2000})
    assert client.stats() == clicktrail.Stats(sent=1200)
    assert gateway.wait_for(count(anon), 1200) == 1200


def test_many_threads_share_one_client(gateway: GatewayProcess) -> None:
    anon = marker()
    ids: list[str | None] = []
    client = clicktrail.Client("sk_a", host=gateway.base, strict=True, max_queue_size=10_000)

    def send() -> None:
        ids.extend(client.track("threaded", anonymous_id=anon) for _ in range(1500))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(30)
    assert client.stats() == clicktrail.Stats(sent=6000)
    assert gateway.wait_for(count(anon), 6000) == 6000
    rows = gateway.rows(f"SELECT event_id FROM clicktrail.events WHERE anonymous_id = '{anon}'")
    stored = {r["event_id"] for r in rows}
    assert stored == set(ids)
    client.shutdown()


def test_sync_mode_has_delivered_when_the_call_returns(gateway: GatewayProcess) -> None:
    client = clicktrail.Client("sk_a", host=gateway.base, strict=True, sync_mode=True)
    before = metric(gateway, ACCEPTED_A)
    for n in range(1, 4):
        client.track("sync", anonymous_id=marker())
        assert metric(gateway, ACCEPTED_A) == before + n  # a 2xx means durable: counted before the answer
    assert client.stats() == clicktrail.Stats(sent=3)
    client.shutdown()


def test_the_module_level_client(gateway: GatewayProcess) -> None:
    anon = marker()
    clicktrail.init("sk_a", host=gateway.base, strict=True)
    clicktrail.track("module", anonymous_id=anon)
    clicktrail.lead_stage("u-2", "mql", anonymous_id=anon)
    assert clicktrail.flush(10)
    assert clicktrail.default_client().stats() == clicktrail.Stats(sent=2)
    clicktrail.shutdown()
    assert clicktrail.track("module", anonymous_id=anon) is None  # shut down: dropped, counted
    assert clicktrail.default_client().stats().dropped == 1
    assert gateway.wait_for(count(anon), 2) == 2


# --- refusals --------------------------------------------------------------------------------------


def test_per_event_rejections_are_reported(gateway: GatewayProcess) -> None:
    # validate=False stands in for an SDK whose copy of the contract is older than the gateway's.
    anon = marker()
    failures: list[clicktrail.Failure] = []
    with clicktrail.Client("sk_a", host=gateway.base, validate=False, on_error=failures.append) as client:
        ok = client.registration("live-1", anonymous_id=anon)
        no_stream = client.track("registration", anonymous_id=anon, props={"channel": "x"})
        bad_stage = client.lead_stage("u-1", "customer", anonymous_id=anon)  # type: ignore[arg-type]
        assert client.flush(10)
        # A batch with no valid event gets 400, with the same per-event errors.
        only_bad = client.track("download", anonymous_id=anon, props={})
    assert ok and no_stream and bad_stage and only_bad
    assert sorted(failures) == sorted([
        clicktrail.Failure(no_stream, "props.stream_id: required"),
        clicktrail.Failure(bad_stage,
                           "props.stage: must be one of lead, mql, sal, sql, opportunity, won, lost, nurture"),
        clicktrail.Failure(only_bad, "props.file_url: required"),
    ])
    assert client.stats() == clicktrail.Stats(sent=1, rejected=3)
    assert gateway.wait_for(count(anon), 1) == 1


def test_a_refused_key_is_final(gateway: GatewayProcess) -> None:
    failures: list[clicktrail.Failure] = []
    unauthorized = 'clicktrail_events_rejected_total{reason="unauthorized"}'
    before = metric(gateway, unauthorized)
    with clicktrail.Client("sk_nope", host=gateway.base, on_error=failures.append, **IMPATIENT) as client:
        ids = [client.track("nope", anonymous_id=marker()) for _ in range(3)]
    assert client.stats() == clicktrail.Stats(failed=3)
    assert failures == [clicktrail.Failure(i, "HTTP 401: key: unknown write key") for i in ids]  # type: ignore[arg-type]
    assert metric(gateway, unauthorized) == before + 1  # one request, never retried


def test_retry_after_is_honoured_on_429(gateway: GatewayProcess) -> None:
    # 'limited' takes 5 events/s with bursts of 10: the second batch of 10 is told to come back later.
    anon = marker()
    limited = 'clicktrail_events_rejected_total{reason="rate_limited"}'
    before = metric(gateway, limited)
    client = clicktrail.Client("wk_limited", host=gateway.base, strict=True, batch_size=10, **IMPATIENT)
    for _ in range(20):
        client.track("limited", anonymous_id=anon)
    assert client.flush(30)
    refusals = metric(gateway, limited) - before
    # With retries every 10-20 ms the gateway would have counted dozens of 429s.
    assert 1 <= refusals <= 3
    assert client.stats() == clicktrail.Stats(sent=20, retries=int(refusals))
    assert gateway.wait_for(count(anon), 20) == 20
    received = sorted(_ms(r["received_at"]) for r in gateway.rows(
        f"SELECT received_at FROM clicktrail.events WHERE anonymous_id = '{anon}'"))
    assert received[-1] - received[0] >= 1000  # Retry-After is at least one second
    client.shutdown()


def test_503_retry_after_then_delivered(new_gateway: Callable[..., GatewayProcess]) -> None:
    """A full spool (ClickHouse held by another process) answers 503; the SDK waits it out, losing nothing."""
    gw = new_gateway(spool_max_bytes=60_000)
    unavailable = 'clicktrail_events_rejected_total{reason="unavailable"}'
    holder = _hold_clickhouse(gw.directory / "data")
    try:
        gw.start(wait_ready=False)
        client = clicktrail.Client("sk_a", host=gw.base, strict=True, batch_size=10, **IMPATIENT)
        ids = [client.track("padded", anonymous_id="a", props={"pad": "x" * 500}) for _ in range(200)]
        deadline = time.monotonic() + 30
        while metric(gw, unavailable) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(gw, unavailable) >= 1
    finally:
        holder.communicate("\n", timeout=30)
    assert client.flush(60)
    assert client.stats().failed == 0 and client.stats().sent == 200
    assert metric(gw, unavailable) <= 4  # Retry-After: 5 s each time, not a retry every 10 ms
    assert gw.wait_for("SELECT count() FROM clicktrail.events", 200) == 200
    assert {r["event_id"] for r in gw.rows("SELECT event_id FROM clicktrail.events")} == set(ids)
    assert gw.scalar(DUPLICATES) == 0
    client.shutdown()


# --- outages and the queue bound -------------------------------------------------------------------


def test_gateway_down_then_back_loses_nothing(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway().start()
    client = clicktrail.Client("sk_a", host=gw.base, strict=True, batch_size=50, max_queue_size=1000,
                               backoff=0.05, backoff_max=0.3, max_retries=1000)
    ids = [client.track("outage", anonymous_id="a") for _ in range(100)]
    assert client.flush(10)
    gw.stop()
    queued_from = time.time() * 1000
    ids += [client.track("outage", anonymous_id="a", props={"i": i}) for i in range(400)]
    queued_until = time.time() * 1000
    deadline = time.monotonic() + 10
    while client.stats().retries < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.stats().retries >= 3
    time.sleep(3)  # 3 s of outage at least: a stale sent_at would shift ts by as much
    restarted = time.time() * 1000
    gw.start()
    assert client.flush(30)
    assert client.stats() == clicktrail.Stats(sent=500, retries=client.stats().retries)
    assert gw.wait_for("SELECT count() FROM clicktrail.events", 500) == 500
    rows = {r["event_id"]: r for r in gw.rows("SELECT event_id, ts, received_at FROM clicktrail.events")}
    assert set(rows) == set(ids)
    assert gw.scalar(DUPLICATES) == 0
    late = [rows[i] for i in ids[100:]]
    assert all(_ms(r["received_at"]) >= restarted for r in late)
    # ts is when track() was called, not when the gateway got it: sent_at is fresh on each attempt. The
    # margin (half the outage) is the request's own transit, which a loaded machine stretches.
    assert all(queued_from - 50 <= _ms(r["ts"]) <= queued_until + 1500 for r in late)
    client.shutdown()


def test_a_full_queue_drops_the_newest_and_counts(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway()  # not started yet: every request fails to connect
    failures: list[clicktrail.Failure] = []
    client = clicktrail.Client("sk_a", host=gw.base, batch_size=10, max_queue_size=50, on_error=failures.append,
                               backoff=0.05, backoff_max=0.2, max_retries=1000)
    ids = [client.track("overflow", anonymous_id="a", props={"i": i}) for i in range(10)]
    deadline = time.monotonic() + 10
    while client.stats().retries == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The first batch of 10 is in flight, retrying; the queue takes 50 more; the 140 after those are dropped.
    ids += [client.track("overflow", anonymous_id="a", props={"i": i}) for i in range(10, 200)]
    assert ids[60:] == [None] * 140 and None not in ids[:60]
    assert [f.error for f in failures] == ["queue: full"] * 140
    assert client.stats().dropped == 140
    gw.start()
    assert client.flush(30)
    assert client.stats() == clicktrail.Stats(sent=60, dropped=140, retries=client.stats().retries)
    assert gw.wait_for("SELECT count() FROM clicktrail.events", 60) == 60
    assert {r["event_id"] for r in gw.rows("SELECT event_id FROM clicktrail.events")} == set(ids[:60])
    client.shutdown()


def test_block_waits_for_room_instead_of_dropping(gateway: GatewayProcess) -> None:
    anon = marker()
    with clicktrail.Client("sk_a", host=gateway.base, strict=True, batch_size=5, max_queue_size=5, block=10) as client:
        for _ in range(300):
            client.track("blocking", anonymous_id=anon)
    assert client.stats() == clicktrail.Stats(sent=300)
    assert gateway.wait_for(count(anon), 300) == 300


# --- exit and fork ---------------------------------------------------------------------------------


def run_python(code: str, *args: str, timeout: float = 60,
               warnings: str = "default") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", warnings, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)


EXIT_SCRIPT = """
import sys, clicktrail
host, anon = sys.argv[1], sys.argv[2]
# flush_interval of a minute and batches larger than what is sent: only the exit hook can send these.
clicktrail.init("sk_a", host=host, strict=True, flush_interval=60)
for i in range(25):
    clicktrail.track("at_exit", anonymous_id=anon, props={"i": i})

def let_go():
    client = clicktrail.Client("sk_a", host=host, strict=True, flush_interval=60)
    for i in range(25):
        client.track("at_exit", anonymous_id=anon, props={"i": i, "client": "dropped"})

let_go()
"""


def test_events_are_flushed_at_interpreter_exit(gateway: GatewayProcess) -> None:
    anon = marker()
    done = run_python(EXIT_SCRIPT, gateway.base, anon)
    assert (done.returncode, done.stderr) == (0, "")
    assert gateway.wait_for(count(anon), 50) == 50


def test_exit_is_bounded_when_the_gateway_is_unreachable() -> None:
    code = """
import sys, clicktrail
client = clicktrail.Client("sk_a", host=sys.argv[1], shutdown_timeout=1)  # default retries: over a minute
for i in range(10):
    client.track("unreachable", anonymous_id="a")
"""
    started = time.monotonic()
    done = run_python(code, f"http://127.0.0.1:{free_port()}", timeout=30)
    assert done.returncode == 0
    assert time.monotonic() - started < 10
    assert "clicktrail: gave up on 10 events: shut down before delivery: connection:" in done.stderr


FORK_SCRIPT = """
import os, sys, clicktrail
host, anon = sys.argv[1], sys.argv[2]
client = clicktrail.Client("sk_a", host=host, strict=True, flush_interval=60)
for i in range(10):
    client.track("forked", anonymous_id=anon, props={"who": "parent-before"})  # queued, and the thread started
pid = os.fork()
if pid == 0:
    for i in range(10):
        client.track("forked", anonymous_id=anon, props={"who": "child"})
    print("child flushed", client.flush(10), flush=True)
    for i in range(5):
        client.track("forked", anonymous_id=anon, props={"who": "child-at-exit"})
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
for i in range(10):
    client.track("forked", anonymous_id=anon, props={"who": "parent-after"})
"""


def test_fork_gives_the_child_its_own_thread_and_queue(gateway: GatewayProcess) -> None:
    anon = marker()
    before = metric(gateway, ACCEPTED_A)
    # Python 3.12+ warns about fork() in a process with threads; the warning is not what is tested.
    done = run_python(FORK_SCRIPT, gateway.base, anon, warnings="ignore::DeprecationWarning")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == ["child flushed True", "child exit 0"]
    assert gateway.wait_for(count(anon), 35) == 35
    who = gateway.rows(f"SELECT JSONExtractString(props, 'who') AS who, count() AS n FROM clicktrail.events "
                       f"WHERE anonymous_id = '{anon}' GROUP BY who ORDER BY who")
    assert who == [{"who": "child", "n": 10}, {"who": "child-at-exit", "n": 5},
                   {"who": "parent-after", "n": 10}, {"who": "parent-before", "n": 10}]
    # The child did not send the parent's queue again (the gateway would have deduplicated it, but counted it).
    assert metric(gateway, ACCEPTED_A) == before + 35


# --- the wire --------------------------------------------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """An HTTP server that records each request and answers like a gateway accepting everything."""
    seen: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(({k.lower(): v for k, v in self.headers.items()} | {"path": self.path}, body))
            answer = json.dumps({"accepted": len(json.loads(gzip.decompress(body))["batch"]), "rejected": []}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/prefix", seen
    server.shutdown()
    server.server_close()


def test_wire_format(recorder: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    host, seen = recorder
    started = time.time() * 1000
    with clicktrail.Client("sk_secret", host=host, strict=True) as client:
        ids = [client.track("wire", anonymous_id="a", props={"i": i, "pad": "p" * 1500}) for i in range(700)]
    assert client.stats() == clicktrail.Stats(sent=700)
    sent: list[str] = []
    for headers, body in seen:
        assert headers["path"] == "/prefix/v1/batch"
        assert (headers["x-write-key"], headers["content-encoding"], headers["content-type"]) \
            == ("sk_secret", "gzip", "application/json")
        envelope = json.loads(gzip.decompress(body))
        assert len(gzip.decompress(body)) <= 512 * 1024 and 1 <= len(envelope["batch"]) <= 500
        assert started <= envelope["sent_at"] <= time.time() * 1000
        sent += [e["event_id"] for e in envelope["batch"]]
    assert len(seen) >= 3  # 700 events of ~1.6 KB: over 1 MB, so at least three bodies
    assert sent == ids  # in order, each once
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).hex == i for i in ids)
