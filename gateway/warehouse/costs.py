"""``python -m gateway costs import FILE.csv``: channel costs (渠道成本) into ``clicktrail.channel_costs``, for the
``channel_roi`` view (migration 0012, clickhouse/README.md).

The file is CSV (UTF-8, a BOM allowed, as spreadsheets write it) whose header names the columns ``site_id``,
``channel``, ``day`` (a UTC day, YYYY-MM-DD) and ``cost`` (a number >= 0, in the currency of the CRM's amounts), in
any order. Every row is checked first, and nothing is imported unless all are good. A (site_id, channel, day) holds
one cost: importing it again replaces it (within one file, its last row counts).

The rows go in through the running gateway's ClickHouse HTTP port, as an admin user of its config, not through the
store: the gateway's process owns the embedded engine, and chDB lets one process at a time open a data directory,
so another process could write only while the gateway is stopped (and would have to open and migrate the store
itself). Through the port an import takes effect at once, with the gateway running as it should, and the command
needs nothing but the config file.
"""

from __future__ import annotations

import base64
import csv
import math
import urllib.error
import urllib.parse
import urllib.request
from datetime import date
from pathlib import Path

import orjson

from gateway.config import Config

COLUMNS = ("site_id", "channel", "day", "cost")
INSERT = "INSERT INTO clicktrail.channel_costs (site_id, channel, day, cost) FORMAT JSONEachRow"


class CostsError(Exception):
    """What the import refused, said for the person who runs it."""


def read_costs(path: Path, sites: set[str]) -> list[dict[str, str | float]]:
    """The file's rows, checked; CostsError naming every bad line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            if sorted(reader.fieldnames or ()) != sorted(COLUMNS):
                raise CostsError(f"{path}: the header must name the columns {', '.join(COLUMNS)}, "
                                 f"not {', '.join(reader.fieldnames or ()) or 'nothing'}")
            rows, errors = [], []
            for record in reader:
                try:
                    rows.append(_row(record, sites))
                except ValueError as exc:
                    errors.append(f"{path}:{reader.line_num}: {exc}")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CostsError(f"{path}: {exc}") from exc
    if errors:
        raise CostsError("\n".join(errors))
    return rows


def _row(record: dict[str, str], sites: set[str]) -> dict[str, str | float]:
    if None in record.values() or None in record:
        raise ValueError(f"expected {len(COLUMNS)} fields")
    site_id, channel = record["site_id"].strip(), record["channel"].strip()
    if site_id not in sites:
        raise ValueError(f"site_id {site_id!r} is no site of the config")
    if not channel:
        raise ValueError("channel is empty")
    try:
        day = date.fromisoformat(record["day"].strip())
    except ValueError:
        raise ValueError(f"day {record['day']!r} is not a date (YYYY-MM-DD)") from None
    try:
        cost = float(record["cost"])
    except ValueError:
        raise ValueError(f"cost {record['cost']!r} is not a number") from None
    if not math.isfinite(cost) or cost < 0:
        raise ValueError(f"cost {record['cost']!r} is not a number >= 0")
    return {"site_id": site_id, "channel": channel, "day": day.isoformat(), "cost": cost}


def import_costs(config: Config, path: Path, user: str | None = None) -> int:
    """Check the file, then insert its rows through the gateway's ClickHouse HTTP port as ``user`` (default: the
    config's first admin); the number of rows imported."""
    server = config.server
    if not server.clickhouse_port:
        raise CostsError("the config sets clickhouse_port = 0: the import goes through the ClickHouse HTTP port")
    admins = [u for u in config.users if not u.readonly and user in (None, u.name)]
    if not admins:
        raise CostsError(f"the config has no admin user{f' {user!r}' if user else ''} ([[users]] with readonly = "
                         f"false): costs are written by an admin")
    rows = read_costs(path, {site.id for site in config.sites})
    if not rows:
        return 0
    # A wildcard listening address is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(server.host, server.host)
    url = (f"http://{f'[{host}]' if ':' in host else host}:{server.clickhouse_port}/?"
           + urllib.parse.urlencode({"query": INSERT}))
    credentials = base64.b64encode(f"{admins[0].name}:{admins[0].password}".encode()).decode()
    request = urllib.request.Request(url, data=b"\n".join(orjson.dumps(r) for r in rows), method="POST",
                                     headers={"Authorization": f"Basic {credentials}"})
    try:
        with urllib.request.urlopen(request, timeout=120):
            pass
    except urllib.error.HTTPError as exc:
        raise CostsError(f"ClickHouse refused the import ({exc.code}): {exc.read().decode(errors='replace')}") from exc
    except OSError as exc:  # URLError, a refused or reset connection, a timeout
        raise CostsError(f"cannot reach the gateway's ClickHouse port at {host}:{server.clickhouse_port} ({exc}); "
                         f"is the gateway running (python -m gateway serve)?") from exc
    return len(rows)
