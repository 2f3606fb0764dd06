"""The Python SDK's local contract check: shipped schemas, every conformance vector, agreement with the gateway."""

from __future__ import annotations

import itertools
import json
import logging
import typing
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import clicktrail
import pytest
from clicktrail import contract

from gateway.ingest.contract import ContractError as GatewayError
from gateway.ingest.contract import decode_event

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
VALID = json.loads((SCHEMAS / "vectors" / "valid.json").read_text("utf-8"))["vectors"]
INVALID = json.loads((SCHEMAS / "vectors" / "invalid.json").read_text("utf-8"))["vectors"]
# Nothing listens on the discard port: these clients never get to send anything.
NOWHERE = "http://127.0.0.1:9"


def test_shipped_schemas_are_the_repository_s() -> None:
    """The package carries the contract; run `python sdk_py/sync_schemas.py` when this fails."""
    source = {p.relative_to(SCHEMAS).as_posix(): p.read_bytes()
              for p in [*SCHEMAS.glob("*.schema.json"), *SCHEMAS.glob("events/*.schema.json")]}
    shipped_root = resources.files("clicktrail") / "schemas"
    shipped = {f"{prefix}{p.name}": p.read_bytes()
               for prefix, folder in (("", shipped_root), ("events/", shipped_root / "events"))
               for p in folder.iterdir() if p.is_file()}
    assert len(source) >= 13
    assert sorted(shipped) == sorted(source)
    assert [name for name in source if shipped[name] != source[name]] == []


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vectors_pass_and_are_sent_unchanged(vector: dict[str, Any]) -> None:
    data = contract.encode(vector["event"])
    assert json.loads(data) == vector["event"]
    expected_ts = vector.get("expect", {}).get("ts")
    if expected_ts is not None:
        assert contract.parse_time(vector["event"]["ts"]) == expected_ts


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vectors_fail_with_their_error(vector: dict[str, Any]) -> None:
    with pytest.raises(clicktrail.ContractError) as raised:
        contract.encode(vector["event"])
    assert str(raised.value) == vector["error"]


# Values that break, or just meet, the rules of the fields they replace.
CANDIDATES: list[object] = [
    None, "", "x", "x" * 64, "x" * 65, "x" * 200, "x" * 201, "x" * 1001, "x" * 2049, "标" * 201,
    0, -1, 1, 100, 101, 1.5, -0.5, 30000.0, 1e300, True, False, [], ["a"], {}, {"a": 1},
    "live", "replay", "LIVE", "mql", "customer", "2026-11-23T10:00:00Z", "2026-11-23T10:00:00",
    1795428000123, 1795428000, 946684799999, 4102444800000,
]
MISSING = object()


def _declared_props(event_name: str) -> list[str]:
    path = SCHEMAS / "events" / f"{event_name}.schema.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text("utf-8"))["properties"]["props"].get("properties", {}))


def _mutations() -> typing.Iterator[dict[str, Any]]:
    """Each valid vector with one field or declared prop replaced by a candidate, or removed."""
    core = list(json.loads((SCHEMAS / "event.schema.json").read_text("utf-8"))["properties"])
    names = sorted(p.name.removesuffix(".schema.json") for p in (SCHEMAS / "events").iterdir())
    for vector in VALID:
        event = vector["event"]
        for key, value in itertools.product(core, [*CANDIDATES, MISSING, *names]):
            if key != "event" and isinstance(value, str) and value in names:
                continue  # event names are candidates for the event field only
            mutated = {k: v for k, v in event.items() if k != key}
            if value is not MISSING:
                mutated[key] = value
            yield mutated
        props = event.get("props") or {}
        for key, value in itertools.product(_declared_props(event["event"]), [*CANDIDATES, MISSING]):
            mutated_props = {k: v for k, v in props.items() if k != key}
            if value is not MISSING:
                mutated_props[key] = value
            yield {**event, "props": mutated_props}


def _verdict(check: typing.Callable[[], object], error: type[Exception]) -> str:
    try:
        check()
    except error as exc:
        return str(exc)
    return "ok"


def test_the_sdk_and_the_gateway_agree_on_every_single_mutation() -> None:
    """The gateway is the authority: the SDK must refuse what it refuses, with the same string, and nothing else."""
    disagreements = []
    count = 0
    for event in _mutations():
        count += 1
        wire = json.dumps(event).encode()
        gateway = _verdict(lambda: decode_event(wire), GatewayError)  # noqa: B023 (called at once)
        sdk = _verdict(lambda: contract.encode(event), clicktrail.ContractError)  # noqa: B023
        if sdk != gateway:
            disagreements.append((event, gateway, sdk))
    assert count > 10_000
    assert disagreements[:5] == []


def test_size_limit_counts_the_bytes_sent() -> None:
    def event_of(size: int) -> dict[str, Any]:
        event: dict[str, Any] = {"event": "page_view", "event_id": "e-1", "anonymous_id": "a-1", "props": {"pad": ""}}
        overhead = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())
        event["props"]["pad"] = "标" * ((size - overhead) // 3) + "x" * ((size - overhead) % 3)
        return event

    assert len(contract.encode(event_of(32768))) == 32768
    with pytest.raises(clicktrail.ContractError, match=r"^event: larger than 32768 bytes$"):
        contract.encode(event_of(32769))


def test_python_values_become_the_json_the_contract_expects() -> None:
    # 2026-11-23T10:00:00Z is 1795428000000 ms (the valid vectors say so); Python's isoformat() is RFC 3339.
    assert contract.parse_time(datetime(2026, 11, 23, 18, 0, tzinfo=timezone(timedelta(hours=8))).isoformat()) \
        == 1795428000000
    client = clicktrail.Client("sk_x", host=NOWHERE, strict=True)
    with pytest.raises(clicktrail.ContractError, match="without tzinfo"):
        client.track("x", user_id="u", ts=datetime(2026, 11, 23, 10, 0))
    client.shutdown()
    data = json.loads(contract.encode({
        "event": "lead_stage", "event_id": "e", "user_id": "u",
        "props": {"stage": "won", "amount": Decimal("1200.50"), "tags": ("a", "b"),
                  "at": datetime(2026, 1, 2, tzinfo=UTC)},
    }))
    assert data["props"] == {"stage": "won", "amount": 1200.5, "tags": ["a", "b"], "at": "2026-01-02T00:00:00+00:00"}
    assert json.loads(contract.encode({"event": "x", "event_id": "e", "user_id": "u", "props": {"n": 2**70}})) \
        == {"event": "x", "event_id": "e", "user_id": "u", "props": {"n": 2**70}}
    with pytest.raises(clicktrail.ContractError, match=r"^event: cannot be written as JSON"):
        contract.encode({"event": "x", "event_id": "e", "user_id": "u", "props": {"f": object()}})
    with pytest.raises(clicktrail.ContractError, match=r"^props\.amount: number out of range$"):
        contract.encode({"event": "lead_stage", "event_id": "e", "user_id": "u",
                         "props": {"stage": "won", "amount": float("inf")}})


STAGES = "must be one of lead, mql, sal, sql, opportunity, won, lost, nurture"
MISTAKES: list[tuple[str, tuple[object, ...], dict[str, object], str]] = [
    ("registration", ("",), {"user_id": "u-1"}, "props.stream_id: must not be empty"),
    ("lead_stage", ("u-1", "customer"), {}, f"props.stage: {STAGES}"),
    ("lead_stage", ("", "won"), {"anonymous_id": "a-1"}, "user_id: must not be empty"),
    ("live_heartbeat", ("s", "v", 1.5), {"anonymous_id": "a"}, "props.watched_ms: expected integer, got number"),
    ("live_heartbeat", ("s", "v", 10), {"mode": "vod", "anonymous_id": "a"}, "props.mode: must be one of live, replay"),
    ("track", ("page_view",), {"ts": 1795428000, "anonymous_id": "a"}, "ts: out of range (2000-01-01 to 2100-01-01)"),
    ("track", ("page_view",), {}, "anonymous_id: anonymous_id or user_id is required"),
    ("track", ("download",), {"anonymous_id": "a", "props": {"file_name": "wp.pdf"}}, "props.file_url: required"),
    ("page", (), {"anonymous_id": "a", "url": "https://e.com/" + "p" * 2040}, "url: longer than 2048 characters"),
    ("identify", ("u-1", ["cto"]), {}, "props.traits: expected object, got array"),
]


def test_without_orjson_the_bytes_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard library is the fallback: the same wire bytes, so the same sizes and the same stored props.

    Except the spelling of floats written with an exponent (1e22 / 1e+22): the same number either way.
    """
    values: list[object] = [v["event"] for v in VALID] + [
        {"at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "day": datetime(2026, 1, 2).date(),
         "id": uuid.UUID("0b1f3a9e-1234-4d7c-9a5e-8b2c3d4e5f60"), "amount": Decimal("0.1"), "tags": ("a", "标"),
         "n": [0, -1, 2**63 - 1, 1.5, 123456.789], "nested": {"ok": True, "none": None, "s": "\u2028\"\\"}}]
    exponents = {"small": 1e-7, "large": 1e22}
    with_orjson = [contract.dumps(v) for v in values]
    exponents_with_orjson = contract.dumps(exponents)
    monkeypatch.setattr(contract, "orjson", None)
    assert [contract.dumps(v) for v in values] == with_orjson
    assert json.loads(contract.dumps(exponents)) == json.loads(exponents_with_orjson) == exponents


@pytest.mark.parametrize(("method", "args", "kwargs", "error"), MISTAKES, ids=[m[3] for m in MISTAKES])
def test_strict_mode_raises_in_the_caller(method: str, args: tuple[object, ...], kwargs: dict[str, object],
                                          error: str) -> None:
    client = clicktrail.Client("sk_x", host=NOWHERE, strict=True)
    with pytest.raises(clicktrail.ContractError) as raised:
        getattr(client, method)(*args, **kwargs)
    assert str(raised.value) == error
    assert client.stats() == clicktrail.Stats()
    client.shutdown()


def test_a_misspelt_field_is_a_mistake_too() -> None:
    client = clicktrail.Client("sk_x", host=NOWHERE, strict=True)
    with pytest.raises(clicktrail.ContractError, match=r"^chanel: not an event field"):
        client.track("page_view", anonymous_id="a", chanel="wx")  # type: ignore[call-arg]
    client.shutdown()


def test_production_mode_logs_counts_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[clicktrail.Failure] = []
    client = clicktrail.Client("sk_x", host=NOWHERE, on_error=failures.append)
    with caplog.at_level(logging.WARNING, logger="clicktrail"):
        assert client.registration("", user_id="u-1", event_id="reg-1") is None
        assert client.lead_stage("u-1", "customer", event_id="lead-1") is None  # type: ignore[arg-type]
    assert failures == [clicktrail.Failure("reg-1", "props.stream_id: must not be empty"),
                        clicktrail.Failure("lead-1", f"props.stage: {STAGES}")]
    assert client.stats() == clicktrail.Stats(invalid=2)
    assert [r.getMessage() for r in caplog.records] == [
        "clicktrail: event reg-1 invalid: props.stream_id: must not be empty",
        f"clicktrail: event lead-1 invalid: props.stage: {STAGES}",
    ]
    client.shutdown()


def test_typed_literals_match_the_schemas() -> None:
    def enum(event: str, prop: str) -> list[str]:
        spec = json.loads((SCHEMAS / "events" / f"{event}.schema.json").read_text("utf-8"))
        values: list[str] = spec["properties"]["props"]["properties"][prop]["enum"]
        return values

    hints = typing.get_type_hints(clicktrail.Client.live_heartbeat)
    assert list(typing.get_args(hints["mode"])) == enum("live_heartbeat", "mode")
    hints = typing.get_type_hints(clicktrail.Client.lead_stage)
    assert list(typing.get_args(hints["stage"])) == enum("lead_stage", "stage")
    core = json.loads((SCHEMAS / "event.schema.json").read_text("utf-8"))["properties"]
    assert set(clicktrail.Fields.__annotations__) == set(core) - {"event", "props"}


def test_module_functions_need_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clicktrail, "_default", None)
    with pytest.raises(RuntimeError, match=r"clicktrail\.init"):
        clicktrail.track("page_view", anonymous_id="a")
    assert clicktrail.track.__doc__ == clicktrail.Client.track.__doc__
