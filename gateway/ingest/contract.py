"""The event contract, wire format v1: decode and validate what clients send.

The rules live in ``schemas/*.json``, the one copy the SDKs share. This module turns them into
msgspec types at import time, so no second copy can drift and validation runs in msgspec's C code.
It supports exactly the JSON Schema subset those files use and refuses to import on anything else,
so a rule added to a schema can never be silently ignored here.

Error strings are public (SDKs produce the same ones): ``<path>: <problem>``. Null means the same
as an absent field: optional fields accept it, required ones report ``<path>: required``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "_data" / "schemas"  # see pyproject.toml: package-data


class ContractError(ValueError):
    """str(exc) is the public error string, e.g. 'props.stream_id: required'."""


class SchemaError(Exception):
    """A schema file uses something this module does not implement; raised at import."""


class Event(msgspec.Struct, gc=False):
    """A normalized, validated event; absent strings are ''."""

    event: str
    event_id: str
    anonymous_id: str
    user_id: str
    session_id: str
    ts: int | None  # ms since the epoch, UTC; None when the client sent none
    channel: str
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_content: str
    utm_term: str
    sharer: str
    url: str
    referrer: str
    title: str
    props: bytes  # a JSON object, compact; b'{}' when absent
    #: The client of the event's real origin, '' when the client sent none (the request's is used then):
    ip: str  # canonical form (parse_ip)
    user_agent: str


class Envelope(msgspec.Struct, gc=False):
    batch: list[msgspec.Raw]  # undecoded, so one bad event cannot fail the rest
    sent_at: int | None
    key: str


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text("utf-8"))


_CORE = _load("event.schema.json")
_TIME = _CORE["$defs"]["time"]
MAX_EVENT_BYTES: int = _CORE["x-maxBytes"]
MAX_BATCH_EVENTS: int = _load("batch.schema.json")["properties"]["batch"]["maxItems"]
#: The longest User-Agent stored, an event's or the request header's.
MAX_USER_AGENT_CHARS: int = _CORE["properties"]["user_agent"]["maxLength"]

# --- times -------------------------------------------------------------------------------------

_TIME_MIN: int = _TIME["minimum"]
_TIME_MAX: int = _TIME["exclusiveMaximum"]
# RFC 3339 date-time exactly (ASCII digits, a zone required): a string without a zone names no
# instant, and ISO 8601 forms beyond RFC 3339 would have to be re-implemented by every SDK.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


_NOT_A_TIME = "not a valid time (milliseconds since the epoch or RFC 3339)"
_OUT_OF_RANGE = f"out of range ({_day(_TIME_MIN)} to {_day(_TIME_MAX)})"


def parse_time(value: object, path: str) -> int:
    """Milliseconds since the epoch from a number of ms or an RFC 3339 string; ContractError otherwise.

    Only absurd times are refused (the range in schemas/event.schema.json): the gateway corrects
    client clock skew afterwards, and a time in seconds instead of ms lands in 1970 and is caught.
    """
    if type(value) is int or type(value) is float:  # not isinstance: bool is an int
        ms = value
    elif type(value) is str and (m := _RFC3339.fullmatch(value)):
        year, month, day, hour, minute, second, fraction, sign, off_h, off_m = m.groups()
        try:
            when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
        except ValueError:  # 2026-02-30, hour 24, leap second 60
            raise ContractError(f"{path}: {_NOT_A_TIME}") from None
        ms = (when - _EPOCH) // _MS + (int(fraction[:3].ljust(3, "0")) if fraction else 0)
        if sign:
            if int(off_h) > 23 or int(off_m) > 59:
                raise ContractError(f"{path}: {_NOT_A_TIME}")
            offset = (int(off_h) * 60 + int(off_m)) * 60_000
            ms += -offset if sign == "+" else offset
    else:
        raise ContractError(f"{path}: {_NOT_A_TIME}")
    if not _TIME_MIN <= ms < _TIME_MAX:  # also false for nan
        raise ContractError(f"{path}: {_OUT_OF_RANGE}")
    return int(ms)


# --- addresses -----------------------------------------------------------------------------------


def parse_ip(value: str, path: str) -> str:
    """The canonical form of an IPv4 or IPv6 address (the $defs/ip of event.schema.json); ContractError otherwise.

    One spelling per address, so that the stored column groups and anonymizes alike whoever wrote it. A zone
    (fe80::1%eth0) names an interface of the sender's own machine, nothing anyone else can place, so it is
    refused; an IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4 client) is the IPv4
    address it maps, and Python versions spell it differently besides.
    """
    try:
        if "%" not in value:
            address = ipaddress.ip_address(value)
            if address.version == 6 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            return str(address)
    except ValueError:
        pass
    raise ContractError(f"{path}: not an IPv4 or IPv6 address")


# --- building msgspec types from the schemas -----------------------------------------------------

_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float}
_META = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "minimum": "ge",
    "exclusiveMinimum": "gt",
    "maximum": "le",
    "exclusiveMaximum": "lt",
}
_FIELD_KEYWORDS = {"type", "enum", "format", "description", "examples", "$comment", *_META}
#: JSON Schema has a format for each IP version; an address field takes either (parse_ip).
_IP_FORMATS = [{"format": "ipv4"}, {"format": "ipv6"}]


def _field(spec: dict[str, Any], required: bool, where: str, defs: dict[str, Any], obj: Any) -> tuple[Any, str | None]:
    """The msgspec type of one property (obj for objects), and what checks it beyond msgspec: "time" (parse_time),
    "ip" (parse_ip) or None."""
    if "$ref" in spec:
        ref = spec["$ref"].removeprefix("#/$defs/")
        if ref not in defs:
            raise SchemaError(f"{where}: only references to this file's $defs are supported")
        spec = defs[ref] | {k: v for k, v in spec.items() if k != "$ref"}
    fmt = None
    if "anyOf" in spec:
        if spec["anyOf"] != _IP_FORMATS:
            raise SchemaError(f"{where}: anyOf is supported only as {_IP_FORMATS}")
        spec = {k: v for k, v in spec.items() if k != "anyOf"}
        fmt = "ip"
    if unknown := spec.keys() - _FIELD_KEYWORDS:
        raise SchemaError(f"{where}: unsupported keywords {sorted(unknown)}")
    if spec.get("minLength", 1) != 1:  # the error strings know only "must not be empty"
        raise SchemaError(f"{where}: minLength other than 1 is not supported")
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    nullable = "null" in types
    if nullable == required:
        raise SchemaError(f"{where}: optional fields must allow null (it means absent), required ones must not")
    types = [t for t in types if t != "null"]
    if fmt == "ip" and (types != ["string"] or "format" in spec or "enum" in spec):
        raise SchemaError(f"{where}: an address (anyOf ipv4, ipv6) must be a string without other formats or enum")
    if spec.get("format") == "date-time" and types == ["number", "string"]:
        return int | float | str | None, "time"
    if "format" in spec or len(types) != 1:
        raise SchemaError(f"{where}: unsupported type {spec['type']} / format {spec.get('format')}")
    if obj is msgspec.Raw and types == ["object"]:
        return obj, None  # Raw takes null too (and Raw | None is not a valid msgspec type)
    kind = obj if types == ["object"] else _TYPES[types[0]]
    if "enum" in spec:
        kind = Literal[tuple(v for v in spec["enum"] if v is not None)]
    if meta := {_META[k]: v for k, v in spec.items() if k in _META}:
        kind = Annotated[kind, msgspec.Meta(**meta)]
    return (kind | None if nullable else kind), fmt


def _struct(name: str, schema: dict[str, Any], where: str, defs: dict[str, Any],
            obj: Any) -> tuple[type, dict[str, str]]:
    """A Struct type for an object schema (obj for object fields), and by name the fields checked beyond msgspec
    ("time" or "ip", see _field)."""
    required = set(schema.get("required", ()))
    if missing := required - schema["properties"].keys():
        raise SchemaError(f"{where}: required {sorted(missing)} not among the properties")
    fields: list[Any] = []
    formats = {}
    for key, spec in schema["properties"].items():
        kind, fmt = _field(spec, key in required, f"{where}.{key}", defs, obj)
        fields.append((key, kind) if key in required else (key, kind, None))
        if fmt is not None:
            formats[key] = fmt
    return msgspec.defstruct(name, fields, kw_only=True, gc=False), formats


def _identity(schema: dict[str, Any]) -> tuple[str, ...]:
    """The fields of which at least one must be non-empty (the core anyOf)."""
    names = []
    for branch in schema["anyOf"]:
        (name,) = branch["required"]
        if branch["properties"] != {name: {"type": "string", "minLength": 1}}:
            raise SchemaError(f"event.schema.json anyOf: unsupported branch {branch}")
        names.append(name)
    return tuple(names)


# props stays raw: None when absent, Raw(b'null') when null.
_CoreWire, _CORE_CHECKS = _struct("_CoreWire", _CORE, "event.schema.json", _CORE["$defs"], msgspec.Raw)
if set(_CoreWire.__struct_fields__) != set(Event.__struct_fields__):
    raise SchemaError("event.schema.json properties differ from the fields of contract.Event")
if _CORE_CHECKS != {"ts": "time", "ip": "ip"}:  # _event parses exactly these: another would go unchecked
    raise SchemaError(f"event.schema.json: times and addresses are {_CORE_CHECKS}; _event knows ts and ip only")
_IDENTITY = _identity(_CORE)
_IDENTITY_ERROR = f"{_IDENTITY[0]}: {' or '.join(_IDENTITY)} is required"


class _SingleWire(_CoreWire, kw_only=True, gc=False):
    """POST /v1/event: the event itself carries the envelope's fields."""

    key: str | None = None
    sent_at: int | float | str | None = None


class _EnvelopeWire(msgspec.Struct, gc=False):
    batch: list[msgspec.Raw] | None = None
    sent_at: int | float | str | None = None
    key: str | None = None


class _Rule(NamedTuple):
    """What a reserved event adds to the core contract."""

    props: msgspec.json.Decoder | None  # None: no props declared, any object will do
    core_required: tuple[str, ...]  # core fields that must be non-empty (user_id)
    messages: dict[str, str]  # problem for any error at a props path (enums)


_EVENT_KEYWORDS = {"$schema", "title", "description", "$ref", "required", "properties"}


def _rule(path: Path) -> _Rule:
    schema = json.loads(path.read_text("utf-8"))
    where = path.name
    name = path.name.removesuffix(".schema.json")
    props = schema["properties"]
    if unknown := schema.keys() - _EVENT_KEYWORDS:
        raise SchemaError(f"{where}: unsupported keywords {sorted(unknown)}")
    if schema.get("$ref") != "../event.schema.json" or props.get("event") != {"const": name}:
        raise SchemaError(f"{where}: must $ref ../event.schema.json and set event to const {name!r}")
    required = set(schema.get("required", ()))
    core = tuple(k for k in props if k not in ("event", "props"))
    for key in core:
        if key not in Event.__struct_fields__ or key not in required:
            raise SchemaError(f"{where}: {key} is not a core field or is not required")
        if props[key] != {"type": "string", "minLength": 1}:
            raise SchemaError(f"{where}: a required core field must be exactly a non-empty string")
    spec = props["props"]
    if unknown := spec.keys() - {"type", "required", "properties", "description"}:
        raise SchemaError(f"{where}: props: unsupported keywords {sorted(unknown)}")
    if spec["type"] != ("object" if "props" in required else ["object", "null"]):
        raise SchemaError(f'{where}: props must be "object" when required, else ["object", "null"]')
    if bool(spec.get("required")) != ("props" in required):  # so generic validators refuse absent props too
        raise SchemaError(f"{where}: props must be required exactly when it has required members")
    decoder = None
    messages = {}
    if spec.get("properties"):
        struct, formats = _struct(name, spec, where, {}, dict[str, Any])
        if formats:
            raise SchemaError(f"{where}: times and addresses in props are not supported")
        decoder = msgspec.json.Decoder(struct)
        for key, field in spec["properties"].items():
            if "enum" in field:
                values = ", ".join(v for v in field["enum"] if v is not None)
                messages[f"props.{key}"] = f"must be one of {values}"
    return _Rule(decoder, core, messages)


_RULES: dict[str, _Rule] = {
    p.name.removesuffix(".schema.json"): _rule(p) for p in sorted((SCHEMA_DIR / "events").glob("*.schema.json"))
}
RESERVED_EVENTS = frozenset(_RULES)

# --- translating msgspec's errors into the public strings ----------------------------------------

_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_EXPECTED = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")
_LENGTH = re.compile(r"Expected `str` of length ([<>]=) ([0-9]+)")
_BOUND = re.compile(r"Expected `[a-z]+` ([<>]=?) (\S+)")


def _name(kind: str) -> str:
    return _NAMES.get(kind, kind)


def _problem(text: str, path: str, messages: dict[str, str], is_field: bool) -> str:
    if m := _EXPECTED.fullmatch(text):
        if m[2] == "null" and is_field:  # null means absent, and only fields can be absent
            return "required"
        if path in messages:
            return messages[path]
        expected = " or ".join(_name(k) for k in m[1].split(" | ") if k != "null")
        return f"expected {expected}, got {_name(m[2])}"
    if path in messages:
        return messages[path]
    if m := _LENGTH.fullmatch(text):
        return f"longer than {m[2]} characters" if m[1] == "<=" else "must not be empty"
    if m := _BOUND.fullmatch(text):
        bound = float(m[2])  # msgspec writes 0.0 for a float bound; the schema says 0
        return f"must be {m[1]} {int(bound) if bound.is_integer() else bound}"
    return text[0].lower() + text[1:]  # e.g. 'number out of range'


def _error(exc: msgspec.ValidationError, root: str, prefix: str, messages: dict[str, str]) -> ContractError:
    """ContractError for a msgspec error; root names the whole value, prefix its fields' paths."""
    text, _, at = str(exc).partition(" - at `$")
    sub = at.rstrip("`").lstrip(".")
    if m := _MISSING.fullmatch(text):
        return ContractError(f"{prefix}{sub + '.' if sub else ''}{m[1]}: required")
    path = prefix + sub if sub else root
    return ContractError(f"{path}: {_problem(text, path, messages, bool(sub))}")


_CORE_MESSAGES = {key: _NOT_A_TIME for key, check in _CORE_CHECKS.items() if check == "time"} | {"sent_at": _NOT_A_TIME}


def _decode(decoder: msgspec.json.Decoder, data: bytes | msgspec.Raw, root: str, json_root: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _error(exc, root, "", _CORE_MESSAGES) from None
    except msgspec.DecodeError as exc:
        raise _invalid_json(bytes(data), str(exc).removeprefix("JSON is malformed: "), json_root) from None
    except UnicodeDecodeError:  # older msgspec releases let this through for strings they decode
        raise _invalid_json(bytes(data), "invalid UTF-8", json_root) from None
    except RecursionError:  # msgspec nests no deeper than Python's recursion limit, even when skipping
        raise ContractError(f"{json_root}: invalid JSON: nested too deeply") from None


# A string that is not Unicode: raw bytes that are not UTF-8 (decoded with surrogateescape, they become
# U+DC80..U+DCFF), or a \u escape of half a surrogate pair.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _invalid_json(data: bytes, detail: str, json_root: str, path: str = "") -> ContractError:
    """The error for JSON msgspec refused (``detail``); a string that is not Unicode is named by its path.

    msgspec says nothing of where such a string is ("invalid UTF-8 encoded string"), or something
    misleading ("input data was truncated" for an unpaired surrogate escape it skips), so this error
    path reads the document again with the standard library, which keeps such strings. ``path`` is
    the document's own path, '' when it is the root (``json_root`` names it then).
    """
    try:
        text, pattern, problem = data.decode(), _SURROGATE, "unpaired surrogate"
    except UnicodeDecodeError:
        text, pattern, problem = data.decode(errors="surrogateescape"), _ESCAPED_BYTE, "invalid UTF-8"
    try:
        where = _path_of(json.loads(text), pattern, path)
    except (ValueError, RecursionError):  # not JSON for the standard library either: msgspec's detail says why
        where = None
    if where is None:
        return ContractError(f"{json_root}: invalid JSON: {detail[0].lower()}{detail[1:]}")
    return ContractError(f"{where or json_root}: invalid JSON: {problem}")


def _path_of(value: object, pattern: re.Pattern[str], path: str) -> str | None:
    """The path of the first string matching ``pattern``, in document order; a key's is its object's."""
    if type(value) is str:
        return path if pattern.search(value) else None
    if type(value) is dict:
        for key, item in value.items():
            if pattern.search(key):
                return path
            if (found := _path_of(item, pattern, f"{path}.{key}" if path else key)) is not None:
                return found
    elif type(value) is list:
        for index, item in enumerate(value):
            if (found := _path_of(item, pattern, f"{path}[{index}]")) is not None:
                return found
    return None


_CORE_DECODER = msgspec.json.Decoder(_CoreWire)
_SINGLE_DECODER = msgspec.json.Decoder(_SingleWire)
_ENVELOPE_DECODER = msgspec.json.Decoder(_EnvelopeWire)
_OBJECT_DECODER = msgspec.json.Decoder(dict[str, Any])

# --- the API ------------------------------------------------------------------------------------


def _props(raw: msgspec.Raw | None, rule: _Rule | None) -> bytes:
    """The props object as compact JSON, checked against the event's rule.

    Props are stored as they came (minus whitespace), not re-encoded from what was decoded, so
    extra props and number spellings survive; reserved props are decoded only to validate them.
    Absent or null props are checked as {}, so the error names the prop that is missing.
    """
    data = b"{}"
    try:
        if raw is not None:
            data = msgspec.json.format(raw, indent=-1)
        if data == b"null":
            data = b"{}"
        if not data.isascii():
            data.decode()  # msgspec skips extra props without checking their UTF-8
        if rule is not None and rule.props is not None:
            rule.props.decode(data)
        elif data[0] != 0x7B:  # '{': anything else is not an object, and the decoder says what it is
            _OBJECT_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise _error(exc, "props", "props.", rule.messages if rule else {}) from None
    except UnicodeDecodeError:
        raise _invalid_json(data, "invalid UTF-8", "props", "props") from None
    except RecursionError:  # as in _decode; the event around them went just deep enough
        raise ContractError("props: invalid JSON: nested too deeply") from None
    return data


def _event(wire: Any) -> Event:
    if not (wire.anonymous_id or wire.user_id):
        raise ContractError(_IDENTITY_ERROR)
    rule = _RULES.get(wire.event)
    if rule is not None:
        for key in rule.core_required:
            value = getattr(wire, key)
            if not value:
                raise ContractError(f"{key}: {'required' if value is None else 'must not be empty'}")
    return Event(
        wire.event,
        wire.event_id,
        wire.anonymous_id or "",
        wire.user_id or "",
        wire.session_id or "",
        None if wire.ts is None else parse_time(wire.ts, "ts"),
        wire.channel or "",
        wire.utm_source or "",
        wire.utm_medium or "",
        wire.utm_campaign or "",
        wire.utm_content or "",
        wire.utm_term or "",
        wire.sharer or "",
        wire.url or "",
        wire.referrer or "",
        wire.title or "",
        _props(wire.props, rule),
        "" if wire.ip is None else parse_ip(wire.ip, "ip"),
        wire.user_agent or "",
    )


def decode_event(raw: bytes | msgspec.Raw) -> Event:
    """Decode and validate one event (an element of a batch); ContractError with the first problem."""
    if len(raw) > MAX_EVENT_BYTES:
        raise ContractError(f"event: larger than {MAX_EVENT_BYTES} bytes")
    return _event(_decode(_CORE_DECODER, raw, "event", "event"))


class _EventId(msgspec.Struct, gc=False):
    event_id: object = None


_EVENT_ID_DECODER = msgspec.json.Decoder(_EventId)


def event_id_of(raw: msgspec.Raw) -> str | None:
    """The event_id of an event decode_event refused, when it has a readable one, so the client can match it."""
    try:
        value = _EVENT_ID_DECODER.decode(raw).event_id
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):  # as in _decode
        return None
    return value if type(value) is str else None


def decode_single(body: bytes) -> tuple[Event, int | None, str]:
    """Decode the body of POST /v1/event: (event, sent_at in ms or None, key or '')."""
    if len(body) > MAX_EVENT_BYTES:
        raise ContractError(f"event: larger than {MAX_EVENT_BYTES} bytes")
    wire = _decode(_SINGLE_DECODER, body, "event", "body")
    event = _event(wire)
    sent_at = None if wire.sent_at is None else parse_time(wire.sent_at, "sent_at")
    return event, sent_at, wire.key or ""


def decode_batch(body: bytes) -> Envelope:
    """Decode the envelope of POST /v1/batch; the events stay raw for decode_event, one at a time."""
    try:
        wire = _decode(_ENVELOPE_DECODER, body, "body", "body")
    except ContractError:
        # msgspec refuses a whole body for an unpaired surrogate escape in one of its events (it checks
        # them even in what it only skips), as a browser SDK's slice() through an emoji makes; the events
        # are then cut out by hand, so that decode_event refuses only that one.
        wire = _split_batch(body)
        if wire is None:
            raise
    if wire.batch is None:
        raise ContractError("batch: required")
    if not wire.batch:
        raise ContractError("batch: empty")
    if len(wire.batch) > MAX_BATCH_EVENTS:
        raise ContractError(f"batch: more than {MAX_BATCH_EVENTS} events")
    sent_at = None if wire.sent_at is None else parse_time(wire.sent_at, "sent_at")
    return Envelope(wire.batch, sent_at, wire.key or "")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_STDLIB = json.JSONDecoder()


def _split_batch(body: bytes) -> _EnvelopeWire | None:
    """The envelope, its batch cut into the events' own bytes by the standard library's parser, which
    keeps unpaired surrogates; None if there is no surrogate escape or no batch array to cut."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    text = body.decode(errors="surrogateescape")  # and back the same way: every byte as it came
    try:
        found = _batch_array(text)
    except (ValueError, RecursionError):
        return None
    if found is None:
        return None
    events, start, end = found
    rest = (text[:start] + "[]" + text[end:]).encode(errors="surrogateescape")
    wire = _decode(_ENVELOPE_DECODER, rest, "body", "body")  # the envelope's own fields, checked as always
    wire.batch = [msgspec.Raw(event.encode(errors="surrogateescape")) for event in events]
    return wire


def _batch_array(text: str) -> tuple[list[str], int, int] | None:
    """The texts of the elements of the top-level ``batch`` array, and where the array starts and ends.

    Only the array is parsed strictly; what lies outside it is left to msgspec, which decodes it next.
    """
    i = _space(text, 0)
    if text[i : i + 1] != "{":
        return None
    found = None
    i = _space(text, i + 1)
    while text[i : i + 1] == '"':
        key, i = _STDLIB.raw_decode(text, i)
        i = _space(text, i)
        if text[i : i + 1] != ":":
            return None
        i = _space(text, i + 1)
        if key == "batch" and text[i : i + 1] == "[":
            start, events = i, []
            i = _space(text, i + 1)
            while text[i : i + 1] != "]":
                if events:  # a comma between two elements, and none before the ']' (raw_decode refuses it)
                    if text[i : i + 1] != ",":
                        return None
                    i = _space(text, i + 1)
                _, end = _STDLIB.raw_decode(text, i)
                events.append(text[i:end])
                i = _space(text, end)
            i += 1
            found = (events, start, i)
        else:
            _, i = _STDLIB.raw_decode(text, i)
        i = _space(text, i)
        if text[i : i + 1] != ",":
            break
        i = _space(text, i + 1)
    return found


def _space(text: str, i: int) -> int:
    while text[i : i + 1] in (" ", "\t", "\n", "\r"):
        i += 1
    return i
