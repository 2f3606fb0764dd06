"""Benchmark: event freshness (2xx to queryable) idle, under full batch load, and while analysts run heavy queries.

    python -m loadtests.bench_freshness [--analysts N] [--seconds S] [--rate R] [--quick]

A real gateway process (its default configuration: fsync "always", segments sealed after segment_max_age_ms)
takes R events/s (default 200) through ``POST /v1/batch``, in batches of R/10 every 100 ms, each event with its
own id. A probe asks the ClickHouse port every 100 ms which of the events acknowledged so far are stored; an
event's freshness is the time from its 2xx to the end of the first probe that saw it. The probe is an analyst's
query like any other, so its own latency is printed too: freshness is what a dashboard sees, queueing included.
The loader's own lag (/metrics' loader_lag_seconds: the age of the oldest event sealed and not yet in
ClickHouse, sampled every 100 ms) is printed beside it: what loading alone costs.

Three phases of S seconds each (default 30): idle (the probe alone); full batch load, wrk (as in
bench_ingest, so ``wrk`` must be installed) sending 50-event batches of another site over 16 connections as
fast as the gateway answers; then N analysts (default 4), each a clickhouse-connect client running heavy
queries back to back on the ClickHouse port (a 60-million-key ``uniqExact``, 2.5 s and 2 GB alone; a
300-million-row scan with a hash per row, 4 s alone), as the read-only analyst user. Printed per phase:
freshness p50, p95 and max, the probe's p50 and p95, the batch load's events/s, and the analysts' queries
per minute and their mean duration. Targets for freshness p95: 0.5 s idle, 1 s under full batch load, 5 s
with the analysts; flagged in the table and the final JSON line, not failed. Every acknowledged event (the
batch load's too) must be stored in the end, else the run fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import orjson

from gateway.config import ServerConfig
from loadtests.bench_ingest import BATCH, metric, wrk
from loadtests.gateway_process import GatewayProcess

#: Freshness p95 targets: idle, under full batch load, with the analysts.
IDLE_TARGET_S = 0.5
BATCH_TARGET_S = 1.0
FRESHNESS_TARGET_S = 5.0
#: wrk's connections for the batch load, as bench_ingest's batch run.
BATCH_CONNECTIONS = 16
PROBE_INTERVAL_S = 0.1
SEND_INTERVAL_S = 0.1
SITE, KEY = "site_a", "wk_a"
#: The analysts' workload, in turns: a memory-heavy and a CPU-heavy aggregation, 2.5 s and 4 s alone on 2 cores.
HEAVY = ("SELECT uniqExact(number) FROM numbers(60000000)",
         "SELECT max(sipHash64(number)) FROM numbers(300000000)")


@dataclass
class Phase:
    name: str
    fresh: list[float] = field(default_factory=list)  # each event's seconds from its 2xx to a probe seeing it
    events: int = 0
    probes: list[float] = field(default_factory=list)  # each probe's latency
    lags: list[float] = field(default_factory=list)  # the loader's lag (/metrics), sampled every 100 ms
    queries: list[float] = field(default_factory=list)  # each analyst query's duration
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    batch_eps: float = 0.0  # the batch load's events/s (wrk's 2xx answers)
    target_s: float = FRESHNESS_TARGET_S


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Run:
    """Events are numbered in the order of their 2xx: one sender, and the loader loads segments oldest first, so
    what is stored is always a prefix of them and the probe need only ask for the highest number stored."""

    def __init__(self, gw: GatewayProcess, rate: int) -> None:
        self.gw = gw
        self.per_batch = max(1, round(rate * SEND_INTERVAL_S))
        self.tag = "fresh-" + uuid.uuid4().hex[:8]
        self.stop_sending = threading.Event()
        self.stop_probing = threading.Event()
        self.lock = threading.Lock()
        self.phase = Phase("warm-up")
        self.acked: list[tuple[float, Phase]] = []  # by event number: when its 2xx came, in which phase
        self.seen = 0  # events 0 .. seen-1 are stored

    def sender(self) -> None:
        client = httpx.Client(base_url=self.gw.base, timeout=30)
        next_at = time.monotonic()
        while not self.stop_sending.is_set():
            first = len(self.acked)
            body = orjson.dumps({"batch": [{"event": "page_view", "event_id": f"{self.tag}-{n:09d}",
                                            "anonymous_id": self.tag, "url": "https://a.example/p?ch=fresh"}
                                           for n in range(first, first + self.per_batch)]})
            response = client.post("/v1/batch", content=body, headers={"X-Write-Key": KEY,
                                                                      "Content-Type": "application/json"})
            acked_at = time.monotonic()
            if response.status_code != 200 or response.json()["accepted"] != self.per_batch:
                raise RuntimeError(f"ingest refused a batch: {response.status_code} {response.text}")
            with self.lock:
                self.acked += [(acked_at, self.phase)] * self.per_batch
                self.phase.events += self.per_batch
            next_at += SEND_INTERVAL_S
            self.stop_sending.wait(max(0.0, next_at - time.monotonic()))

    def prober(self) -> None:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=self.gw.clickhouse_port, username="analyst",
                                               password="analyst-pw", compress=False, query_limit=0)
        while not self.stop_probing.is_set():
            started = time.monotonic()
            top = client.query("SELECT max(event_id) FROM clicktrail.events WHERE site_id = {s:String}"
                               " AND anonymous_id = {a:String}", parameters={"s": SITE, "a": self.tag}).result_rows
            done = time.monotonic()
            with self.lock:
                self.phase.probes.append(done - started)
                stored = int(top[0][0].rsplit("-", 1)[1]) + 1 if top and top[0][0] else 0
                for acked_at, phase in self.acked[self.seen:stored]:
                    phase.fresh.append(done - acked_at)
                self.seen = max(self.seen, stored)
            self.stop_probing.wait(PROBE_INTERVAL_S)

    def lag_sampler(self) -> None:
        """The loader's own view, which no analyst query stands in front of: /metrics' loader_lag_seconds."""
        while not self.stop_probing.is_set():
            for line in self.gw.ops.get("/metrics").text.splitlines():
                if line.startswith("clicktrail_loader_lag_seconds "):
                    with self.lock:
                        self.phase.lags.append(float(line.split()[1]))
            self.stop_probing.wait(PROBE_INTERVAL_S)

    def analyst(self, number: int, until: float, phase: Phase) -> None:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=self.gw.clickhouse_port, username="analyst",
                                               password="analyst-pw", compress=False, query_limit=0,
                                               send_receive_timeout=300)
        turn = number
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                client.query(HEAVY[turn % len(HEAVY)])
            except Exception as exc:  # counted and printed: a refused analyst query is a finding
                phase.failures.append(f"analyst query failed: {type(exc).__name__}: {str(exc)[:200]}")
            else:
                phase.queries.append(time.monotonic() - started)
            turn += 1

    def measure(self, name: str, seconds: float, target_s: float, analysts: int = 0, batches: bool = False) -> Phase:
        """One phase: the probe and ``analysts`` analysts, and with ``batches`` wrk's 50-event batches."""
        phase = Phase(name, target_s=target_s)
        with self.lock:
            self.phase = phase
        started = time.monotonic()
        workers = [threading.Thread(target=self.analyst, args=(i, started + seconds, phase), daemon=True)
                   for i in range(analysts)]
        if batches:
            workers.append(threading.Thread(target=self.batch_load, args=(round(seconds), phase), daemon=True))
        for worker in workers:
            worker.start()
        time.sleep(seconds)
        for worker in workers:
            worker.join()
        phase.seconds = time.monotonic() - started
        return phase

    def batch_load(self, seconds: int, phase: Phase) -> None:
        try:
            phase.batch_eps = wrk(self.gw.base, BATCH, seconds, BATCH_CONNECTIONS) * 50
        except SystemExit as exc:  # wrk got answers other than 2xx: a finding, printed with the phase
            phase.failures.append(f"batch load: {exc}")

    def drain(self, sender: threading.Thread, prober: threading.Thread, timeout: float) -> int:
        """Stop sending, let the probe see every event, then stop it; returns how many were acknowledged."""
        self.stop_sending.set()
        sender.join()
        with self.lock:
            self.phase = Phase("drain")
        deadline = time.monotonic() + timeout
        while self.seen < len(self.acked) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop_probing.set()
        prober.join()
        return len(self.acked)


def _row(phase: Phase) -> dict[str, Any]:
    fresh = sorted(phase.fresh)
    return {
        "phase": phase.name,
        "events": phase.events,
        "unseen": phase.events - len(fresh),
        "freshness_p50_s": round(_percentile(fresh, 50), 3),
        "freshness_p95_s": round(_percentile(fresh, 95), 3),
        "freshness_max_s": round(fresh[-1], 3) if fresh else None,
        "loader_lag_p95_s": round(_percentile(phase.lags, 95), 3),
        "loader_lag_max_s": round(max(phase.lags, default=float("nan")), 3),
        "probe_p50_s": round(_percentile(phase.probes, 50), 3),
        "probe_p95_s": round(_percentile(phase.probes, 95), 3),
        "analyst_queries_per_min": round(len(phase.queries) / phase.seconds * 60, 1) if phase.seconds else 0,
        "analyst_query_mean_s": round(statistics.fmean(phase.queries), 2) if phase.queries else None,
        "failures": len(phase.failures),
        "batch_events_per_s": round(phase.batch_eps),
        "target_s": phase.target_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_freshness", description=__doc__.split("\n")[0])
    parser.add_argument("--analysts", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=200, help="events per second")
    parser.add_argument("--quick", action="store_true", help="10 s phases")
    args = parser.parse_args(argv)
    seconds = 10.0 if args.quick else args.seconds
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="bench_freshness_") as tmp:
        # GatewayProcess seals segments after 200 ms for the tests' sake: this measures the shipped default.
        gw = GatewayProcess(Path(tmp), segment_max_age_ms=ServerConfig().segment_max_age_ms).start()
        try:
            run = Run(gw, args.rate)
            sender = threading.Thread(target=run.sender, daemon=True)
            prober = threading.Thread(target=run.prober, daemon=True)
            sampler = threading.Thread(target=run.lag_sampler, daemon=True)
            for thread in (sender, prober, sampler):
                thread.start()
            time.sleep(3)  # warm-up: the first segments, connections
            phases = [run.measure("idle", seconds, IDLE_TARGET_S),
                      run.measure("full batch load", seconds, BATCH_TARGET_S, batches=True),
                      run.measure(f"{args.analysts} analysts", seconds, FRESHNESS_TARGET_S, analysts=args.analysts)]
            acked = run.drain(sender, prober, 120)
            sampler.join()
            stored = gw.scalar(f"SELECT count() FROM clicktrail.events WHERE anonymous_id = '{run.tag}'")
            # wrk's batches (bench_ingest's) go to site_b; the probe's events to site_a.
            batch_acked = int(metric(gw, 'clicktrail_events_accepted_total{site="site_b"}'))
            batch_stored = gw.wait_for("SELECT count() FROM clicktrail.events WHERE site_id = 'site_b'", batch_acked,
                                       timeout=300)
        finally:
            gw.stop()
    rows = [_row(p) for p in phases]
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    for phase in phases:
        for failure in sorted(set(phase.failures))[:3]:
            print(f"{phase.name}: {failure}")
    ok = True
    for row in rows:
        met = row["freshness_p95_s"] <= row["target_s"] and row["unseen"] == 0
        ok = ok and met
        print(f"freshness p95, {row['phase']}: {row['freshness_p95_s']} s (target <= {row['target_s']:g} s): "
              + ("ok" if met else "MISSED"))
    print(json.dumps({"phases": rows, "target_met": ok, "acked": acked, "stored": stored,
                      "batch_acked": batch_acked, "batch_stored": batch_stored}))
    if stored < acked or batch_stored != batch_acked:
        print(f"FAIL: {acked} acknowledged events and {batch_acked} of the batch load, ClickHouse holds {stored} and"
              f" {batch_stored}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
