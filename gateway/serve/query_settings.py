"""Settings from the request's URL, for the one query they come with, as ClickHouse's HTTP interface takes them.

Every URL parameter that is not one of the interface's own (src/Server/HTTPHandler.cpp) is a setting, its
value a string ClickHouse parses as the setting's type. They are SET on the request's connection before
the query, so the engine checks them as ClickHouse checks a request's settings: an unknown name is its
UNKNOWN_SETTING (115), a value it cannot parse its parse error, and a setting the user may not change
(readonly, a limit above the user's, a site filter) its READONLY (164) or SETTING_CONSTRAINT_VIOLATION (452).
A fresh connection goes with its request; on a session's connection the settings are put back after the
query, so that, as in ClickHouse, only SET lasts in a session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import orjson

from gateway.warehouse.store import Connection

# HTTPHandler's reserved_param_names, and the parameters it reads itself before settings.
_INTERFACE = frozenset({"query", "database", "default_format", "compress", "decompress", "user", "password",
                        "quota_key", "query_id", "stacktrace", "buffer_size", "wait_end_of_query", "session_id",
                        "session_timeout", "session_check", "client_protocol_version", "close_session"})
# A multipart request's external tables are described by <name>_structure, _types and _format parameters.
_EXTERNAL_TABLE_SUFFIXES = ("_format", "_types", "_structure")


def from_url(params: Iterable[tuple[str, str]], multipart: bool) -> list[tuple[str, str]]:
    """The settings among a request's URL parameters, in their order (a repeated one: the last wins)."""
    return [(name, value) for name, value in params
            if name  # ClickHouse skips the empty names of URLs like ?&a=b
            and name not in _INTERFACE and not name.startswith("param_")
            and not (multipart and name.endswith(_EXTERNAL_TABLE_SUFFIXES))]


def apply(conn: Connection, settings: Sequence[tuple[str, str]], keep: bool) -> Callable[[], None]:
    """SET ``settings`` on ``conn``, all or (on any error) none; returns what puts the values from before back,
    for a connection that outlives the query (``keep``)."""
    if not settings:
        return _nothing
    before = _current(conn, [name for name, _ in settings]) if keep else {}
    assign(conn, settings)
    if not keep:
        return _nothing
    return lambda: assign(conn, list(before.items()))


def _current(conn: Connection, names: list[str]) -> dict[str, str | None]:
    """The values to put back: the value a SET gave, None for a setting at its default (ClickHouse's DEFAULT
    then, which also covers names system.settings lists under another name)."""
    unique = list(dict.fromkeys(names))
    placeholders = ", ".join(f"{{n{i}:String}}" for i in range(len(unique)))
    rows = conn.query(f"SELECT name, value FROM system.settings WHERE changed AND name IN ({placeholders})",
                      "JSONCompactEachRow", params={f"n{i}": _escaped(name) for i, name in enumerate(unique)})
    changed = dict(orjson.loads(line) for line in rows.splitlines())
    return {name: changed.get(name) for name in unique}


def assign(conn: Connection, settings: Sequence[tuple[str, str | None]]) -> None:
    """SET each setting to its value (None: its default) in one statement, which ClickHouse checks whole first."""
    if not settings:
        return
    # The names as identifiers (an unknown or odd one gets ClickHouse's own error), values as parameters.
    assignments = ", ".join(f"`{_escaped_name(name)}` = " + ("DEFAULT" if value is None else f"{{v{i}:String}}")
                            for i, (name, value) in enumerate(settings))
    conn.query(f"SET {assignments}",
               params={f"v{i}": _escaped(value) for i, (_, value) in enumerate(settings) if value is not None})


def _escaped(value: str) -> str:
    """A query parameter's value as the engine reads it: escaped like a TabSeparated field."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def _escaped_name(name: str) -> str:
    return name.replace("\\", "\\\\").replace("`", "\\`")


def _nothing() -> None:
    pass
