"""Several processes on the ingest port (server.processes): acceptors spool, one owner loads (gateway/processes.py).

Real processes throughout: events from many clients, spread by the kernel over the acceptors, land exactly once and
the views answer as the plain-Python reference says; an acceptor killed with SIGKILL loses nothing it acknowledged
and is started again; a gateway killed whole loads at its next start what its acceptors had spooled, with the
same or another number of processes; each acceptor's spool refuses events when full and takes them again once
the owner has loaded it; /readyz and /metrics speak for all the processes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway import config
from tests.analytics import reference
from tests.analytics.generate import generate
from tests.analytics.harness import RULES, SECRET_KEYS, assert_rows_equal
from tests.conftest import COUNT_ALL, GatewayProcess, assert_exactly_once, make_event

Factory = Callable[..., GatewayProcess]


def metric(gw: GatewayProcess, name: str) -> float:
    for line in gw.ops.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def segments(gw: GatewayProcess, suffix: str = "") -> list[Path]:
    """The spool segments in the gateway's spool and its acceptors' (``suffix``: only sealed or only open ones)."""
    spool = gw.directory / "data" / "spool"
    return [p for p in [*spool.glob("*"), *spool.glob("[0-9]*/*")] if p.suffix in ((suffix,) if suffix else (
        ".seg", ".open"))]


class Clients:
    """Threads, each with a client of its own (so connections of their own, which the kernel spreads over the
    acceptors), sending batches of fresh events until stopped; a batch that gets no answer or a 503 is sent
    again, whole, as an SDK does. Only what got a 200 counts as acknowledged."""

    def __init__(self, gw: GatewayProcess, threads: int, batch: int = 20) -> None:
        self.gw, self.batch = gw, batch
        self.acked: list[str] = []
        self.retries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.gw.base, timeout=10) as client:
            while not self._stop.is_set():
                events = [make_event() for _ in range(self.batch)]
                while True:
                    try:
                        response = client.post("/v1/batch", content=orjson.dumps({"batch": events}),
                                               headers={"X-Write-Key": "wk_b"})
                        if response.status_code == 200:
                            break
                        assert response.status_code == 503, response.text
                    except httpx.TransportError:
                        pass
                    with self._lock:
                        self.retries += 1
                    time.sleep(0.05)
                with self._lock:
                    self.acked += [e["event_id"] for e in events]

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} events acknowledged"
            time.sleep(0.05)


def test_many_clients_land_exactly_once_over_three_acceptors_and_the_views_answer(new_gateway: Factory) -> None:
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    data = generate(11, int(now.timestamp() * 1000))
    gw = new_gateway(processes=3).start()
    assert sorted(gw.acceptors()) == [1, 2, 3]

    def deliver(part: list[tuple[str, list[dict[str, Any]]]]) -> None:
        with httpx.Client(base_url=gw.base, timeout=30) as client:  # connections of its own
            for site_id, batch in part:
                response = client.post("/v1/batch", content=orjson.dumps({"batch": batch}),
                                       headers={"X-Write-Key": SECRET_KEYS[site_id]})
                assert response.status_code == 200 and not response.json()["rejected"], response.text

    # 8 clients in parallel, each with every 8th delivery: one person's events go through several acceptors, and
    # the generator's repeated deliveries (an SDK's retries) mostly through another one than the first time.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(deliver, [data.deliveries[i::8] for i in range(8)]))
    unique = len(data.events)
    assert gw.wait_for(COUNT_ALL, unique) == unique
    time.sleep(0.5)  # a repeat loaded in a later insert would show now
    assert gw.scalar(COUNT_ALL) == unique
    got = gw.rows("SELECT site_id, anonymous_id, person_id, toUnixTimestamp64Milli(identified_at) AS identified_at"
                  " FROM clicktrail.identities")
    assert_rows_equal(got, reference.identities(data.events), ("site_id", "anonymous_id"))
    got = gw.rows("SELECT site_id, person_id, toUnixTimestamp64Milli(ts) AS ts, channel, sharer"
                  " FROM clicktrail.touch_channels")
    want = [t._asdict() for t in reference.touches(data.events, RULES)]
    assert sorted(tuple(r.values()) for r in got) == sorted(tuple(r.values()) for r in want)
    got = gw.rows("SELECT * EXCEPT (first_ts, last_ts), toUnixTimestamp64Milli(first_ts) AS first_ts,"
                  " toUnixTimestamp64Milli(last_ts) AS last_ts FROM clicktrail.live_stream_stats")
    assert_rows_equal(got, reference.live_stream_stats(data.events), ("site_id", "stream_id"))

    # SIGTERM: the acceptors seal their spools and exit first, then the owner loads what is left and exits.
    pids = [p.pid for p in gw.acceptors().values()]
    assert gw.stop() == 0
    assert not segments(gw)
    assert '"acceptor 1 stopped; its spool is sealed"' in gw.log() and all(
        not Path(f"/proc/{pid}").exists() for pid in pids)


def test_an_acceptor_killed_loses_nothing_it_acknowledged_and_is_started_again(new_gateway: Factory) -> None:
    gw = new_gateway(processes=2).start()
    victim = gw.acceptors()[1]
    with Clients(gw, threads=6) as clients:
        clients.wait_for(3000)
        victim.send_signal(signal.SIGKILL)
        acked = len(clients.acked)
        clients.wait_for(acked + 3000)  # the other acceptor, then both, go on taking events
        deadline = time.monotonic() + 30
        while (again := gw.acceptors().get(1)) is None or again.pid == victim.pid:
            assert time.monotonic() < deadline, "the killed acceptor was not started again"
            time.sleep(0.1)
        clients.wait_for(len(clients.acked) + 2000)
    assert_exactly_once(gw, clients.acked)
    assert '"acceptor 1 exited (signal 9); starting it again' in gw.log()
    deadline = time.monotonic() + 30
    while gw.ops.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, gw.ops.get("/readyz").text
        time.sleep(0.1)


def test_a_gateway_killed_whole_loads_at_its_next_start_what_its_acceptors_had_spooled(tmp_path: Path) -> None:
    """The owner is killed while ClickHouse is stalled, so the spools hold events: its acceptors see it gone and
    stop; the next start loads them, with 2 processes again, then with 1 (which takes over data/spool/<n>)."""
    directory, acked = tmp_path / "gw", []
    for processes in (2, 1):
        gw = GatewayProcess(directory, module="tests.faults", processes=processes)
        try:
            gw.start()
            assert_exactly_once(gw, acked)
            if processes == 1:
                break
            (directory / "faults").mkdir(exist_ok=True)
            (directory / "faults" / "stall").touch()
            with Clients(gw, threads=4) as clients:
                clients.wait_for(2000)
            acked += clients.acked
            assert metric(gw, "clicktrail_spool_bytes") > 0
            acceptors = list(gw.acceptors().values())
            gw.kill()
            for acceptor in acceptors:  # they notice, seal their spools and exit
                acceptor.wait(30)
            assert segments(gw, ".seg") and not segments(gw, ".open")
            (directory / "faults" / "stall").unlink()
        finally:
            if gw.proc is not None:
                gw.stop()
    assert not segments(gw)


def test_a_full_spool_refuses_in_its_acceptor_until_the_owner_has_loaded_it(new_gateway: Factory) -> None:
    gw = new_gateway(module="tests.faults", processes=2, spool_max_bytes=200_000)
    (gw.directory / "faults").mkdir()
    stall = gw.directory / "faults" / "stall"
    stall.touch()
    gw.start()

    def send() -> httpx.Response:  # a connection of its own each time: the kernel spreads them over the acceptors
        return httpx.post(f"{gw.base}/v1/batch", content=orjson.dumps({"batch": [make_event() for _ in range(20)]}),
                          headers={"X-Write-Key": "wk_b"}, timeout=10)

    statuses = [send().status_code for _ in range(120)]
    assert set(statuses) == {200, 503} and statuses[-10:] == [503] * 10, statuses
    # Both acceptors took events (and hold them: the owner's inserts are stalled), and both are full now.
    assert {p.parent.name for p in segments(gw)} == {"1", "2"}
    ready = gw.ops.get("/readyz")
    assert ready.status_code == 503 and ready.json()["problems"]["spool"].count("spool holds") == 2, ready.text
    assert metric(gw, "clicktrail_spool_refusing") == 2
    stall.unlink()
    # Once the owner has loaded them, each acceptor counts its spool down from its directory and takes events again.
    deadline = time.monotonic() + 30
    while (response := send()).status_code != 200 or gw.ops.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
    assert gw.drained_metrics()


def test_readyz_and_metrics_speak_for_every_process(new_gateway: Factory) -> None:
    gw = new_gateway(processes=2).start()
    assert gw.ops.get("/readyz").json() == {"acceptors": True, "spool": True, "committer": True, "sealer": True,
                                            "storage": True, "loader": True}
    sent = 0
    with ThreadPoolExecutor(4) as pool:  # clients with connections of their own, over both acceptors
        for response in pool.map(lambda _: gw.send([make_event() for _ in range(25)], key="wk_c"), range(40)):
            assert response.status_code == 200
            sent += 25
    lines = gw.drained_metrics()
    assert f'clicktrail_events_accepted_total{{site="site_c"}} {sent}' in lines
    assert "clicktrail_processes_up 2.0" in lines and "clicktrail_loaded_rows_total 1000" in lines
    # An acceptor that does not answer (stopped) fails /readyz, and names itself, until it answers again.
    frozen = gw.acceptors()[2]
    frozen.suspend()
    try:
        ready = gw.ops.get("/readyz")
        assert ready.status_code == 503 and "acceptor 2 does not answer" in ready.json()["problems"]["acceptors"]
        assert metric(gw, "clicktrail_processes_up") == 1
    finally:
        frozen.resume()
    assert gw.ops.get("/readyz").status_code == 200


def test_in_server_mode_each_process_loads_its_own_spool(new_gateway: Factory) -> None:
    """Gateway B in server mode with 2 processes writes to A's ClickHouse (tests/test_server_backend.py): each
    process is a whole gateway with a spool and a loader of its own, and B's owner only supervises."""
    a = new_gateway().start()
    b = new_gateway(processes=2, clickhouse={"mode": "server", "urls": [f"http://127.0.0.1:{a.clickhouse_port}"],
                                             "user": "admin", "password": "admin-pw"}).start()
    with Clients(b, threads=4) as clients:
        clients.wait_for(2000)
    assert_exactly_once(a, clients.acked)
    lines = b.drained_metrics()
    assert "clicktrail_processes_up 2.0" in lines and "clicktrail_clickhouse_up 1.0" in lines
    assert metric(b, "clicktrail_loaded_rows_total") >= len(clients.acked)  # a retried batch may load twice
    assert b.ops.get("/readyz").status_code == 200
    assert b.stop() == 0


@pytest.mark.parametrize(("server", "error"), [
    ("processes = 0", "Expected `int` >= 1"),
    ("processes = 2\nops_port = 0", "processes = 2 needs an ops_port"),
])
def test_bad_processes_settings_get_clear_errors(tmp_path: Path, server: str, error: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\n{server}\n[[sites]]\nid = "s"\nwrite_key = "k"\n')
    with pytest.raises(config.ConfigError, match=error):
        config.load(path)


def test_one_process_is_the_gateway_as_before(new_gateway: Factory) -> None:
    gw = new_gateway().start()
    assert gw.acceptors() == {}
    event = make_event()
    assert gw.send([event]).status_code == 200
    assert_exactly_once(gw, [event["event_id"]])
    assert "acceptors" not in gw.ops.get("/readyz").json()
