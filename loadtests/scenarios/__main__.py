"""Load scenarios with locust against a real gateway, each ending with an exactly-once check.

    python -m loadtests.scenarios webinar [--viewers 5000] [--seconds 60] [--processes 2]
    python -m loadtests.scenarios content [--users 1000] [--seconds 60] [--processes 2]
    python -m loadtests.scenarios backend [--users 8] [--seconds 60] [--processes 2]

Starts a gateway in a temporary directory (loadtests/gateway_process.py), runs the scenario's locustfile headless
for the given time with locust's master and ``--processes`` workers on 127.0.0.1, then waits for the loader and
checks that every event the gateway acknowledged is in ClickHouse exactly once. Prints a table, then a JSON line;
exits 1 when the check fails. Needs locust (in the ``test`` extra: ``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from loadtests.gateway_process import GatewayProcess
from loadtests.scenarios.harness import SCENARIOS, Report, Run, gateway_settings


def table(report: Report) -> str:
    check = report.check
    rows = [
        ("scenario", f"{report.scenario}: {report.users} users, {report.processes} locust workers"),
        ("load", f"{report.seconds:g} s, {report.requests:,} requests, {report.events:,} events acknowledged"),
        ("throughput", f"{report.requests_per_s:,.0f} requests/s, {report.events_per_s:,.0f} events/s"),
        ("latency p50 / p95 / p99", " / ".join(f"{v:g}" for v in report.latency_ms.values()) + " ms"),
        ("errors", ", ".join(f"{k}: {v}" for k, v in report.errors.items()) or "none"),
        ("connections dropped", f"{report.listen_overflows:,} from a full accept queue (machine-wide)"),
        ("events refused one by one", f"{report.rejected:,}"),
        ("freshness p50 / p95", " / ".join(f"{v:g}" for v in report.freshness_s.values())
         + f" s ({report.freshness_samples} samples, {report.freshness_unseen} unseen)"),
        ("gateway RSS start / peak", f"{report.rss_start_mb:,.0f} / {report.rss_peak_mb:,.0f} MB (private memory at "
                                     f"most {report.private_peak_mb:,.0f} MB)"),
        ("CPU, in cores", f"gateway {report.gateway_cpu:.2f}, busiest locust process {report.locust_cpu_max:.2f}"),
        ("machine", f"load average {report.load_average:g} on {report.cores} cores as the load ended"),
        ("exactly once", f"{'ok' if check.ok else 'FAILED'}: {check.acked:,} acknowledged, {check.missing} missing, "
                         f"{check.duplicated} duplicated; {check.stored:,} rows stored "
                         f"({check.stored - check.stored_distinct} extra copies)"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.scenarios", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="scenario", required=True)
    for name, scenario in SCENARIOS.items():
        command = commands.add_parser(name, help=scenario.what, description=scenario.what)
        flags = ["--viewers", "--users"] if name == "webinar" else ["--users"]
        command.add_argument(*flags, dest="users", type=int, default=scenario.users)
        command.add_argument("--seconds", type=float, default=60.0, help="locust's run time")
        command.add_argument("--processes", type=int, default=2, help="locust worker processes (0: locust alone)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scenario_") as tmp:
        gw = GatewayProcess(Path(tmp) / "gateway", **gateway_settings(args.users)).start()
        try:
            report = Run(gw, args.scenario, args.users, args.seconds, args.processes, Path(tmp)).execute()
        finally:
            gw.stop()
    print(table(report))
    print(json.dumps(report.row()))
    return 0 if report.check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
