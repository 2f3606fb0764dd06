"""multipart/form-data requests, as ClickHouse's HTTP handler reads them (HTMLForm, ExternalTablesHandler).

Its fields are request parameters like the URL's (``query``, ``param_<name>``, settings): clickhouse-connect
moves a query and its parameters into them once the parameters pass 4 KB, the Node client with
``use_multipart_params``. Its files (parts with a filename, even an empty one, as clickhouse-go sends) are
external tables: data the query reads as temporary tables named after the part, in the format and with the
structure the ``<name>_format``, ``<name>_structure`` or ``<name>_types`` parameters give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.warehouse.store import Connection, QueryError

INCORRECT_DATA, BAD_ARGUMENTS = 117, 36
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_PARTS = 1000


@dataclass
class ExternalTable:
    name: str
    fmt: str
    structure: str  # "<column> <type>, ..." as CREATE TABLE takes it
    data: bytes


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    tables: list[ExternalTable] = field(default_factory=list)


def is_multipart(content_type: str) -> bool:
    return content_type.lower().startswith("multipart/form-data")


def parse(content_type: str, body: bytes, params: dict[str, str]) -> Form:
    """The fields and external tables of a multipart/form-data ``body``; ``params``: the request's other
    parameters, which describe the tables."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise QueryError(INCORRECT_DATA, "The multipart/form-data request has no boundary in its Content-Type."
                                         " (INCORRECT_DATA)")
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header_name, header_value = bytearray(), bytearray()
    ended = False

    def part_begin() -> None:
        if len(parts) >= _MAX_PARTS:
            raise QueryError(INCORRECT_DATA, f"The multipart/form-data request has more than {_MAX_PARTS}"
                                             " parts. (INCORRECT_DATA)")
        parts.append(({}, bytearray()))

    def header_end() -> None:
        parts[-1][0][bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(boundary, {
        "on_part_begin": part_begin,
        "on_part_data": lambda data, start, stop: parts[-1][1].extend(data[start:stop]),
        "on_header_field": lambda data, start, stop: header_name.extend(data[start:stop]),
        "on_header_value": lambda data, start, stop: header_value.extend(data[start:stop]),
        "on_header_end": header_end,
        "on_end": end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise QueryError(INCORRECT_DATA, f"Cannot parse the multipart/form-data request: {exc}."
                                         " (INCORRECT_DATA)") from None
    if not ended:
        raise QueryError(INCORRECT_DATA, "The multipart/form-data request is truncated: its closing boundary is"
                                         " missing. (INCORRECT_DATA)")
    form = Form()
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode(errors="replace")
        if b"filename" in disposition:
            form.tables.append(_external_table(name, bytes(data), {**form.fields, **params}))
        else:
            try:
                form.fields[name] = data.decode()
            except UnicodeDecodeError:
                raise QueryError(INCORRECT_DATA, f"The multipart/form-data field '{name}' is not UTF-8 text."
                                                 " (INCORRECT_DATA)") from None
    return form


def _external_table(name: str, data: bytes, params: dict[str, str]) -> ExternalTable:
    if not _NAME.fullmatch(name):
        raise QueryError(BAD_ARGUMENTS, f"External table name '{name}' is not an identifier (letters, digits and"
                                        " underscores). (BAD_ARGUMENTS)")
    if structure := params.get(f"{name}_structure"):
        pass
    elif types := params.get(f"{name}_types"):
        # ClickHouse splits the types at every comma and names the columns _1, _2, ...
        structure = ", ".join(f"_{i} {type_.strip()}" for i, type_ in enumerate(types.split(","), 1))
    else:
        raise QueryError(BAD_ARGUMENTS, f"Neither structure nor types have been provided for external table {name}."
                                        f" Use fields {name}_structure or {name}_types to do so. (BAD_ARGUMENTS)")
    return ExternalTable(name, params.get(f"{name}_format", "TabSeparated"), structure, data)


def load(conn: Connection, table: ExternalTable) -> None:
    """Create ``table`` as a temporary table of ``conn`` and fill it. Its structure reaches the engine only as
    a query parameter, parsed by ClickHouse's own column list parser (that of generateRandom), never as SQL."""
    conn.query("CREATE TEMPORARY TABLE {name:Identifier} ENGINE = Memory"
               " AS SELECT * FROM generateRandom({structure:String}) LIMIT 0",
               params={"name": table.name, "structure": table.structure})
    try:
        conn.insert(f"INSERT INTO `{table.name}`", table.fmt, table.data)  # the name is an identifier: see parse()
    except BaseException:
        drop(conn, table)  # a session's connection outlives the request
        raise


def drop(conn: Connection, table: ExternalTable) -> None:
    conn.query("DROP TEMPORARY TABLE IF EXISTS {name:Identifier}", params={"name": table.name})
