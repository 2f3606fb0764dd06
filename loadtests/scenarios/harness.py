"""Runs one locust scenario against a running gateway and measures it: locust headless in processes of its own,
bounded in time and on 127.0.0.1 only; meanwhile the workers' ledgers are read, events sampled for freshness and
the CPU of the gateway and of each locust worker sampled; afterwards, once the loader has caught up, every event
the gateway acknowledged is looked up in ClickHouse, where it must be exactly once.

Never imports locust: locust patches the standard library with gevent on import, and this module runs in the
benchmark's process and in the tests'.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.config import ServerConfig
from loadtests.bench_ingest import memory_mb, metric
from loadtests.gateway_process import GatewayProcess, free_port
from loadtests.scenarios.ledger import ID_SQL, Reader, Request, event_id, merge

HERE = Path(__file__).resolve().parent
TICK_S = 0.1
#: A run's spans of acknowledged events are checked this many at a time, so a query stays well within ClickHouse's
#: max_query_size (256 KiB) even when failures broke the sequence numbers into many spans.
SPANS_PER_QUERY = 4000
#: After locust exits, the gateway seals its last segment within segment_max_age_ms (250 ms by default).
SEAL_S = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    locustfile: str
    site: str
    users: int  # the default
    ramp_s: float  # how long locust takes to spawn the users (0: all at once)
    what: str


SCENARIOS = {
    "webinar": Scenario("webinar.py", "site_b", 5000, 10.0, "a live webinar: viewers register, join, heartbeat "
                        "every 10 s, interact and leave"),
    "content": Scenario("content_site.py", "site_a", 1000, 10.0, "a content site: page views through channel codes, "
                        "reading, downloads, forms, text/plain batches of up to 15"),
    "backend": Scenario("backend_sdk.py", "site_c", 8, 0.0, "backend SDKs: gzipped 500-event batches with the "
                        "secret key, back to back"),
}


def gateway_settings(users: int) -> dict[str, Any]:
    """What the gateway needs to hold ``users`` browsers: they all come from 127.0.0.1, where real ones each have an
    address of their own, so the per-address limit is off; each keeps its connection alive (a heartbeat every 10 s,
    within the 15 s keep-alive), so max_connections must fit them all. The loader runs at its default pace (not
    at the tests' quicker one that GatewayProcess sets)."""
    return {"max_connections_per_address": 0, "max_connections": max(8192, users + 256),
            "segment_max_age_ms": ServerConfig().segment_max_age_ms}


@dataclass
class Check:
    """Every acknowledged event looked up in ClickHouse."""

    acked: int = 0
    missing: int = 0  # acknowledged, not stored
    duplicated: int = 0  # acknowledged, stored more than once
    stored: int = 0  # rows of the run in ClickHouse
    stored_distinct: int = 0

    @property
    def ok(self) -> bool:
        return self.acked > 0 and self.missing == 0 and self.duplicated == 0 and self.stored == self.stored_distinct


@dataclass
class Tally:
    """What the ledgers said so far."""

    requests: int = 0
    events_acked: int = 0
    events_rejected: int = 0  # refused one by one in a 2xx: a scenario sending what the contract refuses
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # status or exception, for every answer but a 2xx
    acked: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))  # by worker pid
    first_sent: float = float("inf")
    last_answered: float = 0.0

    def add(self, request: Request) -> None:
        self.requests += 1
        self.latencies.append(request.latency_s)
        self.first_sent = min(self.first_sent, request.answered_at - request.latency_s)
        self.last_answered = max(self.last_answered, request.answered_at)
        if 200 <= request.status < 300:
            acked = sum(end - first for first, end in request.acked)
            self.acked[request.pid] += [(first, end) for first, end in request.acked]
            self.events_acked += acked
            self.events_rejected += request.events - acked
        else:
            self.errors[str(request.status) if request.status else request.error] += 1


@dataclass
class Report:
    scenario: str
    users: int
    processes: int
    seconds: float  # from the first request sent to the last answer
    requests: int
    requests_per_s: float
    events: int  # acknowledged
    events_per_s: float
    rejected: int  # events refused one by one in a 2xx
    latency_ms: dict[str, float]  # p50, p95, p99 of every request
    errors: dict[str, int]
    freshness_s: dict[str, float]  # p50, p95 of the samples, from the 2xx to a probe seeing the event
    freshness_samples: int
    freshness_unseen: int
    #: Connection attempts the kernel dropped from a full accept queue during the load (machine-wide: TcpExt
    #: ListenOverflows); each costs its client a SYN retransmit, 1 s and more.
    listen_overflows: int
    rss_start_mb: float
    rss_peak_mb: float
    #: The highest private (anonymous) memory sampled during the load: the rest of the RSS is mostly chDB's library,
    #: mapped from the page cache (see bench_ingest).
    private_peak_mb: float
    gateway_cpu: float  # cores busy, over the load
    locust_cpu_max: float  # the busiest locust process, in cores: near 1.0 means the load generator was the limit
    #: The machine's 1-minute load average as the load ended, and its cores: a load above the cores means processes,
    #: the gateway among them, waited for a CPU (other work on a shared machine shows here).
    load_average: float
    cores: int
    check: Check

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "check": {**asdict(self.check), "ok": self.check.ok}}


class Run:
    """One scenario's run: its locust processes, what their ledgers say, its freshness samples and its check. Each
    run's event ids start with a prefix of its own, so runs can share a gateway (the tests run three at once)."""

    def __init__(self, gw: GatewayProcess, name: str, users: int, seconds: float, processes: int, directory: Path,
                 options: tuple[str, ...] = ()) -> None:
        self.gw = gw
        self.name = name
        self.scenario = SCENARIOS[name]
        self.users, self.seconds, self.processes, self.options = users, seconds, processes, options
        self.prefix = uuid.uuid4().hex[:8]
        self.directory = directory / f"{name}-{self.prefix}"
        self.directory.mkdir(parents=True)
        self.reader = Reader(self.directory)
        self.tally = Tally()
        self.samples: dict[str, float] = {}  # event_id -> when its 2xx came, until a probe sees it
        self.fresh: list[float] = []
        self.sampled = 0
        self.cpu: dict[int, tuple[float, float, float, float]] = {}  # pid -> first (wall, cpu s), last (wall, cpu s)
        self.private_mb = 0.0
        self.query = httpx.Client(base_url=f"http://127.0.0.1:{gw.clickhouse_port}", auth=("admin", "admin-pw"),
                                  timeout=120)

    def locust(self) -> list[subprocess.Popen[bytes]]:
        """locust's processes: the master first (it alone runs without workers when ``processes`` is 0).

        Workers are started here rather than forked by ``--processes``, whose parent interrupts them 3 s after the
        run time: viewers still leaving then (5,000 at once when a webinar ends) would lose their answers."""
        ramp = min(self.scenario.ramp_s, self.seconds / 4)
        port = free_port()
        common = [sys.executable, "-m", "locust", "-f", str(HERE / self.scenario.locustfile), "--stop-timeout", "10",
                  "--ledger", str(self.directory), "--event-prefix", self.prefix, "--live-after-s", f"{ramp:g}",
                  *self.options]
        master = [*common, "--headless", "--only-summary", "--exit-code-on-error", "0", "--host", self.gw.base,
                  "--users", str(self.users), "--spawn-rate", str(self.users / ramp if ramp else self.users),
                  "--run-time", f"{self.seconds:g}s"]
        # The master and its workers talk over 127.0.0.1, on a port of this run (locust's default binds every address).
        workers = ["--master-host", "127.0.0.1", "--master-port", str(port)]
        commands = [master]
        if self.processes:
            master += ["--master", "--expect-workers", str(self.processes), "--master-bind-host", "127.0.0.1",
                       "--master-bind-port", str(port)]
            commands += [[*common, "--worker", *workers]] * self.processes
        with (self.directory / "locust.log").open("wb") as log:
            return [subprocess.Popen(command, cwd=HERE.parent.parent, stdout=log, stderr=subprocess.STDOUT)
                    for command in commands]

    def execute(self) -> Report:
        assert self.gw.proc is not None
        rss_start = memory_mb(self.gw, "VmRSS")
        overflows = _listen_overflows()
        processes = self.locust()
        deadline = time.monotonic() + self.seconds + 60  # locust's start, its stop timeout and its summary
        try:
            while any(process.poll() is None for process in processes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"locust did not stop:\n{self.locust_log()}")
                self.tick([self.gw.proc.pid, *(process.pid for process in processes)])
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
        if any(process.returncode for process in processes):
            raise RuntimeError(f"locust exited with {[p.returncode for p in processes]}:\n{self.locust_log()}")
        rss_peak = memory_mb(self.gw, "VmHWM")  # before the check's queries, which are no part of ingest
        load_average = os.getloadavg()[0]
        overflows = _listen_overflows() - overflows
        drained = time.monotonic() + SEAL_S
        deadline = time.monotonic() + 120
        while self.samples and time.monotonic() < deadline:
            self.tick([])
        check = self.settle(max(drained, time.monotonic()), deadline)
        return self.report(rss_start, rss_peak, overflows, load_average, check)

    def tick(self, pids: list[int]) -> None:
        """Read what the workers wrote, sample one acknowledged event, probe the samples, sample the CPU."""
        started = time.monotonic()
        latest: Request | None = None
        for request in self.reader.read():
            self.tally.add(request)
            if request.acked:
                latest = request
        if latest is not None:
            self.samples[event_id(self.prefix, latest.pid, latest.acked[0][0])] = latest.answered_at
            self.sampled += 1
        if self.samples:
            ids = ",".join(f"'{sample}'" for sample in self.samples)
            seen = self.sql(f"SELECT event_id FROM clicktrail.events WHERE site_id = '{self.scenario.site}' "
                            f"AND event_id IN ({ids})").split()
            now = time.time()
            for sample in seen:
                self.fresh.append(now - self.samples.pop(sample))
        if pids:
            self.private_mb = max(self.private_mb, memory_mb(self.gw, "RssAnon"))
        for pid in pids if self.tally.requests else ():  # from the first request on: locust's start is no load
            used = _cpu_s(pid)
            if used is not None:
                wall = time.monotonic()
                first = self.cpu.get(pid, (wall, used, wall, used))
                self.cpu[pid] = (first[0], first[1], wall, used)
        time.sleep(max(0.0, TICK_S - (time.monotonic() - started)))

    def settle(self, not_before: float, deadline: float) -> Check:
        """The check once the loader has caught up: every acknowledged event stored and nothing left to load (or
        the deadline passed, and the check says what is missing)."""
        while True:
            idle = time.monotonic() >= not_before and metric(self.gw, "clicktrail_loader_lag_seconds") == 0
            check = self.check()
            if (idle and check.missing == 0) or time.monotonic() > deadline:
                return check
            time.sleep(0.5)

    def check(self) -> Check:
        site, prefix = f"'{self.scenario.site}'", f"'{self.prefix}'"
        ours = f"site_id = {site} AND startsWith(event_id, {prefix} || '-')"
        check = Check()
        check.stored, check.stored_distinct = map(int, self.sql(
            f"SELECT count(), uniqExact(event_id) FROM clicktrail.events WHERE {ours}").split())
        spans = [(pid, first, end) for pid, acked in sorted(self.tally.acked.items()) for first, end in merge(acked)]
        for at in range(0, len(spans), SPANS_PER_QUERY):
            literal = ",".join(f"({pid},{first},{end})" for pid, first, end in spans[at:at + SPANS_PER_QUERY])
            acked, missing, duplicated = map(int, self.sql(
                f"SELECT count(), countIf(copies = 0), countIf(copies > 1)"
                f" FROM (SELECT {ID_SQL.format(prefix=prefix, pid='span.1', seq='seq')} AS event_id"
                f"       FROM (SELECT arrayJoin([{literal}]) AS span) ARRAY JOIN range(span.2, span.3) AS seq) AS acked"
                f" LEFT JOIN (SELECT event_id, count() AS copies FROM clicktrail.events WHERE {ours}"
                f"            GROUP BY event_id) AS stored USING event_id").split())
            check.acked += acked
            check.missing += missing
            check.duplicated += duplicated
        return check

    def sql(self, query: str) -> str:
        response = self.query.post("/", content=query.encode())
        if response.status_code != 200:
            raise RuntimeError(f"query failed ({response.status_code}): {response.text[:500]}")
        return response.text

    def report(self, rss_start: float, rss_peak: float, overflows: int, load_average: float, check: Check) -> Report:
        tally = self.tally
        seconds = max(tally.last_answered - tally.first_sent, 1e-9)
        assert self.gw.proc is not None
        gateway = self.gw.proc.pid
        busy = {pid: (used1 - used0) / (wall1 - wall0) for pid, (wall0, used0, wall1, used1) in self.cpu.items()
                if wall1 > wall0}
        return Report(
            scenario=self.name, users=self.users, processes=self.processes, seconds=round(seconds, 1),
            requests=tally.requests, requests_per_s=round(tally.requests / seconds, 1),
            events=tally.events_acked, events_per_s=round(tally.events_acked / seconds, 1),
            rejected=tally.events_rejected,
            latency_ms={f"p{p}": round(q * 1000, 1) for p, q in _percentiles(tally.latencies, (50, 95, 99)).items()},
            errors=dict(tally.errors.most_common()),
            freshness_s={f"p{p}": round(q, 3) for p, q in _percentiles(self.fresh, (50, 95)).items()},
            freshness_samples=self.sampled, freshness_unseen=len(self.samples),
            listen_overflows=overflows, rss_start_mb=round(rss_start, 1), rss_peak_mb=round(rss_peak, 1),
            private_peak_mb=round(self.private_mb, 1),
            gateway_cpu=round(busy.pop(gateway, 0.0), 2), locust_cpu_max=round(max(busy.values(), default=0.0), 2),
            load_average=round(load_average, 1), cores=os.cpu_count() or 0, check=check,
        )

    def locust_log(self) -> str:
        return (self.directory / "locust.log").read_text(errors="replace")[-4000:]


def _percentiles(values: list[float], ps: tuple[int, ...]) -> dict[int, float]:
    if len(values) < 2:
        return {p: values[0] if values else float("nan") for p in ps}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {p: cuts[p - 1] for p in ps}


def _listen_overflows() -> int:
    names, values = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
                     if line.startswith("TcpExt:")]
    return int(values[names.index("ListenOverflows")])


def _cpu_s(pid: int) -> float | None:
    """CPU seconds ``pid`` has used (all its threads), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command's name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
