"""What the analytics test modules share: a gateway per seed loaded with the generator's deliveries, and row
comparison. A module uses the fixture by importing ``loaded``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from tests.analytics.generate import Dataset, generate
from tests.conftest import COUNT_ALL, GatewayProcess

SEEDS = (11, 23, 37)
#: The generator's sites and their secret keys (its events go back weeks: more than a write key may back-date).
SECRET_KEYS = {"site_a": "sk_a", "site_b": "sk_b", "site_c": "sk_c"}
#: The referrer rules tests/conftest.py gives the sites: what the reference must be told.
RULES = {"site_a": {"partner.example.org": "partner", "mp.weixin.qq.com": "wechat_official_account"}}


class Loaded:
    def __init__(self, gw: GatewayProcess, data: Dataset, now: datetime) -> None:
        self.gw, self.data, self.now = gw, data, now
        self.sites = sorted({e["site_id"] for e in data.events})

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return self.gw.rows(sql)


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    # The data ends at today's UTC midnight, so a seed's days (and what "the last 30 days" holds) do not
    # depend on the hour the suite runs at; queries that say now() or today() are pinned to it by the tests.
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    data = generate(request.param, int(now.timestamp() * 1000))
    gw = GatewayProcess(tmp_path_factory.mktemp(f"analytics{request.param}")).start()
    deliver(gw, data.deliveries, len(data.events))
    yield Loaded(gw, data, now)
    gw.stop()


def deliver(gw: GatewayProcess, deliveries: list[tuple[str, list[dict[str, Any]]]], unique: int) -> None:
    """Send the batches in order with each site's secret key; return once all ``unique`` events are stored."""
    send(gw, deliveries)
    assert gw.wait_for(COUNT_ALL, unique) == unique
    time.sleep(0.5)  # a repeated delivery in a later segment would show now
    assert gw.scalar(COUNT_ALL) == unique


def send(gw: GatewayProcess, deliveries: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Send the batches in order with each site's secret key, each accepted whole."""
    with httpx.Client(base_url=gw.base, timeout=30) as client:
        for site_id, batch in deliveries:
            response = client.post("/v1/batch", content=orjson.dumps({"batch": batch}),
                                   headers={"X-Write-Key": SECRET_KEYS[site_id]})
            assert response.status_code == 200 and not response.json()["rejected"], response.text


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]], key: tuple[str, ...]) -> None:
    """Same keys; integers equal, floats within 1e-9."""
    by_key = {tuple(r[k] for k in key): r for r in got}
    assert sorted(by_key) == sorted(tuple(r[k] for k in key) for r in want)
    for row in want:
        have = by_key[tuple(row[k] for k in key)]
        for column, expected in row.items():
            actual = have[column]
            if isinstance(expected, float):
                assert math.isclose(float(actual), expected, rel_tol=1e-9, abs_tol=1e-9), (row, column, actual)
            else:
                assert actual == expected, (row, column, actual)
