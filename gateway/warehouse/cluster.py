"""The schema on a ClickHouse cluster, generated from the one set of migrations and views.

Entry points (the server backend, server.py, calls them when ``[clickhouse] cluster`` is set):

    on_cluster(statements: list[str], cluster: str) -> list[str]        # a migration's statements, backfills included
    views_on_cluster(statements: list[str], cluster: str) -> list[str]  # the views' statements

Both take statements as ``store.split_statements`` cuts a file and return them as they run on ``cluster`` (a name
of the servers' ``remote_servers``, or ``'{cluster}'`` for a macro), in order. The SQL files stay the single
source: only engines, names and ``ON CLUSTER`` change, by these rules (docs/cluster.md says why):

- Every DDL statement gets ``ON CLUSTER``; every MergeTree-family engine its Replicated form, its Keeper path made
  of the table's UUID (the same on every node: ON CLUSTER hands it out), so a rename or EXCHANGE never moves it.
- A SHARDED table ``t`` becomes ``t_local`` on every node (Replicated within its shard, ``{shard}`` in the path)
  with a Distributed table ``t`` in front of it, sharded by SHARD_KEYS (by the device: an anonymous id's events,
  and so its rollup rows, all lie on one shard). Everything that names ``t`` reads all shards through it.
- An EVERY_NODE table is one Replicated table across the whole cluster (no ``{shard}`` in the path): each node
  holds all of it, so dictionaries and person joins read it locally, and an insert or mutation on any node
  reaches every other.
- A materialized view is created on every node, reads ``events_local`` (it fires on the inserts that the
  Distributed ``events`` routes to the node) and writes to its target's local table. Its backfill follows it,
  run once: into an EVERY_NODE target from the Distributed tables; into a SHARDED one shard by shard
  (parallel_distributed_insert_select = 2), where ClickHouse can.
- ALTERs of a sharded table reach its local table on every shard and, when they change columns, the Distributed
  one too; an ALTER of an EVERY_NODE table runs as written on one node, and replication takes it to the others.
  Views, functions and dictionaries are unchanged but for ``ON CLUSTER``: the Distributed tables keep the names
  the views read.

Also here: SESSION_SETTINGS (for the gateway's sessions on the cluster), local_name, and schema(cluster), the whole
schema at once (``python -m gateway.warehouse.cluster NAME`` prints it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gateway.warehouse.backend import DATABASE, MIGRATIONS, VIEWS, split_statements

LOCAL = "_local"

#: The device of an event, the one thing every event has and every copy of it repeats (the contract requires an
#: anonymous_id or a user_id): its site and anonymous id, or its user id for a server-side event without one.
DEVICE_KEY = "cityHash64(site_id, if(anonymous_id != '', anonymous_id, user_id))"

#: Tables split across the shards, and the sharding key of each (an expression over its own columns). The events
#: and every rollup fed per event, that the views only ever aggregate (their states merge across shards) or read
#: row by row: most of the data, so each shard holds a share. A rollup's rows are written by the view on the
#: node of their events, so the key only places rows inserted through the Distributed table (backfills): the
#: device where the table has its ids, else what keeps one row's copies together (a ReplacingMergeTree's FINAL
#: merges within a shard): the session, the event.
SHARD_KEYS: dict[str, str] = {
    "events": DEVICE_KEY,
    "live_views": DEVICE_KEY,
    "live_minutes": DEVICE_KEY,
    "stream_activity": DEVICE_KEY,
    "content_hits": DEVICE_KEY,
    "session_rollup": "cityHash64(site_id, anonymous_id)",
    "page_leaves": "cityHash64(site_id, event_id)",
    "page_leaves_by_time": "cityHash64(site_id, event_id)",
}

#: Tables every node holds whole: what the views look persons and channels up in, and configuration.
#: identity_links feeds the persons dictionary, which resolves every row's person on the node reading it;
#: touches and lead_stages are the right side of the views' joins by person (a person's devices may lie on any
#: shards, their touches and stages are on all); referrer_channels and channel_costs are small and written by
#: the gateway or an admin; schema_migrations says to every gateway what was applied.
EVERY_NODE = frozenset({"schema_migrations", "identity_links", "referrer_channels", "touches", "touches_by_time",
                        "lead_stages", "channel_costs"})

#: Settings for the sessions that use the cluster. The loader's insert into the Distributed events returns only
#: once every shard has its rows (so a spool segment is deleted only then; the default queues them on the node
#: first); and a join or IN whose both sides read Distributed tables computes its right side once and ships it to
#: the shards (GLOBAL), which is exact whatever the shards hold, where "local" would join each shard's share only.
#: The views have no such join (they run under the default, 'deny', which refuses one: tests/test_cluster_ddl.py):
#: it is for the gateway's own statements and a safety net.
SESSION_SETTINGS: dict[str, int | str] = {"distributed_foreground_insert": 1, "distributed_product_mode": "global"}

_NAME = r"(?:`?\w+`?\.)?`?\w+`?"
_DDL = re.compile(
    r"(?P<head>(?:CREATE|DROP|ALTER)\s+(?:OR\s+REPLACE\s+)?"
    r"(?P<kind>MATERIALIZED\s+VIEW|VIEW|TABLE|DICTIONARY|FUNCTION|DATABASE)\s+"
    rf"(?:IF\s+(?:NOT\s+)?EXISTS\s+)?)(?P<name>{_NAME})(?P<rest>.*)", re.S | re.I)
_EXCHANGE = re.compile(rf"EXCHANGE\s+TABLES\s+(?P<a>{_NAME})\s+AND\s+(?P<b>{_NAME})\s*$", re.S | re.I)
_INSERT = re.compile(rf"INSERT\s+INTO\s+(?:TABLE\s+)?(?P<name>{_NAME})(?P<rest>.*)", re.S | re.I)
_ENGINE = re.compile(r"ENGINE\s*=\s*(?P<engine>\w*MergeTree)\b(?:\s*\((?P<args>[^()]*)\))?", re.I)
_AS_TABLE = re.compile(rf"\s*AS\s+(?P<source>{_NAME})(?=\s+ENGINE\b)", re.I)
_MATERIALIZED = re.compile(rf"\s+TO\s+(?P<target>{_NAME})\s+AS\s+(?P<select>SELECT\b.*)", re.S | re.I)
#: ALTER commands that change a table's columns, which the Distributed table in front must follow.
_COLUMN_COMMAND = re.compile(r"^\s*(?:ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.I)


class ClusterDDLError(ValueError):
    """A statement the generation cannot carry onto a cluster (the message says what to change)."""


def on_cluster(statements: list[str], cluster: str) -> list[str]:
    """A migration's statements (store.split_statements of its file, or the migrator's own bootstrap) as they run
    on ``cluster``, in order. A materialized view's backfill is among them, right after it: run every statement
    returned and nothing else (the regex by which the embedded migrator finds a view to backfill does not match a
    view ON CLUSTER, so it adds none)."""
    on = _on_cluster_clause(cluster)
    out: list[str] = []
    for statement in statements:
        out += _migration_statement(statement.strip().rstrip(";").strip(), cluster, on)
    return out


def views_on_cluster(statements: list[str], cluster: str) -> list[str]:
    """The views' statements (every clickhouse/views file, split) as they run on ``cluster``: each created on every
    node (views, functions and dictionaries live per node), its text otherwise unchanged, since the names it reads
    are those of the Distributed (or every-node) tables."""
    on = _on_cluster_clause(cluster)
    out = []
    for statement in statements:
        ddl = _DDL.match(statement.strip())
        if not ddl or not ddl["head"].upper().startswith("CREATE") or ddl["kind"].upper() == "TABLE":
            raise ClusterDDLError(f"a views file may create views, functions and dictionaries only: {statement[:80]}")
        out.append(_with_on_cluster(ddl, on))
    return out


def schema(cluster: str, migrations: Path | None = None, views: Path | None = None) -> list[str]:
    """The whole schema on ``cluster``: every migration's statements in order, then the views', for a review or an
    apply by hand (``python -m gateway.warehouse.cluster NAME`` prints it; the gateway applies it itself, recording
    each migration in schema_migrations). The views come in their files' order: the gateway retries one that reads
    a view not created yet."""
    out = []
    for path in sorted((migrations or MIGRATIONS).glob("*.sql")):
        out += on_cluster(split_statements(path.read_text()), cluster)
    return out + views_on_cluster(
        [st for path in sorted((views or VIEWS).glob("*.sql")) for st in split_statements(path.read_text())], cluster)


def local_name(table: str) -> str:
    """The local table of a sharded table's Distributed one: ``clicktrail.events`` -> ``clicktrail.events_local``."""
    return table + LOCAL


def _on_cluster_clause(cluster: str) -> str:
    if not cluster or re.search(r"['\\\s]", cluster):
        raise ClusterDDLError(f"cluster: a name from remote_servers, without quotes or spaces, not {cluster!r}")
    return f"ON CLUSTER '{cluster}'"


def _migration_statement(statement: str, cluster: str, on: str) -> list[str]:
    if exchange := _EXCHANGE.match(statement):
        a, b = exchange["a"], exchange["b"]
        if _placement(a) != _placement(b):
            raise ClusterDDLError(f"EXCHANGE of a sharded and an every-node table: {statement[:80]}")
        if _placement(a) == "sharded":  # the Distributed tables name the local ones, so they follow the swap
            a, b = local_name(a), local_name(b)
        return [f"EXCHANGE TABLES {a} AND {b} {on}"]
    if insert := _INSERT.match(statement):
        return [_insert(insert["name"], insert["rest"])]
    ddl = _DDL.match(statement)
    if not ddl:
        raise ClusterDDLError(f"no cluster form for: {statement[:80]}")
    kind, verb = ddl["kind"].upper().split()[-1], ddl["head"].split()[0].upper()
    if kind in ("DATABASE", "DICTIONARY", "FUNCTION") or (kind == "VIEW" and verb == "DROP"):
        return [_with_on_cluster(ddl, on)]
    if kind == "VIEW":
        return _materialized_view(ddl, on)
    if verb == "CREATE":
        return _create_table(ddl, cluster, on)
    name = ddl["name"]
    if verb == "DROP":
        if _placement(name) == "sharded":  # the Distributed table first: it reads the local one
            return [_with_on_cluster(ddl, on), _with_on_cluster(ddl, on, local_name(name))]
        return [_with_on_cluster(ddl, on)]
    # ALTER TABLE
    if _placement(name) == "every_node":
        # As written, on one node: an ALTER of a Replicated table reaches every replica through Keeper. ON CLUSTER
        # would submit it once per shard to the same replicas (an UPDATE x = x + 1 applied N times).
        return [statement]
    commands = _split_top_level(re.sub(r"\s+SETTINGS\s.*$", "", ddl["rest"], flags=re.S | re.I))
    changes_columns = [bool(_COLUMN_COMMAND.match(c)) for c in commands]
    if any(changes_columns) and not all(changes_columns):
        raise ClusterDDLError(f"split column changes and other ALTER commands into two statements: {statement[:80]}")
    local = _with_on_cluster(ddl, on, local_name(name))
    return [local, _with_on_cluster(ddl, on)] if all(changes_columns) else [local]


def _create_table(ddl: re.Match[str], cluster: str, on: str) -> list[str]:
    name, rest = ddl["name"], ddl["rest"]
    placement = _placement(name)
    if placement == "sharded":
        rest = _AS_TABLE.sub(lambda m: f" AS {_local_if_sharded(m['source'])}", rest, count=1)
    engine = _ENGINE.search(rest)
    if not engine:
        raise ClusterDDLError(f"{name}: only MergeTree-family tables have a cluster form")
    if engine["engine"].lower().startswith("replicated"):
        raise ClusterDDLError(f"{name}: write the plain engine, the cluster form adds Replicated")
    shard = "{shard}" if placement == "sharded" else "all"
    replica = "{replica}" if placement == "sharded" else "{shard}-{replica}"  # unique across the cluster
    args = ", ".join([f"'/clickhouse/tables/{{uuid}}/{shard}'", f"'{replica}'"] + (
        [engine["args"].strip()] if engine["args"] and engine["args"].strip() else []))
    rest = rest[:engine.start()] + f"ENGINE = Replicated{engine['engine']}({args})" + rest[engine.end():]
    if placement == "every_node":
        return [_with_on_cluster(ddl, on, rest=rest)]
    table = name.split(".")[-1]
    local = local_name(name)
    if_not_exists = " IF NOT EXISTS" if re.search(r"IF\s+NOT\s+EXISTS", ddl["head"], re.I) else ""
    distributed = (f"CREATE TABLE{if_not_exists} {name} {on} AS {local}"
                   f" ENGINE = Distributed('{cluster}', '{DATABASE}', '{table}{LOCAL}', {SHARD_KEYS[table]})")
    return [_with_on_cluster(ddl, on, local, rest), distributed]


def _materialized_view(ddl: re.Match[str], on: str) -> list[str]:
    view = _MATERIALIZED.match(ddl["rest"])
    if not ddl["kind"].upper().startswith("MATERIALIZED") or not view:
        raise ClusterDDLError(f"{ddl['name']}: a migration's views are materialized views TO a table")
    target, select = view["target"], view["select"]
    created = _with_on_cluster(
        ddl, on, rest=f" TO {_local_if_sharded(target)} AS {_to_local_tables(select)}")
    if _placement(target) == "every_node":  # every node has it all: one insert, replicated to the others
        return [created, f"INSERT INTO {target} {select}"]
    # Shard by shard, each reading its own events into its own table, where ClickHouse can (a SELECT straight from
    # a Distributed table); else through the Distributed target, whose states merge whatever shard they land on.
    return [created, f"INSERT INTO {target} {_with_settings(select, INSERT_SETTINGS)}"]


#: An INSERT into a sharded table: shard by shard where it can, and done on every shard when it returns.
INSERT_SETTINGS = "parallel_distributed_insert_select = 2, distributed_foreground_insert = 1"


def _insert(target: str, rest: str) -> str:
    if _placement(target) != "sharded":
        return f"INSERT INTO {target}{rest}"
    select = re.match(r"\s*(?P<columns>\([^)]*\))?\s*(?P<select>SELECT\b.*)", rest, re.S | re.I)
    if select:
        columns = f"{select['columns']} " if select["columns"] else ""
        return f"INSERT INTO {target} {columns}{_with_settings(select['select'], INSERT_SETTINGS)}"
    values = re.match(r"(?P<before>.*?)\s(?P<data>(?:VALUES|FORMAT)\b.*)", rest, re.S | re.I)
    if not values:
        raise ClusterDDLError(f"no cluster form for: INSERT INTO {target}{rest[:60]}")
    return f"INSERT INTO {target}{values['before']} SETTINGS {INSERT_SETTINGS} {values['data']}"


def _with_settings(select: str, settings: str) -> str:
    """``select`` with ``settings`` added to its trailing SETTINGS clause, or one of its own."""
    if re.search(r"\bSETTINGS\s+\w+\s*=[^()]*$", select, re.I):
        return f"{select.rstrip()}, {settings}"
    return f"{select.rstrip()} SETTINGS {settings}"


def _with_on_cluster(ddl: re.Match[str], on: str, name: str | None = None, rest: str | None = None) -> str:
    return f"{ddl['head']}{name or ddl['name']} {on}{ddl['rest'] if rest is None else rest}"


def _placement(name: str) -> str:
    table = name.replace("`", "").split(".")[-1]
    if table in SHARD_KEYS:
        return "sharded"
    if table in EVERY_NODE:
        return "every_node"
    raise ClusterDDLError(f"table {table}: say in gateway/warehouse/cluster.py whether it is sharded (SHARD_KEYS)"
                          " or held by every node (EVERY_NODE)")


def _local_if_sharded(name: str) -> str:
    return local_name(name) if _placement(name) == "sharded" else name


def _to_local_tables(select: str) -> str:
    """A materialized view's SELECT reading the local tables of the sharded ones it names."""
    sharded = "|".join(map(re.escape, SHARD_KEYS))
    return re.sub(rf"\b{DATABASE}\.({sharded})\b", rf"{DATABASE}.\1{LOCAL}", select)


def _split_top_level(text: str) -> list[str]:
    """``text`` cut at the commas outside parentheses and quotes (an ALTER's commands)."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "'" and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(text[start:i])
            start = i + 1
    return [p for p in (*parts, text[start:]) if p.strip()]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m gateway.warehouse.cluster CLUSTER")
    print("".join(f"{statement};\n\n" for statement in schema(sys.argv[1])), end="")
