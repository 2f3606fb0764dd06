"""A ClickHouse HTTP user's connection, and what a read-only user's SQL may not reach.

Before any of a user's SQL runs, its connection (a request's own or its session's) gets the user's limits
and the filters of its sites, then enters the user's settings profile, whose constraints hold them
(gateway/warehouse/user_limits.py), and, for read-only users and GET requests, ``readonly = 2``. That is ClickHouse's
level for read-only users whose tools send settings: clickhouse-connect, Grafana, JDBC and the Node client
send them with every request, and ``readonly = 1`` refuses them all. Settings may then change per query,
``readonly`` itself may not, nor what the profile fixes.

Sites: ClickHouse's ``additional_table_filters`` on every table of clicktrail with a site_id column keeps a
scoped user to its sites' rows and to the rows of no site (site_id '', the built-in referrer classes). Views
and parameterized views read those tables, so they are filtered through them; materialized views and
dictionaries read as tables are listed themselves. Row policies would do the same on a server, but the
embedded engine keeps no users or policies of its own: every connection is its one user.

``readonly = 2`` also lets queries reach past the tables, so read-only users are refused what does: table
functions other than those that make their rows up (file(), url(), remote(), merge(), dictionary() read
files, servers, or tables around the filters), the file() function (the gateway's own files), and for
scoped users dictionary functions (dictGet answers from the dictionary, unfiltered), also where an SQL
function calls them. ClickHouse's parser shows where each function is called (EXPLAIN AST), however the
query spells or nests it.
"""

from __future__ import annotations

import itertools
import re

import orjson

from gateway.config import UserConfig
from gateway.serve import query_settings
from gateway.warehouse.store import DATABASE, Connection, QueryError, Store, _quote

#: Table functions that make their rows up from their arguments (lower case, as they are matched).
GENERATING_TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series",
                                        "generateseries", "values", "null", "generaterandom", "format", "view"})

_AST_FUNCTION = re.compile(r"\s*Function (\S+)")
_AST_TABLE_EXPRESSION = re.compile(r"\s*TableExpression\b")
_FORMAT_AT_END = re.compile(r" FORMAT \w+$")
# Functions that read what the filters do not cover: the dictionaries, and Join tables.
_UNFILTERED = ("dict", "joinget")
# The engine's own functions, as named and (those whose case does not matter) in lower case, read once: they
# are fixed for the chDB release, and listing them takes longer than most queries.
_BUILTIN: tuple[set[str], set[str]] = (set(), set())


def connect(store: Store, user: UserConfig, readonly: bool) -> Connection:
    """A new connection for ``user``'s queries (see the module's docstring); ``readonly``: the user's or the
    request's (GET)."""
    conn = store.connect(readonly=False)
    try:
        settings = [(name, str(value)) for name, value in store.profiles.limits[user.name].settings().items()]
        if user.sites is not None:
            settings.append(("additional_table_filters", _site_filters(conn, user.sites)))
        query_settings.assign(conn, settings)
        # The profile's constraints hold the values just set; readonly last, as it fixes itself.
        query_settings.assign(conn, [("profile", store.profiles.names[user.name])])
        if readonly:
            query_settings.assign(conn, [("readonly", "2")])
    except BaseException:
        conn.close()
        raise
    return conn


def _site_filters(conn: Connection, sites: list[str]) -> str:
    """additional_table_filters for ``sites``: a filter for each table of clicktrail with a site_id column (as
    they are now: a table an admin adds is filtered from the next connection on)."""
    rows = conn.query(
        "SELECT DISTINCT c.table FROM system.columns AS c JOIN system.tables AS t"
        " ON t.database = c.database AND t.name = c.table"
        " WHERE c.database = {db:String} AND c.name = 'site_id' AND t.engine != 'View'",
        "JSONCompactEachRow", params={"db": DATABASE})
    condition = f"site_id IN ({', '.join(_quote(site) for site in ['', *sites])})"
    filters = {f"{DATABASE}.{orjson.loads(row)[0]}": condition for row in rows.splitlines()}
    # chDB's log of the queries of every connection (empty unless chDB logs them): other sites' literals.
    filters["system.user_query_log"] = "0"
    return "{" + ", ".join(f"{_quote(table)}: {_quote(where)}" for table, where in filters.items()) + "}"


def check_reach(conn: Connection, user: UserConfig, formatted: str, params: dict[str, str]) -> None:
    """Refuse, as ClickHouse refuses what a user has no grant for (ACCESS_DENIED), a read-only user's query
    (``formatted`` by ClickHouse, with its ``params``) that calls what reaches past the tables it may read,
    also inside the SQL functions it calls (clicktrail_person() looks up a dictionary)."""
    definitions: dict[str, str] | None = None  # the SQL functions', read once one is called
    pending = [(_FORMAT_AT_END.sub("", formatted), params)]
    seen: set[str] = set()
    while pending:
        sql, sql_params = pending.pop()
        tree = conn.query("EXPLAIN AST " + sql, "TabSeparatedRaw", params=sql_params)
        for parent, line in itertools.pairwise(["", *tree.decode().splitlines()]):
            if not (match := _AST_FUNCTION.match(line)):
                continue
            name = match[1]
            if why := _denial(conn, user, name, table=bool(_AST_TABLE_EXPRESSION.match(parent))):
                raise QueryError(497, f"{user.name}: Not enough privileges: {why}, and is not available to"
                                      " read-only users. (ACCESS_DENIED)")
            if name in seen or _is_builtin(conn, name):
                continue
            seen.add(name)
            if definitions is None:
                rows = conn.query("SELECT name, create_query FROM system.functions WHERE origin = 'SQLUserDefined'",
                                  "JSONCompactEachRow")
                definitions = dict(orjson.loads(row) for row in rows.splitlines())
            if name in definitions:
                pending.append((definitions[name], {}))


def _denial(conn: Connection, user: UserConfig, name: str, table: bool) -> str | None:
    """Why ``user`` may not call the function ``name`` (as a ``table`` function), or None if it may."""
    if table:
        # A qualified name is a parameterized view; so is an unqualified one that is no table function.
        if "." in name or name.lower() in GENERATING_TABLE_FUNCTIONS or not _is_table_function(conn, name):
            return None
        return f"the table function {name}() reads files, other servers or tables past the site filters"
    if name.lower() == "file":
        return "the function file() reads the server's files"
    if user.sites is not None and name.lower().startswith(_UNFILTERED):
        return f"the function {name}() reads a dictionary or Join table, which site filters do not cover"
    return None


def _is_builtin(conn: Connection, name: str) -> bool:
    """Whether ``name`` is one of the engine's own functions (not an SQL function of the database's)."""
    exact, any_case = _BUILTIN
    if not exact:
        rows = conn.query("SELECT name, case_insensitive FROM system.functions WHERE origin = 'System'",
                          "JSONCompactEachRow")
        for row in rows.splitlines():
            builtin, case_insensitive = orjson.loads(row)
            exact.add(builtin)
            if case_insensitive:
                any_case.add(builtin.lower())
    return name in exact or name.lower() in any_case


def _is_table_function(conn: Connection, name: str) -> bool:
    found = conn.query("SELECT count() FROM system.table_functions WHERE lower(name) = lower({name:String})",
                       "TabSeparatedRaw", params={"name": name})
    return found.strip() != b"0"
