"""gateway.ingest.contract against the conformance vectors in schemas/vectors and the envelope rules.

Expected values are written by hand from the contract (schemas/README.md), never computed by the
code under test, so a drift in either shows up here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.ingest import contract
from gateway.ingest.contract import ContractError, decode_batch, decode_event, decode_single, parse_time

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
VALID = json.loads((SCHEMAS / "vectors" / "valid.json").read_text("utf-8"))["vectors"]
INVALID = json.loads((SCHEMAS / "vectors" / "invalid.json").read_text("utf-8"))["vectors"]

# The contract's list of reserved events, by hand: the decoder reads schemas/events/, so comparing
# it with the directory alone could not notice a file deleted or added by mistake.
RESERVED = {
    "page_view",
    "page_leave",
    "registration",
    "live_join",
    "live_leave",
    "live_heartbeat",
    "interaction",
    "download",
    "form_submit",
    "identify",
    "lead_stage",
}
HEARTBEAT = {
    "event": "live_heartbeat",
    "event_id": "e-1",
    "anonymous_id": "a-1",
    "props": {"stream_id": "live-1", "view_id": "v-1", "mode": "live", "watched_ms": 30000},
}
TIME_ERROR = "not a valid time (milliseconds since the epoch or RFC 3339)"


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def error_of(call: Any, *args: Any) -> str:
    with pytest.raises(ContractError) as info:
        call(*args)
    return str(info.value)


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector(vector: dict[str, Any]) -> None:
    event = decode_event(encode(vector["event"]))
    got = msgspec.structs.asdict(event)
    got["props"] = json.loads(event.props)
    assert {key: got[key] for key in vector["expect"]} == vector["expect"]


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector(vector: dict[str, Any]) -> None:
    assert error_of(decode_event, encode(vector["event"])) == vector["error"]


def test_vectors_are_many_unique_and_cover_every_reserved_event() -> None:
    names = [v["name"] for v in VALID + INVALID]
    assert len(names) == len(set(names))
    assert len(names) >= 50
    for kind in (VALID, INVALID):
        named = {v["event"]["event"] for v in kind if isinstance(v["event"], dict) and "event" in v["event"]}
        assert named >= RESERVED


def test_schema_files_and_decoder_agree_on_reserved_events() -> None:
    files = {p.name.removesuffix(".schema.json") for p in (SCHEMAS / "events").glob("*.schema.json")}
    assert files == RESERVED
    assert contract.RESERVED_EVENTS == RESERVED


def test_event_fields_are_the_schema_properties() -> None:
    schema = json.loads((SCHEMAS / "event.schema.json").read_text("utf-8"))
    assert list(schema["properties"]) == list(contract.Event.__struct_fields__)


def test_limits() -> None:
    assert contract.MAX_EVENT_BYTES == 32768
    assert contract.MAX_BATCH_EVENTS == 500


# --- the event as bytes --------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """HEARTBEAT encoded compactly, with a pad prop that makes it exactly size bytes."""
    base = len(msgspec.json.encode(HEARTBEAT | {"props": HEARTBEAT["props"] | {"pad": ""}}))
    event = HEARTBEAT | {"props": HEARTBEAT["props"] | {"pad": "x" * (size - base)}}
    data = msgspec.json.encode(event)
    assert len(data) == size
    return data


def test_event_of_32768_bytes_is_accepted() -> None:
    assert decode_event(padded(32768)).event == "live_heartbeat"


def test_event_of_32769_bytes_is_refused() -> None:
    assert error_of(decode_event, padded(32769)) == "event: larger than 32768 bytes"


def test_limit_counts_bytes_not_characters() -> None:
    # 11,000 three-byte characters: well under 32768 characters, over 32768 bytes.
    data = encode(HEARTBEAT | {"props": HEARTBEAT["props"] | {"note": "直" * 11000}})
    assert error_of(decode_event, data) == "event: larger than 32768 bytes"


def test_props_are_stored_compact_and_as_sent() -> None:
    data = (
        b'{"event": "signup_click", "event_id": "e-1", "anonymous_id": "a-1",\n'
        b' "props": { "price" : 1.10, "big": 12345678901234567890, "text": "a b",\n "cn": "\\u76f4" } }'
    )
    assert decode_event(data).props == b'{"price":1.10,"big":12345678901234567890,"text":"a b","cn":"\\u76f4"}'


def test_reserved_props_keep_extra_props_and_spelling() -> None:
    data = b'{"event":"page_leave","event_id":"e","user_id":"u","props":{"scroll_pct":5E1,"engaged_ms":7,"k":[]}}'
    assert decode_event(data).props == b'{"scroll_pct":5E1,"engaged_ms":7,"k":[]}'


def test_absent_and_null_props_are_an_empty_object() -> None:
    assert decode_event(b'{"event":"x","event_id":"e","user_id":"u"}').props == b"{}"
    assert decode_event(b'{"event":"x","event_id":"e","user_id":"u","props":null}').props == b"{}"


def test_integer_spelled_with_a_fraction_is_not_an_integer() -> None:
    data = encode(HEARTBEAT | {"props": HEARTBEAT["props"] | {"watched_ms": 30000.0}})
    assert error_of(decode_event, data) == "props.watched_ms: expected integer, got number"


def test_raw_from_a_batch_is_accepted() -> None:
    envelope = decode_batch(b'{"batch":[' + encode(HEARTBEAT) + b"]}")
    assert decode_event(envelope.batch[0]).props == (
        b'{"stream_id":"live-1","view_id":"v-1","mode":"live","watched_ms":30000}'
    )


def test_invalid_json_event() -> None:
    assert error_of(decode_event, b'{"event": }').startswith("event: invalid JSON: ")


@pytest.mark.parametrize(
    "data",
    [
        b'{"event":"x","event_id":"e","user_id":"u\xff"}',
        b'{"event":"x","event_id":"e","user_id":"u","props":{"k":"\xc3"}}',
        b'{"event":"page_leave","event_id":"e","user_id":"u","props":{"engaged_ms":1,"scroll_pct":1,"k":"\xff"}}',
    ],
    ids=["core field", "custom props", "extra reserved prop"],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    assert error_of(decode_event, data).endswith("invalid JSON: invalid UTF-8")


# --- parse_time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1795428000123, 1795428000123),
        (1795428000123.75, 1795428000123),
        ("2026-11-23T10:00:00.123Z", 1795428000123),
        ("2026-11-23T18:00:00+08:00", 1795428000000),
        ("2026-11-23T10:00:00-00:00", 1795428000000),
    ],
)
def test_parse_time(value: object, ms: int) -> None:
    assert parse_time(value, "ts") == ms


@pytest.mark.parametrize(
    "value",
    [True, None, [], "", "2026-11-23T10:00:00", "\uff12\uff10\uff12\uff16-11-23T10:00:00Z"],
    ids=["boolean", "null", "array", "empty", "no zone", "fullwidth digits"],
)
def test_parse_time_refuses(value: object) -> None:
    assert error_of(parse_time, value, "sent_at") == f"sent_at: {TIME_ERROR}"


@pytest.mark.parametrize("value", [1795428000, float("inf"), float("nan")])
def test_parse_time_out_of_range(value: object) -> None:
    assert error_of(parse_time, value, "ts") == "ts: out of range (2000-01-01 to 2100-01-01)"


# --- envelopes -----------------------------------------------------------------------------------


def test_batch_envelope() -> None:
    body = b'{"batch":[' + encode(HEARTBEAT) + b', 1],"sent_at":"2026-11-23T18:00:00.5+08:00","key":"wk_1"}'
    envelope = decode_batch(body)
    assert (len(envelope.batch), envelope.sent_at, envelope.key) == (2, 1795428000500, "wk_1")
    assert bytes(envelope.batch[1]) == b"1"


def test_batch_envelope_defaults() -> None:
    envelope = decode_batch(b'{"batch":[{}],"sent_at":null,"other":1}')
    assert (envelope.sent_at, envelope.key) == (None, "")


def test_batch_of_500_events_is_accepted() -> None:
    assert len(decode_batch(b'{"batch":[' + b",".join([b"{}"] * 500) + b"]}").batch) == 500


def test_one_bad_event_does_not_fail_the_batch() -> None:
    envelope = decode_batch(b'{"batch":[' + encode(HEARTBEAT) + b',{"event":"x"}]}')
    assert decode_event(envelope.batch[0]).event == "live_heartbeat"
    assert error_of(decode_event, envelope.batch[1]) == "event_id: required"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"batch":[' + b",".join([b"{}"] * 501) + b"]}", "batch: more than 500 events"),
        (b'{"batch":[]}', "batch: empty"),
        (b"{}", "batch: required"),
        (b'{"batch":null}', "batch: required"),
        (b'{"batch":{}}', "batch: expected array, got object"),
        (b"[]", "body: expected object, got array"),
        (b'{"batch":[{}],"sent_at":"now"}', f"sent_at: {TIME_ERROR}"),
        (b'{"batch":[{}],"sent_at":false}', f"sent_at: {TIME_ERROR}"),
        (b'{"batch":[{}],"sent_at":1000}', "sent_at: out of range (2000-01-01 to 2100-01-01)"),
        (b'{"batch":[{}],"key":7}', "key: expected string, got integer"),
        (b'{"batch":[{}]', "body: invalid JSON: input data was truncated"),
        (b"", "body: invalid JSON: input data was truncated"),
        (b'{"batch":[{},]}', "body: invalid JSON: trailing comma in array (byte 13)"),
    ],
    ids=[
        "501 events",
        "empty",
        "missing",
        "null",
        "object",
        "body array",
        "sent_at words",
        "sent_at boolean",
        "sent_at seconds",
        "key number",
        "truncated",
        "empty body",
        "trailing comma",
    ],
)
def test_batch_envelope_errors(body: bytes, error: str) -> None:
    assert error_of(decode_batch, body) == error


def test_single_event_body() -> None:
    body = encode(HEARTBEAT | {"key": "wk_1", "sent_at": 1795428000999, "ts": 1795428000000})
    event, sent_at, key = decode_single(body)
    assert (event.event, event.ts, sent_at, key) == ("live_heartbeat", 1795428000000, 1795428000999, "wk_1")


def test_single_event_body_defaults() -> None:
    assert decode_single(encode(HEARTBEAT))[1:] == (None, "")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (encode(HEARTBEAT | {"sent_at": "soon"}), f"sent_at: {TIME_ERROR}"),
        (encode(HEARTBEAT | {"key": ["wk_1"]}), "key: expected string, got array"),
        (encode(HEARTBEAT | {"event_id": ""}), "event_id: must not be empty"),
        (b"[]", "event: expected object, got array"),
        (b"{", "body: invalid JSON: input data was truncated"),
        (padded(32769), "event: larger than 32768 bytes"),
    ],
    ids=["sent_at", "key", "event problem", "not an object", "invalid JSON", "too large"],
)
def test_single_event_body_errors(body: bytes, error: str) -> None:
    assert error_of(decode_single, body) == error
