"""Benchmark: the Python SDK against posthog-python's ``capture``, side by side in one run.

    python -m loadtests.bench_sdk [--quick]

Each measurement runs in a fresh process: N calls in a loop, each timed on its own while the SDK's
thread delivers in the background, then ``flush()``. Reported per SDK and target:

- enqueue: the median (and p99) cost of one call, in microseconds;
- delivery: events per second from the first call until ``flush()`` returned, counted only when
  every event arrived, as counted by the receiver (the sink's own count, or rows in ClickHouse).

Targets: clicktrail enqueues at no more than half of posthog-python's median cost, and delivers at
least 50,000 events/s to the real gateway. Both SDKs first post to the same local sink
(``loadtests/sink.py``, answering every POST with 200), so only the SDKs differ; then clicktrail
posts to a real gateway process with embedded ClickHouse. Loopback only. The last line printed is
a JSON summary; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENQUEUE_RATIO_TARGET = 0.5
GATEWAY_EVENTS_PER_S_TARGET = 50_000
WORKER_TIMEOUT_S = 300


# --- one measurement, in its own process ---------------------------------------------------------


def _clicktrail(host: str, key: str, n: int) -> tuple[Callable[[int], object], Callable[[], int]]:
    import clicktrail

    client = clicktrail.Client(key, host=host, max_queue_size=n + 1)

    def call(i: int) -> object:
        return client.track("registration", user_id=f"u-{i % 1000}", channel="wechat_group_7",
                            props={"stream_id": "webinar-2026-12", "source": "crm", "seq": i})

    def finish() -> int:
        client.flush()
        stats = client.stats()
        if stats.dropped or stats.invalid or stats.failed or stats.rejected:
            raise SystemExit(f"clicktrail lost events: {stats}")
        return stats.sent

    return call, finish


def _posthog(host: str, key: str, n: int) -> tuple[Callable[[int], object], Callable[[], int]]:
    from posthog import Posthog

    client = Posthog(key, host=host, max_queue_size=n + 1)  # its defaults otherwise: what its users get

    def call(i: int) -> object:
        return client.capture("registration", distinct_id=f"u-{i % 1000}",
                              properties={"stream_id": "webinar-2026-12", "source": "crm", "seq": i,
                                          "channel": "wechat_group_7"})

    def finish() -> int:
        client.flush(timeout_seconds=None)
        client.shutdown()
        return n  # posthog keeps no count of what it delivered: the sink's count is checked instead

    return call, finish


SDKS = {"clicktrail": _clicktrail, "posthog-python": _posthog}


def worker(sdk: str, host: str, key: str, n: int) -> None:
    """Run one measurement and print its JSON result."""
    call, finish = SDKS[sdk](host, key, n)
    clock = time.perf_counter_ns
    costs = [0] * n
    started = clock()
    for i in range(n):
        before = clock()
        call(i)
        costs[i] = clock() - before
    sent = finish()
    seconds = (clock() - started) / 1e9
    costs.sort()
    print(json.dumps({"enqueue_median_us": statistics.median(costs) / 1000,
                      "enqueue_p99_us": costs[n * 99 // 100] / 1000, "seconds": seconds, "sent": sent}))


def measure(sdk: str, host: str, key: str, n: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "loadtests.bench_sdk", "--worker", sdk, host, key, str(n)],
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if done.returncode != 0:
        raise SystemExit(f"{sdk} worker failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


# --- the run -------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        from loadtests.gateway_process import free_port

        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([sys.executable, "-m", "loadtests.sink", self.url.rsplit(":", 1)[1]],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def count(self) -> int:
        with urllib.request.urlopen(self.url + "/count", timeout=10) as response:
            return int(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run(n: int, rounds: int) -> dict[str, Any]:
    from loadtests.gateway_process import GatewayProcess

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    sink = Sink()
    gateway = GatewayProcess(Path(tempfile.mkdtemp(prefix="bench-sdk-")) / "gw").start()
    try:
        for r in range(rounds):
            order = ["posthog-python", "clicktrail"] if r % 2 == 0 else ["clicktrail", "posthog-python"]
            for sdk in order:
                before = sink.count()
                result = measure(sdk, sink.url, "phc_bench" if sdk == "posthog-python" else "sk_bench", n)
                _wait(lambda: sink.count() - before >= n)  # noqa: B023 (called at once)
                result["received"] = sink.count() - before
                results.setdefault((sdk, "sink"), []).append(result)
            before = gateway.scalar("SELECT count() FROM clicktrail.events")
            result = measure("clicktrail", gateway.base, "sk_a", n)
            result["received"] = gateway.wait_for("SELECT count() FROM clicktrail.events", before + n) - before
            results.setdefault(("clicktrail", "gateway"), []).append(result)
    finally:
        gateway.stop()
        sink.stop()
    rows = {}
    for (sdk, target), runs in results.items():
        if any(r["received"] != n for r in runs):
            raise SystemExit(f"{sdk} -> {target}: received {[r['received'] for r in runs]} of {n} events")
        rows[f"{sdk} -> {target}"] = {
            "enqueue_median_us": statistics.median(r["enqueue_median_us"] for r in runs),
            "enqueue_p99_us": statistics.median(r["enqueue_p99_us"] for r in runs),
            "events_per_s": statistics.median(n / r["seconds"] for r in runs),
        }
    return rows


def _wait(done: Callable[[], bool], timeout: float = 60) -> None:
    """The sink counts after answering, so its count may trail the SDK's flush() by a moment."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 events, one round (default 100,000, three)")
    parser.add_argument("--worker", nargs=4, metavar=("SDK", "HOST", "KEY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sdk, host, key, n = args.worker
        worker(sdk, host, key, int(n))
        return
    n, rounds = (10_000, 1) if args.quick else (100_000, 3)
    rows = run(n, rounds)
    print(f"{n:,} events per measurement, median of {rounds} round(s), each in a fresh process")
    print(f"{'sdk -> target':<32}{'enqueue median µs':>19}{'p99 µs':>10}{'delivered events/s':>20}")
    for name, row in rows.items():
        print(f"{name:<32}{row['enqueue_median_us']:>19.2f}{row['enqueue_p99_us']:>10.2f}{row['events_per_s']:>20,.0f}")
    ratio = rows["clicktrail -> sink"]["enqueue_median_us"] / rows["posthog-python -> sink"]["enqueue_median_us"]
    gateway_rate = rows["clicktrail -> gateway"]["events_per_s"]
    met = ratio <= ENQUEUE_RATIO_TARGET and gateway_rate >= GATEWAY_EVENTS_PER_S_TARGET
    print(f"enqueue cost vs posthog-python: {ratio:.2f}x (target <= {ENQUEUE_RATIO_TARGET}); "
          f"delivery to the gateway: {gateway_rate:,.0f} events/s (target >= {GATEWAY_EVENTS_PER_S_TARGET:,})")
    print(json.dumps({"events": n, "rounds": rounds, "results": rows, "enqueue_ratio_vs_posthog": round(ratio, 3),
                      "gateway_events_per_s": round(gateway_rate), "targets_met": met}))
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
