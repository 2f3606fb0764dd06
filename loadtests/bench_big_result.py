"""Benchmark: the gateway's memory while it answers a big result, and how soon the answer starts.

    python -m loadtests.bench_big_result [--rows N] [--quick]

A real gateway process answers ``SELECT number, toString(number), repeat('x', 40) FROM numbers(N)`` (default
8,000,000 rows: about 440 MB of TabSeparated, the size of the issue's example) on its ClickHouse port, read by
an httpx client that counts the bytes and drops them: once plain, once gzipped (``enable_http_compression=1``),
once as ClickHouse's compressed blocks (``compress=1``, as JDBC asks), each from a gateway process of its own.
The gateway's RSS is sampled every 10 ms from /proc while each answer is read. Printed per answer: bytes, time
to the first byte, total time, the RSS before and its peak during the answer, and the peak's growth. The last
line is a JSON object.

A gateway that holds a result whole grows by about the result's size (and more while it copies and packs it);
one that streams grows by what a few pieces take, whatever the result's size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.gateway_process import GatewayProcess

DEFAULT_ROWS = 8_000_000
QUICK_ROWS = 1_000_000
SAMPLE_S = 0.01
#: Each answer: its name, and the URL parameters and headers that ask for it.
ANSWERS: tuple[tuple[str, dict[str, str], dict[str, str]], ...] = (
    ("plain", {}, {}),
    ("gzip", {"enable_http_compression": "1"}, {"Accept-Encoding": "gzip"}),
    ("compress=1", {"compress": "1"}, {}),
)


def rss(pid: int) -> int:
    """The process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def measure(gw: GatewayProcess, rows: int, name: str, params: dict[str, str],
            headers: dict[str, str]) -> dict[str, Any]:
    assert gw.proc is not None
    pid = gw.proc.pid
    before = rss(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss(pid))
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sql = f"SELECT number, toString(number), repeat('x', 40) FROM numbers({rows})"
    received = 0
    first_byte = None
    started = time.monotonic()
    # httpx would decode gzip itself: the raw stream is what went over the wire.
    with httpx.stream("POST", f"http://127.0.0.1:{gw.clickhouse_port}/", params=params, content=sql.encode(),
                      headers=headers, auth=("admin", "admin-pw"), timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{name}: {response.status_code} {response.read()[:500]!r}")
        for chunk in response.iter_raw(1 << 20):
            if first_byte is None:
                first_byte = time.monotonic() - started
            received += len(chunk)
    total = time.monotonic() - started
    done.set()
    sampler.join()
    return {"answer": name, "bytes": received, "first_byte_s": round(first_byte or total, 3),
            "total_s": round(total, 2), "rss_before_mb": round(before / 1e6), "rss_peak_mb": round(peak / 1e6),
            "growth_mb": round((peak - before) / 1e6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_big_result", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows")
    args = parser.parse_args(argv)
    rows = QUICK_ROWS if args.quick else args.rows
    results = []
    for name, params, headers in ANSWERS:
        # A fresh process each: memory an answer took is not all given back, and would count as the next's start.
        with tempfile.TemporaryDirectory(prefix="bench_big_result_") as tmp:
            gw = GatewayProcess(Path(tmp)).start()
            try:
                gw.query("SELECT 1")  # the first query opens what every later one uses
                results.append(measure(gw, rows, name, params, headers))
            finally:
                gw.stop()
    columns = list(results[0])
    print(" | ".join(columns))
    for row in results:
        print(" | ".join(str(row[c]) for c in columns))
    print(json.dumps({"rows": rows, "answers": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
