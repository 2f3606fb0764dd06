"""Load the analytics tests' seeded dataset into a running gateway, as the end-to-end tests of the dashboard need it.

The node harness (dashboard/test/harness.js) starts the gateway with its own config (the generator's sites with
their secret keys, the admin user) and runs this with the repository on PYTHONPATH; this sends the generator's
deliveries through the real ingest API (POST /v1/batch: retries, reordering, late CRM stages and all), imports its
two channel-cost files with the real importer, waits until every event is stored, and prints what the test needs
to know as JSON on stdout. Reusing tests/analytics keeps one generator for every test of the views.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import orjson

from gateway.config import load
from gateway.warehouse.costs import COLUMNS, import_costs
from tests.analytics.generate import generate
from tests.analytics.harness import deliver
from tests.conftest import GatewayProcess


class RunningGateway(GatewayProcess):
    """A gateway another process started: its ports only, for ``deliver`` and the query helpers."""

    def __init__(self, port: int, clickhouse_port: int) -> None:  # no config written, no process owned
        self.port, self.clickhouse_port = port, clickhouse_port
        self.base = f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the running gateway's config file")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--now-ms", type=int, required=True, help="the dataset's now: every ts is before it")
    args = parser.parse_args()
    config = load(args.config)
    data = generate(args.seed, args.now_ms)
    gw = RunningGateway(config.server.port, config.server.clickhouse_port)
    deliver(gw, data.deliveries, len(data.events))
    with tempfile.TemporaryDirectory() as tmp:
        for i, rows in enumerate(data.costs):  # in order: the second import corrects the first
            path = Path(tmp) / f"costs{i}.csv"
            with path.open("w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            import_costs(config, path)
    sites = sorted({e["site_id"] for e in data.events})
    sys.stdout.write(orjson.dumps({"sites": sites, "events": len(data.events)}).decode() + "\n")


if __name__ == "__main__":
    main()
