"""The event contract (wire format v1), checked in the caller before an event is queued.

The rules come from the schema files shipped inside this package, byte-for-byte copies of the
repository's ``schemas/`` (made by ``sdk_py/sync_schemas.py``), the files the gateway builds its own
validator from. Error strings are the gateway's, ``<path>: <problem>``, so a mistake reads the same
in a stack trace here as in a rejection from the server. Like the gateway, this module implements
exactly the JSON Schema subset those files use and refuses to import on anything else: a rule added
to a schema can never be silently skipped on this side.

Values are checked as the JSON they become: ``int`` is an integer, ``float`` and ``Decimal`` are
numbers, ``bool`` is never a number, ``tuple`` is an array, ``None`` means absent.
"""

from __future__ import annotations

import ipaddress
import json
import math
import operator
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any, NamedTuple
from uuid import UUID

try:
    import orjson
except ImportError:  # the standard library's encoder gives the same bytes, only slower
    orjson = None  # type: ignore[assignment]


class ContractError(ValueError):
    """An event breaks the contract; str(exc) is the gateway's error string, e.g. 'props.stream_id: required'."""


class SchemaError(Exception):
    """A shipped schema uses something this module does not implement; raised at import."""


_SCHEMAS = resources.files(__package__) / "schemas"


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((_SCHEMAS / name).read_text("utf-8"))
    return schema


_CORE_SCHEMA = _load("event.schema.json")
_TIME = _CORE_SCHEMA["$defs"]["time"]
MAX_EVENT_BYTES: int = _CORE_SCHEMA["x-maxBytes"]
MAX_BATCH_EVENTS: int = _load("batch.schema.json")["properties"]["batch"]["maxItems"]

# --- times ---------------------------------------------------------------------------------------

_TIME_MIN: int = _TIME["minimum"]
_TIME_MAX: int = _TIME["exclusiveMaximum"]
# RFC 3339 exactly, a zone required: a time without one names no instant, and the looser ISO 8601
# forms would each have to be parsed alike by every SDK and the gateway.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _day(ms: int) -> str:
    return date.fromordinal(_EPOCH_DAY + ms // 86_400_000).isoformat()


_NOT_A_TIME = "not a valid time (milliseconds since the epoch or RFC 3339)"
_OUT_OF_RANGE = f"out of range ({_day(_TIME_MIN)} to {_day(_TIME_MAX)})"


def parse_time(value: object, path: str = "ts") -> int:
    """Milliseconds since the epoch from a number of ms or an RFC 3339 string; ContractError otherwise.

    Only absurd instants are refused (the range in event.schema.json): seconds sent for ms land in
    1970 and are caught, while ordinary clock skew is the gateway's to correct.
    """
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        if not math.isfinite(value):  # JSON has no infinity; the gateway reads 1e400 as not a time
            raise ContractError(f"{path}: {_NOT_A_TIME}")
        ms = int(value)
    elif isinstance(value, str) and (m := _RFC3339.fullmatch(value)):
        year, month, day, hour, minute, second, fraction, sign, off_h, off_m = m.groups()
        try:
            when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
        except ValueError:  # February 30, hour 24, a leap second
            raise ContractError(f"{path}: {_NOT_A_TIME}") from None
        if sign and (int(off_h) > 23 or int(off_m) > 59):
            raise ContractError(f"{path}: {_NOT_A_TIME}")
        offset = (int(off_h) * 60 + int(off_m)) * 60_000 if sign else 0
        ms = ((when.toordinal() - _EPOCH_DAY) * 86_400 + when.hour * 3600 + when.minute * 60 + when.second) * 1000
        ms += int(fraction[:3].ljust(3, "0")) if fraction else 0
        ms += -offset if sign == "+" else offset
    else:
        raise ContractError(f"{path}: {_NOT_A_TIME}")
    if not _TIME_MIN <= ms < _TIME_MAX:
        raise ContractError(f"{path}: {_OUT_OF_RANGE}")
    return ms


def _check_ip(value: str, path: str) -> None:
    """ContractError unless ``value`` is an IPv4 or IPv6 address as the gateway reads one (``$defs/ip``).

    The SDK sends it as given; the gateway stores its canonical form. A zone (``fe80::1%eth0``) names an
    interface of the sender's own machine, no address anyone else can place.
    """
    try:
        if "%" not in value:
            ipaddress.ip_address(value)
            return
    except ValueError:
        pass
    raise ContractError(f"{path}: not an IPv4 or IPv6 address")


# --- compiling the schemas into field rules -------------------------------------------------------

_KINDS: dict[type, str] = {str: "string", int: "integer", float: "number", Decimal: "number", bool: "boolean",
                           dict: "object", list: "array", tuple: "array", type(None): "null"}
_BOUNDS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "minimum": (">=", operator.ge),
    "exclusiveMinimum": (">", operator.gt),
    "maximum": ("<=", operator.le),
    "exclusiveMaximum": ("<", operator.lt),
}
_FIELD_KEYWORDS = {"type", "enum", "format", "description", "examples", "$comment", "minLength", "maxLength", *_BOUNDS}
#: JSON Schema has a format for each IP version; an address field takes either (_check_ip).
_IP_FORMATS = [{"format": "ipv4"}, {"format": "ipv6"}]


class _Field(NamedTuple):
    name: str
    path: str
    kind: str  # a JSON type other than null, or "time"
    required: bool
    non_empty: bool
    max_length: int | None
    bounds: tuple[tuple[str, float, Callable[[Any, Any], bool]], ...]
    enum: tuple[object, ...] | None
    address: bool  # a string that must be an IP address


def _kind(value: object) -> str:
    """The JSON type a Python value is written as; subclasses (a str enum, an OrderedDict) count as their base."""
    kind = _KINDS.get(type(value))
    if kind is None:
        kind = next((k for t, k in _KINDS.items() if isinstance(value, t)), type(value).__name__)
    return kind


def _field(name: str, path: str, spec: dict[str, Any], required: bool, defs: dict[str, Any]) -> _Field:
    if "$ref" in spec:
        ref = spec["$ref"].removeprefix("#/$defs/")
        if ref not in defs:
            raise SchemaError(f"{path}: only references to this file's $defs are supported")
        spec = defs[ref] | {k: v for k, v in spec.items() if k != "$ref"}
    address = "anyOf" in spec
    if address:
        if spec["anyOf"] != _IP_FORMATS:
            raise SchemaError(f"{path}: anyOf is supported only as {_IP_FORMATS}")
        spec = {k: v for k, v in spec.items() if k != "anyOf"}
    if unknown := spec.keys() - _FIELD_KEYWORDS:
        raise SchemaError(f"{path}: unsupported keywords {sorted(unknown)}")
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if ("null" in types) == required:
        raise SchemaError(f"{path}: optional fields must allow null (it means absent), required ones must not")
    types = [t for t in types if t != "null"]
    if address and (types != ["string"] or "format" in spec or "enum" in spec):
        raise SchemaError(f"{path}: an address (anyOf ipv4, ipv6) must be a string without other formats or enum")
    if spec.get("format") == "date-time" and types == ["number", "string"]:
        return _Field(name, path, "time", required, False, None, (), None, False)  # its range is the core's time
    if "format" in spec or len(types) != 1 or types[0] not in _KINDS.values():
        raise SchemaError(f"{path}: unsupported type {spec['type']}")
    if spec.get("minLength", 1) != 1:  # the error strings know only "must not be empty"
        raise SchemaError(f"{path}: minLength other than 1 is not supported")
    enum = tuple(v for v in spec["enum"] if v is not None) if "enum" in spec else None
    bounds = tuple((op, spec[key], check) for key, (op, check) in _BOUNDS.items() if key in spec)
    return _Field(name, path, types[0], required, "minLength" in spec, spec.get("maxLength"), bounds, enum, address)


def _fields(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, _Field]:
    required = set(schema.get("required", ()))
    if missing := required - schema["properties"].keys():
        raise SchemaError(f"{prefix or 'event'}: required {sorted(missing)} not among the properties")
    return {name: _field(name, prefix + name, spec, name in required, defs)
            for name, spec in schema["properties"].items()}


def _identity(schema: dict[str, Any]) -> tuple[str, ...]:
    """The fields of which at least one must be non-empty (the core's anyOf)."""
    names = []
    for branch in schema["anyOf"]:
        (name,) = branch["required"]
        if branch["properties"] != {name: {"type": "string", "minLength": 1}}:
            raise SchemaError(f"event.schema.json anyOf: unsupported branch {branch}")
        names.append(name)
    return tuple(names)


_CORE = _fields(_CORE_SCHEMA, "", _CORE_SCHEMA["$defs"])
CORE_FIELDS = frozenset(_CORE)
_CORE_REQUIRED = tuple(name for name, field in _CORE.items() if field.required)
_IDENTITY = _identity(_CORE_SCHEMA)
_IDENTITY_ERROR = f"{_IDENTITY[0]}: {' or '.join(_IDENTITY)} is required"


class _Rule(NamedTuple):
    """What a reserved event adds to the core contract."""

    core_required: tuple[str, ...]  # core fields that must be non-empty (user_id)
    props: tuple[_Field, ...]  # declared props, in schema order; any other prop is allowed


_EVENT_KEYWORDS = {"$schema", "title", "description", "$ref", "required", "properties"}


def _rule(name: str, schema: dict[str, Any]) -> _Rule:
    where = f"{name}.schema.json"
    props = schema["properties"]
    required = set(schema.get("required", ()))
    if unknown := schema.keys() - _EVENT_KEYWORDS:
        raise SchemaError(f"{where}: unsupported keywords {sorted(unknown)}")
    if schema.get("$ref") != "../event.schema.json" or props.get("event") != {"const": name}:
        raise SchemaError(f"{where}: must $ref ../event.schema.json and set event to const {name!r}")
    core = tuple(key for key in props if key not in ("event", "props"))
    for key in core:
        if key not in _CORE or key not in required or props[key] != {"type": "string", "minLength": 1}:
            raise SchemaError(f"{where}: {key} must be a core field, required, and exactly a non-empty string")
    spec = props["props"]
    if unknown := spec.keys() - {"type", "required", "properties", "description"}:
        raise SchemaError(f"{where}: props: unsupported keywords {sorted(unknown)}")
    if spec["type"] != ("object" if "props" in required else ["object", "null"]):
        raise SchemaError(f'{where}: props must be "object" when required, else ["object", "null"]')
    if bool(spec.get("required")) != ("props" in required):
        raise SchemaError(f"{where}: props must be required exactly when it has required members")
    declared = _fields(spec, "props.", {}).values() if spec.get("properties") else ()
    if any(field.kind == "time" for field in declared):
        raise SchemaError(f"{where}: times in props are not supported")
    return _Rule(core, tuple(declared))


_RULES: dict[str, _Rule] = {}
for _path in sorted((_SCHEMAS / "events").iterdir(), key=lambda p: p.name):
    if _path.name.endswith(".schema.json"):
        _name = _path.name.removesuffix(".schema.json")
        _RULES[_name] = _rule(_name, json.loads(_path.read_text("utf-8")))
RESERVED_EVENTS = frozenset(_RULES)

# --- checking --------------------------------------------------------------------------------------


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _check(field: _Field, value: object) -> None:
    """Raise ContractError if a present (non-null) value breaks its field's rule."""
    if field.kind == "time":
        parse_time(value, field.path)
        return
    kind = _kind(value)
    if field.enum is not None:
        if not any(type(v) is type(value) and v == value for v in field.enum):
            raise ContractError(f"{field.path}: must be one of {', '.join(map(str, field.enum))}")
    elif kind != field.kind and not (kind == "integer" and field.kind == "number"):
        raise ContractError(f"{field.path}: expected {field.kind}, got {kind}")
    elif kind == "string":
        if not value:
            if field.non_empty:
                raise ContractError(f"{field.path}: must not be empty")
        elif field.max_length is not None and len(value) > field.max_length:  # type: ignore[arg-type]
            raise ContractError(f"{field.path}: longer than {field.max_length} characters")
        elif field.address:
            _check_ip(value, field.path)  # type: ignore[arg-type]
    elif kind == "number" or kind == "integer":
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ContractError(f"{field.path}: number out of range")
        for op, bound, holds in field.bounds:
            if not holds(value, bound):
                raise ContractError(f"{field.path}: must be {op} {_number(bound)}")


def check(event: object) -> None:
    """Raise ContractError, with the gateway's error string, unless ``event`` keeps the contract."""
    if not isinstance(event, dict):
        raise ContractError(f"event: expected object, got {_kind(event)}")
    for key, value in event.items():
        field = _CORE.get(key)
        if field is not None and value is not None:
            _check(field, value)
    for key in _CORE_REQUIRED:
        if event.get(key) is None:
            raise ContractError(f"{key}: required")
    if not any(event.get(key) for key in _IDENTITY):
        raise ContractError(_IDENTITY_ERROR)
    rule = _RULES.get(event["event"])
    if rule is None:
        return
    for key in rule.core_required:
        value = event.get(key)
        if not value:
            raise ContractError(f"{key}: {'required' if value is None else 'must not be empty'}")
    props = event.get("props") or {}
    for field in rule.props:
        value = props.get(field.name)
        if value is not None:
            _check(field, value)
        elif field.required:
            raise ContractError(f"{field.path}: required")


# --- encoding --------------------------------------------------------------------------------------


def _default(value: object) -> object:
    """JSON for the Python types services commonly put in props; anything else is refused."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON, with orjson when it is installed.

    orjson hands datetimes to ``_default`` too, so both encoders write the same bytes, and what
    orjson refuses (integers beyond 64 bits, keys that are not strings) goes to the standard
    library. Two differences remain: orjson writes NaN and infinity as null, the standard library
    refuses them; and floats written with an exponent are spelt 1e22 by one, 1e+22 by the other.
    """
    if orjson is not None:
        try:
            return orjson.dumps(value, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except TypeError:
            pass
    return _ENCODER.encode(value).encode()


def encode(event: object, validate: bool = True) -> bytes:
    """The event as sent on the wire; ContractError if it breaks the contract.

    ``validate=False`` leaves the rules to the gateway; an event that cannot be written as JSON, or
    is too large, still fails here, since no request could carry it.
    """
    if validate:
        check(event)
    try:
        data = dumps(event)
    except (TypeError, ValueError) as exc:  # an unknown type, a cycle, NaN, a lone surrogate
        raise ContractError(f"event: cannot be written as JSON ({exc})") from None
    if len(data) > MAX_EVENT_BYTES:
        raise ContractError(f"event: larger than {MAX_EVENT_BYTES} bytes")
    return data
