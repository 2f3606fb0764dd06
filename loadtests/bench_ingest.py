"""Benchmark: the gateway's ingest against the ceiling of its HTTP stack, measured in the same run.

    python -m loadtests.bench_ingest [--quick] [--seconds N] [--batch-seconds M] [--processes P]

wrk (Debian's ``wrk``; ``apt-get install wrk``) drives, from its own process and one thread:

- the ceiling: a no-op Starlette endpoint on uvicorn (uvloop, httptools) that reads the body and
  answers a fixed JSON, the most any Starlette service can do here;
- the gateway, single-event requests (``POST /v1/event``), with ``fsync = "always"`` (the default:
  each group commit is fsynced before the answer) and ``fsync = "interval"``;
- the gateway, 50-event batches (``POST /v1/batch``), for ``--batch-seconds`` (default: ``--seconds``;
  60 for the sustained end-to-end figure).

The gateways run the shipped configuration but for fsync. Each event has a unique event_id; after the batch
run, every accepted event must be in ClickHouse exactly once (else the run fails). Printed: requests/s and
the ratio to the ceiling; batch events/s accepted, and loaded (the events accepted over the seconds from the
batch run's start until ClickHouse held them all) with the loader's largest lag meanwhile (/metrics, sampled
every 250 ms); the loader's insert rate (rows per second of insert time, dedup included); the gateway's peak
RSS, and its peak private (anonymous) memory: the rest of the RSS is mostly chDB's 550 MB library mapped from
the page cache (about 220 MB of it resident, shared and clean, as in any process that opens chDB). The last
line is a JSON object. Loopback only; every run is bounded by its length.

``--processes P`` (P > 1) runs the gateways with ``server.processes = P`` (P acceptors and their owner, which
loads) and the ceiling with ``uvicorn --workers P``; memory is then summed over the processes, and the batch run
also prints each acceptor's share of the acceptors' CPU time (how evenly SO_REUSEPORT spread wrk's connections),
and the ceiling's workers' (uvicorn's workers share one inherited socket). The batch run prints the CPU time
(user and system) the gateway's processes spent per event, from the run's start until ClickHouse held them all:
the acceptors' and the owner's (its loader) apart. Unlike events/s, that hardly depends on what else runs on the
machine, and it says what each more core buys: events/s per acceptor core = 1e6 / acceptors' us per event.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import ServerConfig
from loadtests.gateway_process import GatewayProcess, free_port

EVENT = ('{"event":"live_heartbeat","event_id":"%s","anonymous_id":"a-1","url":"https://www.example.com/live?ch=wx",'
         '"props":{"stream_id":"webinar-12","view_id":"v-1","mode":"live","watched_ms":10000}}')

# wrk scripts: every event gets an id no other request of the run has.
HEADER = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Write-Key"] = "wk_b"
local n = 0
local tag = "TAG"
"""
SINGLE = HEADER + """
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/event", nil, string.format('EVENT', tag .. "-" .. n))
end
"""
BATCH = HEADER + """
request = function()
  local events = {}
  for i = 1, 50 do
    n = n + 1
    events[i] = string.format('EVENT', tag .. "-" .. n)
  end
  return wrk.format(nil, "/v1/batch", nil, '{"batch":[' .. table.concat(events, ",") .. ']}')
end
"""


async def _noop(request: Request) -> Response:
    await request.body()
    return Response(b'{"accepted":1,"rejected":[]}', media_type="application/json")


#: The ceiling: what Starlette on uvicorn does with no work at all.
noop = Starlette(routes=[Route("/v1/event", _noop, methods=["POST"]), Route("/v1/batch", _noop, methods=["POST"])])


def wrk(url: str, script: str, seconds: int, connections: int) -> float:
    """Requests per second that got a 2xx; a run with any other answer fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        # wrk seeds Lua's random alike in every run, so the run's unique tag comes from here.
        lua.write(script.replace("EVENT", EVENT).replace("TAG", uuid.uuid4().hex))
        lua.flush()
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", lua.name, url],
                             capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk got errors:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def ceiling(seconds: int, processes: int) -> tuple[float, list[float]]:
    """The no-op server's requests/s, and its workers' shares of their CPU time (with several)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "loadtests.bench_ingest:noop", "--port", str(port),
                               "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                               *(["--workers", str(processes)] if processes > 1 else [])])
    try:
        _wait_listening(port)
        workers = _workers(server.pid, processes) if processes > 1 else []
        before = [w.cpu_times().user + w.cpu_times().system for w in workers]
        rps = wrk(f"http://127.0.0.1:{port}", SINGLE, seconds, 32)
        return rps, _shares([w.cpu_times().user + w.cpu_times().system - b for w, b in zip(workers, before,
                                                                                             strict=True)])
    finally:
        server.terminate()
        server.wait()


def _workers(pid: int, count: int) -> list[psutil.Process]:
    """uvicorn's worker processes (it binds the port before it starts them)."""
    for _ in range(100):
        workers = [p for p in psutil.Process(pid).children() if "spawn_main" in " ".join(p.cmdline())]
        if len(workers) == count:
            time.sleep(1)  # their startup's CPU time is not the run's
            return workers
        time.sleep(0.1)
    raise SystemExit("uvicorn's workers did not start")


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _shares(seconds: list[float]) -> list[float]:
    total = sum(seconds)
    return [round(s / total, 3) for s in seconds] if total else []


def _wait_listening(port: int) -> None:
    import socket

    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("the no-op server did not start")


def metric(gw: GatewayProcess, name: str) -> float:
    for line in gw.ops.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def memory_mb(gw: GatewayProcess, field: str) -> float:
    """A memory figure of the gateway's /proc status: VmHWM (peak RSS), RssAnon (private memory now); summed over
    its processes (with ``processes`` above 1)."""
    assert gw.proc is not None
    total = 0.0
    for pid in [gw.proc.pid, *(p.pid for p in gw.acceptors().values())]:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    return total


class Watch(threading.Thread):
    """Samples the loader's lag and the gateway's private memory every 250 ms until stopped; keeps the highest."""

    def __init__(self, gw: GatewayProcess) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.lag_s = 0.0
        self.private_mb = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.lag_s = max(self.lag_s, metric(self.gw, "clicktrail_loader_lag_seconds"))
            self.private_mb = max(self.private_mb, memory_mb(self.gw, "RssAnon"))

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def batch_run(gw: GatewayProcess, seconds: int) -> dict[str, float]:
    """50-event batches for ``seconds``, then until ClickHouse holds every accepted event (exactly once)."""
    accepted_total = 'clicktrail_events_accepted_total{site="site_b"}'
    before = int(metric(gw, accepted_total))  # the single-event run's
    watch = Watch(gw)
    watch.start()
    assert gw.proc is not None
    owner, acceptors = psutil.Process(gw.proc.pid), list(gw.acceptors().values())
    owner_cpu, cpu = _cpu(owner), [_cpu(p) for p in acceptors]
    started = time.monotonic()
    eps = wrk(gw.base, BATCH, seconds, 16) * 50
    shares = _shares([_cpu(p) - c for p, c in zip(acceptors, cpu, strict=True)])
    accepted = -1
    while (now := int(metric(gw, accepted_total))) != accepted:
        accepted = now  # requests wrk left in flight are still answered after it stops
        time.sleep(0.2)
    stored = gw.wait_for("SELECT count() FROM clicktrail.events", accepted, timeout=300)
    loaded_s = time.monotonic() - started
    # CPU time per event from the run's start until all are loaded: what a core does, whatever else runs here.
    owner_us, acceptors_us = [(spent * 1e6 / max(1, stored - before)) for spent in (
        _cpu(owner) - owner_cpu, sum(_cpu(p) for p in acceptors) - sum(cpu))]
    watch.stop()
    rss = memory_mb(gw, "VmHWM")  # before the check, whose uniqExact of every id takes memory of its own
    if stored != accepted or gw.scalar("SELECT uniqExact(event_id) FROM clicktrail.events") != stored:
        raise SystemExit(f"accepted {accepted} events, ClickHouse holds {stored}")
    inserted = metric(gw, "clicktrail_loaded_rows_total") / metric(gw, "clicktrail_insert_seconds_sum")
    return {"batch_eps": eps, "batch_seconds": seconds, "acceptor_cpu_shares": shares,
            "loaded_eps": (stored - before) / loaded_s, "loaded_after_s": loaded_s - seconds,
            "loader_lag_max_s": watch.lag_s, "loader_rows_per_s": inserted, "rss_mb": rss,
            "rss_private_mb": watch.private_mb, "cpu_us_per_event_owner": owner_us,
            "cpu_us_per_event_acceptors": acceptors_us}


def gateway_runs(seconds: int, batch_seconds: int, processes: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        for fsync in ("interval", "always"):
            # GatewayProcess seals segments after 200 ms for the tests' sake: this measures the shipped default.
            gw = GatewayProcess(root / fsync, fsync=fsync, processes=processes,
                                segment_max_age_ms=ServerConfig().segment_max_age_ms).start()
            try:
                results[f"single_rps_{fsync}"] = wrk(gw.base, SINGLE, seconds, 32)
                if fsync == "always":
                    results.update(batch_run(gw, batch_seconds))
            finally:
                gw.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3-second runs")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--batch-seconds", type=int, help="length of the batch run (default: --seconds)")
    parser.add_argument("--processes", type=int, default=1, help="server.processes of the gateways, and the "
                                                                 "ceiling's uvicorn workers")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    seconds = 3 if args.quick else args.seconds
    rps, ceiling_shares = ceiling(seconds, args.processes)
    result: dict[str, Any] = {"processes": args.processes, "ceiling_rps": rps, "ceiling_cpu_shares": ceiling_shares,
                              **gateway_runs(seconds, args.batch_seconds or seconds, args.processes)}
    result["single_rps"] = result["single_rps_always"]
    result["single_ratio"] = result["single_rps"] / result["ceiling_rps"]
    c = result["ceiling_rps"]
    print(f"{'no-op Starlette (ceiling)':<40}{c:>12,.0f} req/s")
    for fsync in ("always", "interval"):
        rps = result[f"single_rps_{fsync}"]
        print(f"{f'gateway, single events, fsync={fsync}':<40}{rps:>12,.0f} req/s  {rps / c:5.2f}x ceiling")
    print(f"{'gateway, 50-event batches, fsync=always':<40}{result['batch_eps']:>12,.0f} events/s accepted"
          f" over {result['batch_seconds']} s")
    print(f"{'  and loaded into ClickHouse':<40}{result['loaded_eps']:>12,.0f} events/s: all in"
          f" {result['loaded_after_s']:.1f} s after the run; loader lag at most {result['loader_lag_max_s']:.1f} s")
    print(f"{'loader into embedded ClickHouse':<40}{result['loader_rows_per_s']:>12,.0f} rows/s of insert time")
    if args.processes == 1:
        print(f"{'CPU per batch event, one process':<40}{result['cpu_us_per_event_owner']:>12.1f} us")
    print(f"{'gateway peak RSS':<40}{result['rss_mb']:>12,.0f} MB; private memory at most"
          f" {result['rss_private_mb']:,.0f} MB")
    if args.processes > 1:
        print(f"{'CPU per batch event, acceptors (sum)':<40}{result['cpu_us_per_event_acceptors']:>12.1f} us;"
              f" owner (loader) {result['cpu_us_per_event_owner']:.1f} us")
        print(f"{'CPU shares: acceptors (SO_REUSEPORT)':<40}{result['acceptor_cpu_shares']}")
        print(f"{'  uvicorn workers (one shared socket)':<40}{result['ceiling_cpu_shares']}")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
