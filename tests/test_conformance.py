"""Every conformance vector in schemas/vectors, through a real gateway and into ClickHouse."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import GatewayProcess

VECTORS = Path(__file__).resolve().parent.parent / "schemas" / "vectors"
VALID = orjson.loads((VECTORS / "valid.json").read_bytes())["vectors"]
INVALID = orjson.loads((VECTORS / "invalid.json").read_bytes())["vectors"]
#: What an event that names no client of its own is stored with: the request's.
REQUEST_CLIENT = {"ip": "127.0.0.1", "user_agent": "conformance"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose time window admits the contract's whole range (2000 to 2100), and which stores addresses
    whole: the vectors test the contract; how far from its arrival an event may lie (tests/test_poison.py), which
    key may name an event's client (tests/test_secret_keys.py) and anonymization are the gateway's policy."""
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), max_past_days_write_key=40_000.0,
                        max_past_days_secret_key=40_000.0, max_future_s=40_000.0 * 86_400, anonymize_ip=False).start()
    yield gw
    gw.stop()


def test_there_are_vectors() -> None:
    assert len(VALID) >= 20 and len(INVALID) >= 30


def test_invalid_vectors_are_rejected_with_their_error(gateway: GatewayProcess) -> None:
    response = gateway.send([v["event"] for v in INVALID] + [{"event": "ok", "event_id": "keep", "anonymous_id": "a"}])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    got = {r["index"]: r["error"] for r in body["rejected"]}
    want = {i: v["error"] for i, v in enumerate(INVALID)}
    assert got == want


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_on_the_single_endpoint(gateway: GatewayProcess, vector: dict[str, Any]) -> None:
    if not isinstance(vector["event"], dict):
        pytest.skip("a single-event body that is not an object is a body error, covered in test_ingest")
    response = gateway.http.post("/v1/event", content=orjson.dumps(vector["event"]),
                                 headers={"X-Write-Key": "wk_b", "Content-Type": "application/json"})
    if vector["error"].startswith("event: larger than"):
        assert response.status_code == 413  # on its own, an oversized event is an oversized body
    else:
        assert (response.status_code, response.json()["error"]) == (400, vector["error"])


def test_valid_vectors_are_stored_as_normalized(gateway: GatewayProcess) -> None:
    # site_b stores them, each under an event_id of its own: many vectors share theirs, and the loader takes
    # an event_id sent with another ts for another event (its dedup key is the id with the client's ts).
    shared = Counter(v["event"]["event_id"] for v in VALID)
    events = [{**v["event"], "event_id": f"{v['event']['event_id']}-{i}"} if shared[v["event"]["event_id"]] > 1
              else v["event"] for i, v in enumerate(VALID)]
    # With the secret key, which may set ip and user_agent; an event without them has the request's.
    response = gateway.send(events, key="sk_b", headers={"User-Agent": "conformance"})
    assert response.status_code == 200
    assert response.json() == {"accepted": len(VALID), "rejected": []}
    sql = "SELECT count() FROM clicktrail.events WHERE site_id = 'site_b'"
    assert gateway.wait_for(sql, len(VALID)) == len(VALID)
    rows = {r["event_id"]: r for r in gateway.rows("SELECT * FROM clicktrail.events WHERE site_id = 'site_b'")}
    for event, vector in zip(events, VALID, strict=True):
        row = rows[event["event_id"]]
        for field, expected in {**vector.get("expect", {}), "event_id": event["event_id"]}.items():
            if field == "props":
                assert orjson.loads(row["props"]) == expected, vector["name"]
            elif field == "ts":
                stored = _ms(row["ts"])
                assert stored == (expected if expected is not None else _ms(row["received_at"])), vector["name"]
            elif field in REQUEST_CLIENT and not expected:
                assert row[field] == REQUEST_CLIENT[field], vector["name"]
            else:
                assert row[field] == expected, (vector["name"], field)


def _ms(value: str) -> int:
    return round(datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp() * 1000)
