"""No fault stops ingest silently: each background part survives its step's failure, says so in
/readyz and /metrics, recovers once the fault clears, and nothing acknowledged is lost or doubled.
Under load, other clients stay as fast as before the fault (tests/traffic.py); a disk that fills up
is a real one, a small tmpfs.

Faults are switched on and off from outside while a real gateway runs (tests/faults.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import MiB
from gateway.warehouse.loader import POISON_ATTEMPTS
from tests.conftest import GatewayProcess, assert_exactly_once, make_event
from tests.traffic import Load, assert_latency_kept, probe

Factory = Callable[..., GatewayProcess]


def faulty(new_gateway: Factory, **server: Any) -> GatewayProcess:
    gw = new_gateway(module="tests.faults", **server)
    (gw.directory / "faults").mkdir()
    return gw.start()


@contextlib.contextmanager
def fault(gw: GatewayProcess, name: str) -> Iterator[None]:
    switch = gw.directory / "faults" / name
    switch.touch()
    try:
        yield
    finally:
        switch.unlink()


def send(gw: GatewayProcess, acked: list[str], batches: int = 5, **fields: Any) -> list[httpx.Response]:
    """Send 10-event batches; record the ids of those acknowledged (2xx)."""
    responses = []
    for _ in range(batches):
        events = [make_event(**fields) for _ in range(10)]
        response = gw.send(events, timeout=30)
        if response.is_success:
            acked += [e["event_id"] for e in events]
        responses.append(response)
    return responses


def readiness(gw: GatewayProcess) -> httpx.Response:
    return gw.ops.get("/readyz")


def internal_errors(gw: GatewayProcess, part: str) -> int:
    prefix = f'clicktrail_internal_errors_total{{part="{part}"}} '
    lines = [line for line in gw.ops.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return int(lines[0].removeprefix(prefix)) if lines else 0


def until(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def not_ready_because(gw: GatewayProcess, part: str) -> bool:
    response = readiness(gw)
    return response.status_code == 503 and part in response.json().get("problems", {})


def assert_recovers(gw: GatewayProcess, acked: list[str]) -> None:
    """Once the fault is gone: ready again, new events accepted, everything acknowledged loaded once."""
    send(gw, acked, batches=2)
    assert_exactly_once(gw, acked)
    until(lambda: readiness(gw).status_code == 200, what="/readyz to answer 200 again")


@pytest.mark.parametrize("small_segments", [False, True], ids=["seal-by-age", "seal-inside-a-commit"])
def test_renames_refused_while_sealing(new_gateway: Factory, small_segments: bool) -> None:
    # Small segments are sealed by size inside the group commit; the others by age, by the timer.
    gw = faulty(new_gateway, **({"segment_max_bytes": 3000} if small_segments else {}))
    acked: list[str] = []
    send(gw, acked)
    with fault(gw, "rename"):
        during = send(gw, acked)
        assert all(r.status_code == 200 for r in during), [r.text for r in during]  # the writes succeed
        until(lambda: not_ready_because(gw, "sealer"), what="/readyz to report the sealer")
        assert internal_errors(gw, "sealer") > 0
        send(gw, acked)
    assert_recovers(gw, acked)
    assert "sealer failed" in gw.log() and "sealer recovered" in gw.log()


@pytest.mark.parametrize("step", ["write", "fsync"])
def test_write_and_fsync_failures_answer_503_and_recover(new_gateway: Factory, step: str) -> None:
    gw = faulty(new_gateway)
    acked: list[str] = []
    send(gw, acked)
    with fault(gw, step):
        refused = send(gw, acked, batches=3)
        assert {r.status_code for r in refused} == {503}
        assert all(int(r.headers["retry-after"]) > 0 for r in refused)
        assert all(r.json()["error"].startswith("storage: events cannot be made durable now") for r in refused)
        assert not_ready_because(gw, "committer")
        assert internal_errors(gw, "committer") >= 3
    assert_recovers(gw, acked)


def test_a_hung_disk_answers_503_within_the_bound(new_gateway: Factory) -> None:
    gw = faulty(new_gateway, commit_timeout_s=1.0)
    acked: list[str] = []
    send(gw, acked)
    with fault(gw, "hang"):
        started = time.monotonic()
        (response,) = send(gw, acked, batches=1)
        waited = time.monotonic() - started
        assert response.status_code == 503 and "did not confirm the write within 1s" in response.json()["error"]
        assert waited < 10, f"a request waited {waited:.1f}s on a hung disk"
        assert not_ready_because(gw, "committer")
    # The timed-out batch may or may not have reached the disk: a client retry would be deduplicated.
    assert_recovers(gw, acked)


@pytest.mark.parametrize("step", ["listing", "insert"], ids=["spool-listing-EMFILE", "unexpected-clickhouse-error"])
def test_loader_faults_delay_loading_and_are_reported(new_gateway: Factory, step: str) -> None:
    gw = faulty(new_gateway)
    acked: list[str] = []
    send(gw, acked)
    with fault(gw, step):
        during = send(gw, acked)
        assert all(r.status_code == 200 for r in during)  # the spool keeps accepting
        until(lambda: not_ready_because(gw, "loader"), what="/readyz to report the loader")
        assert internal_errors(gw, "loader") > 0
    assert_recovers(gw, acked)


def test_a_stuck_loader_is_reported_once_its_lag_passes_the_bound(new_gateway: Factory) -> None:
    gw = faulty(new_gateway, max_loader_lag_s=1.0)
    acked: list[str] = []
    with fault(gw, "stall"):
        send(gw, acked)
        until(lambda: not_ready_because(gw, "loader"), what="/readyz to report the loader's lag")
        assert "more than 1s" in readiness(gw).json()["problems"]["loader"]
        assert internal_errors(gw, "loader") == 0  # nothing failed: it is stuck, and that is visible too
    assert_recovers(gw, acked)


def test_rows_clickhouse_always_refuses_are_set_aside_and_the_rest_loads(new_gateway: Factory) -> None:
    gw = faulty(new_gateway)
    with fault(gw, "poison"):
        acked: list[str] = []
        poison = make_event(event_id="poison-1")
        good = [make_event() for _ in range(30)]
        assert gw.send([*good[:15], poison, *good[15:]]).json()["accepted"] == 31
        acked += [e["event_id"] for e in good]
        send(gw, acked)  # later segments are not held up behind it
        assert_exactly_once(gw, acked)
        until(lambda: readiness(gw).status_code == 200, what="/readyz to recover")
    assert gw.scalar("SELECT count() FROM clicktrail.events WHERE event_id = 'poison-1'") == 0
    quarantined = list((gw.directory / "data" / "spool" / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].read_bytes().count(b"\n") == 1
    assert b'"event_id":"poison-1"' in quarantined[0].read_bytes()
    assert "clicktrail_quarantined_rows_total 1" in gw.ops.get("/metrics").text.splitlines()


def test_an_enrichment_failure_stores_the_event_unenriched(new_gateway: Factory) -> None:
    gw = faulty(new_gateway)
    acked: list[str] = []
    with fault(gw, "enrich"):
        assert {r.status_code for r in send(gw, acked, batches=2)} == {200}
    assert_exactly_once(gw, acked)
    assert internal_errors(gw, "enrichment") == 2
    assert gw.scalar("SELECT countIf(browser = '') FROM clicktrail.events") == 20


def test_an_unexpected_exception_in_a_request_is_a_503_to_retry(new_gateway: Factory) -> None:
    gw = faulty(new_gateway)
    acked: list[str] = []
    with fault(gw, "accept"):
        (response,) = send(gw, acked, batches=1)
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        assert response.json() == {"error": "gateway: internal error; retry later"}
    assert internal_errors(gw, "request") == 1
    assert_recovers(gw, acked)


def test_a_spool_directory_that_refuses_changes_for_a_while(new_gateway: Factory, tmp_path: Path) -> None:
    """The fault as an operator's machine makes it, no injection: the spool folder made immutable
    (no new segment, no rename) for a few seconds, then writable again."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs root and a file system with attributes)")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    gw = new_gateway().start()
    spool = gw.directory / "data" / "spool"
    acked: list[str] = []
    send(gw, acked)
    subprocess.run(["chattr", "+i", str(spool)], check=True)
    try:
        until(lambda: not_ready_because(gw, "sealer"), what="/readyz to report the sealer")
        during = send(gw, acked)
        time.sleep(2)  # timers fire, retries fail, requests keep coming
        during += send(gw, acked)
        assert {r.status_code for r in during} <= {200, 503}
        assert not_ready_because(gw, "sealer")
    finally:
        subprocess.run(["chattr", "-i", str(spool)], check=True)
    assert_recovers(gw, acked)


# -- ClickHouse away, and kill -9, under load --------------------------------------------------------


@pytest.mark.parametrize("step", ["insert", "stall"], ids=["inserts-refused", "inserts-hang"])
def test_clickhouse_away_under_load_keeps_clients_fast_and_loses_nothing(new_gateway: Factory, step: str) -> None:
    """ClickHouse unavailable for minutes, shortened: what the loader does (back off up to 30 s, or wait on a
    hung insert) is the same after seconds as after minutes, and the spool takes events meanwhile."""
    gw = faulty(new_gateway, max_loader_lag_s=1.0)
    acked: list[str] = []
    with Load(gw, acked, pause=0.01) as load:
        before = probe(gw, acked)
        with fault(gw, step):
            until(lambda: not_ready_because(gw, "loader"), what="/readyz to report the loader")
            during = probe(gw, acked)
    assert set(load.statuses) == {200}, load.statuses
    assert_latency_kept(before, during, "while ClickHouse takes no inserts")
    assert_recovers(gw, acked)


def test_a_restart_after_kill_9_loads_the_backlog_while_clients_stay_fast(new_gateway: Factory) -> None:
    """kill -9 under load with a backlog waiting in the spool (ClickHouse was stalled): the restarted gateway
    loads it while it serves, and a probe client right after the restart is as fast as before the kill."""
    gw = faulty(new_gateway)
    acked: list[str] = []
    with Load(gw, acked, pause=0.01):
        before = probe(gw, acked)
    acked_before = len(acked)
    with fault(gw, "stall"), Load(gw, acked) as load:
        until(lambda: len(acked) > acked_before + 20_000, what="a backlog to build up")
        gw.kill()
        # Each client's next request finds the gateway gone (one between two requests when the kill came would
        # otherwise stop unbroken, and the kill would not be shown to have come mid-load).
        until(lambda: load.broken == 4, what="every client to find the gateway gone")
    assert set(load.statuses) == {200}
    gw.start()
    with Load(gw, acked, pause=0.01):
        during = probe(gw, acked)
    assert "from before this start; loading them" in gw.log()
    assert_latency_kept(before, during, "while the restart loads the backlog kill -9 left")
    assert_exactly_once(gw, acked)


# -- a disk that fills up ---------------------------------------------------------------------------

#: The small disk's size, and the free space the gateway keeps on it for ClickHouse.
DISK_MIB = 64
HEADROOM = 16 * MiB
#: Events of 2 KB, compressible: the spool fills the disk fast, and ClickHouse stores them in little room.
PADDED: dict[str, Any] = {"name": "note", "props": {"text": "x" * 2000}}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MIB mounted for the test (as root; skipped where mounting is not permitted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield disk
    finally:
        # Lazily, so that a process still holding a file there (a gateway not yet gone) cannot fail the teardown.
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def on_small_disk(new_gateway: Factory, disk: Path) -> GatewayProcess:
    return faulty(new_gateway, data_dir=str(disk / "data"), min_free_disk_bytes=HEADROOM,
                  segment_max_bytes=2 * MiB)


def free_bytes(disk: Path) -> int:
    stat = os.statvfs(disk)
    return stat.f_bavail * stat.f_frsize


def test_a_filling_disk_refuses_events_with_room_left_for_clickhouse_and_recovers_by_itself(
        small_disk: Path, new_gateway: Factory) -> None:
    gw = on_small_disk(new_gateway, small_disk)
    acked: list[str] = []
    # ClickHouse takes nothing meanwhile, so that the spool fills the disk, as in an outage or a burst the
    # loader cannot keep up with.
    with fault(gw, "stall"):
        with Load(gw, acked, **PADDED) as load:
            until(lambda: load.statuses[503] > 20, what="the gateway to refuse events")
        assert set(load.statuses) == {200, 503}, load.statuses  # no other 5xx, no error of the client's
        # Less only by the requests under way when it began to refuse.
        assert free_bytes(small_disk) > HEADROOM - MiB, "the spool ate ClickHouse's headroom"
        refused = gw.send([make_event(**PADDED) for _ in range(50)])  # as large as the batches refused
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        assert "min_free_disk_bytes" in refused.json()["error"]
        assert "MiB free on disk" in readiness(gw).json()["problems"]["spool"]
        assert "clicktrail_spool_refusing 1.0" in gw.ops.get("/metrics").text.splitlines()
    # No operator: the loader moves the spool into ClickHouse, deleting its segments, and ingest resumes.
    with Load(gw, acked, **PADDED) as load:
        until(lambda: load.statuses[200] > 0, what="ingest to resume by itself")
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert_exactly_once(gw, acked)
    assert "NOT_ENOUGH_SPACE" not in gw.log()  # the room kept was enough for every insert
    until(lambda: readiness(gw).status_code == 200, what="/readyz to answer 200 again")
    assert "clicktrail_spool_refusing 0.0" in gw.ops.get("/metrics").text.splitlines()


def fill(disk: Path) -> Path:
    """A file that takes every free byte of ``disk``."""
    ballast = disk / "ballast"
    with ballast.open("wb", buffering=0) as f:
        for chunk in (MiB, 4096):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return ballast


def test_an_insert_clickhouse_has_no_room_for_keeps_its_segments_for_later(
        small_disk: Path, new_gateway: Factory) -> None:
    gw = on_small_disk(new_gateway, small_disk)
    acked: list[str] = []
    with fault(gw, "stall"):
        send(gw, acked)
        ballast = fill(small_disk)  # something else filled the disk: ClickHouse cannot reserve room
    until(lambda: internal_errors(gw, "loader") > POISON_ATTEMPTS, what="inserts to fail")
    assert "NOT_ENOUGH_SPACE" in readiness(gw).json()["problems"]["loader"]
    spool = small_disk / "data" / "spool"
    assert list(spool.glob("*.seg")), "the segments left the spool"
    ballast.unlink()
    assert_recovers(gw, acked)
    # Failing for want of room made no segment a suspect: nothing was loaded piece by piece nor set aside.
    assert "piece by piece" not in gw.log() and not (spool / "quarantine").exists()
