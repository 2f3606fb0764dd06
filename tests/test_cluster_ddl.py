"""The cluster DDL (gateway/warehouse/cluster.py), generated from the one set of migrations and views: checked
statement by statement against the files it comes from, parsed by ClickHouse itself (formatQuery), and run.

No Keeper can run here, so ON CLUSTER and the Replicated engines cannot execute: the run takes the single-node
form of the generated DDL (those two parts undone, nothing else), keeping the _local tables, the Distributed
tables, the materialized views on the local tables and the backfills, and loads the same generated events as a
plain store; every analyst view must answer the same, over a one-shard cluster of the embedded engine and over two
shards that are both the embedded engine, each shown only its share of the data (persons' devices spread over both).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from gateway.ingest.contract import decode_event
from gateway.ingest.enrich import NO_AGENT
from gateway.ingest.rows import Context, TimeWindow, build_row, encode
from gateway.warehouse import cluster
from gateway.warehouse.backend import MIGRATIONS, VIEWS, split_statements
from gateway.warehouse.cluster import SHARD_KEYS, ClusterDDLError, on_cluster, views_on_cluster
from gateway.warehouse.store import DATABASE, Store
from tests.analytics.generate import generate

CLUSTER = "analytics"
ON = f"ON CLUSTER '{CLUSTER}'"
#: A one-shard cluster of this very node: chDB runs a Distributed table over it when the replica is local
#: (its host and the tcp_port the engine believes it has), without any network.
SHARD = "<shard><replica><host>{}</host><port>9000</port></replica></shard>"
CLUSTER_CONFIG = (f"<clickhouse><tcp_port>9000</tcp_port><remote_servers><{CLUSTER}>{SHARD.format('127.0.0.1')}"
                  f"</{CLUSTER}></remote_servers></clickhouse>")
#: The same with a second shard on another host, which nobody answers: enough for EXPLAIN, which plans what each
#: shard is sent without connecting.
TWO_SHARDS_CONFIG = CLUSTER_CONFIG.replace(f"</{CLUSTER}>", f"{SHARD.format('127.0.0.2')}</{CLUSTER}>")
#: Two shards that are both this node (two names of it): ClickHouse runs each shard's part of a query on its own,
#: with shardNum() telling which, and merges them as it would across servers; _shard_filters splits the data.
TWO_LOCAL_SHARDS_CONFIG = CLUSTER_CONFIG.replace(f"</{CLUSTER}>", f"{SHARD.format('localhost')}</{CLUSTER}>")
_REPLICATED = re.compile(r"Replicated(\w*MergeTree)\('/clickhouse/tables/\{uuid\}/(?:\{shard\}|all)', '[^']*'(?:, )?")
_TABLE = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?clicktrail\.(\w+) ON CLUSTER", re.I)


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


def original_statements(path: Path) -> list[str]:
    return split_statements(path.read_text())


def view_statements() -> list[str]:
    return [st for path in sorted(VIEWS.glob("*.sql")) for st in split_statements(path.read_text())]


def single_node(statement: str) -> str:
    """The generated statement as one node without Keeper runs it: no ON CLUSTER, the plain engine."""
    return _REPLICATED.sub(r"\1(", statement.replace(f" {ON}", "")).replace("MergeTree()", "MergeTree")


def original_form(statement: str) -> str:
    """single_node, and the local tables under their Distributed tables' names, an INSERT into a sharded table
    without the settings that make it shard by shard: what the migration file says."""
    statement = re.sub(rf"(?: SETTINGS|,) {cluster.INSERT_SETTINGS}$", "", statement)
    return re.sub(r"\b(clicktrail\.\w+)_local\b", r"\1", single_node(statement))


class ClusterStore(Store):
    """A real Store that applies the single-node form of the cluster DDL, in a Distributed layout over this node."""

    config = CLUSTER_CONFIG

    def open(self) -> None:
        config_d = self.path.with_name(self.path.name + "_config") / "config.d"
        config_d.mkdir(parents=True, exist_ok=True)
        (config_d / "cluster.xml").write_text(self.config)  # merged into the config the Store writes
        super().open()

    def _ddl(self, statements: list[str]) -> list[str]:
        return [single_node(st) for st in on_cluster(statements, CLUSTER)]

    def _views_ddl(self, statements: list[str]) -> list[str]:
        return [single_node(st) for st in views_on_cluster(statements, CLUSTER)]


# --- statement by statement -------------------------------------------------------------------------------------

@dataclass
class Generated:
    path: Path
    original: list[str]
    statements: list[str]


@pytest.fixture(scope="module")
def generated() -> list[Generated]:
    return [Generated(p, original_statements(p), on_cluster(original_statements(p), CLUSTER))
            for p in migration_files()]


def test_every_ddl_statement_runs_on_the_cluster(generated: list[Generated]) -> None:
    for g in generated:
        for st in g.statements:
            if st.startswith("INSERT") or re.match(rf"ALTER TABLE clicktrail\.({'|'.join(cluster.EVERY_NODE)}) ", st):
                assert ON not in st  # see test_an_alter_reaches_each_shard_once
            else:
                assert ON in st, st[:120]
    for st in views_on_cluster(view_statements(), CLUSTER):
        assert st.count(ON) == 1


def test_every_table_is_replicated_or_distributed(generated: list[Generated]) -> None:
    tables = [(match[1], st) for g in generated for st in g.statements if (match := _TABLE.match(st))]
    assert tables
    for name, st in tables:
        engine = re.search(r"ENGINE = (\w+)", st)
        assert engine, st[:120]
        if engine[1] == "Distributed":
            assert name in SHARD_KEYS
            continue
        assert engine[1].startswith("Replicated") and engine[1].endswith("MergeTree"), st[:200]
        if name.endswith("_local"):  # a shard's share, replicated within the shard
            assert name.removesuffix("_local") in SHARD_KEYS
            assert "'/clickhouse/tables/{uuid}/{shard}', '{replica}'" in st
        else:  # one table across the whole cluster, a replica on every node
            assert name in cluster.EVERY_NODE
            assert "'/clickhouse/tables/{uuid}/all', '{shard}-{replica}'" in st


def test_each_sharded_table_has_its_local_and_distributed_pair(generated: list[Generated]) -> None:
    for g in generated:
        for i, st in enumerate(g.statements):
            name = _table(st)
            if not name or not name.endswith("_local") or "CREATE" not in st:
                continue
            table = name.removesuffix("_local")
            distributed = g.statements[i + 1]
            assert _table(distributed) == table
            assert distributed.endswith(f"AS clicktrail.{name} ENGINE = Distributed('{CLUSTER}', 'clicktrail',"
                                        f" '{name}', {SHARD_KEYS[table]})")
    created = {_table(st) for g in generated for st in g.statements}
    assert {"events", "events_local"} <= created


def test_materialized_views_read_and_write_local_tables(generated: list[Generated]) -> None:
    views = [st for g in generated for st in g.statements if st.startswith("CREATE MATERIALIZED VIEW")]
    assert len(views) >= 9
    for st in views:
        target = re.search(r" TO clicktrail\.(\w+) AS ", st)
        assert target
        assert target[1].endswith("_local") or target[1] in cluster.EVERY_NODE
        read = set(re.findall(r"\bFROM\s+clicktrail\.(\w+)", st))
        assert read == {"events_local"}, st[:200]


def test_backfills_follow_their_views(generated: list[Generated]) -> None:
    for g in generated:
        for i, st in enumerate(g.statements):
            if not st.startswith("CREATE MATERIALIZED VIEW"):
                continue
            target = re.search(r" TO clicktrail\.(\w+) AS ", st)[1].removesuffix("_local")  # type: ignore[index]
            backfill = g.statements[i + 1]
            assert backfill.startswith(f"INSERT INTO clicktrail.{target} SELECT")
            assert "_local" not in backfill  # it reads the Distributed tables: every shard's events
            assert ("parallel_distributed_insert_select = 2" in backfill) == (target in SHARD_KEYS)


def test_nothing_of_the_original_is_lost(generated: list[Generated], engine: Store) -> None:
    """Undoing the cluster parts gives back each statement of the file, as ClickHouse parses both: every column,
    type, comment, projection, key, setting and SELECT. The statements added (Distributed tables, local twins,
    backfills) are the only others."""
    for g in generated:
        remaining = [_formatted(engine, st) for st in g.original]
        added = []
        for st in g.statements:
            form = _formatted(engine, original_form(st))
            if form in remaining:
                remaining.remove(form)
            else:
                added.append(st)
        assert not remaining, (g.path.name, remaining)
        for st in added:
            assert ("ENGINE = Distributed" in st or st.startswith("INSERT INTO")
                    or re.match(r"(DROP|ALTER) TABLE .*clicktrail\.\w+ ON CLUSTER", st)), (g.path.name, st[:200])
    originals = [_formatted(engine, st) for st in view_statements()]
    assert [_formatted(engine, original_form(st)) for st in views_on_cluster(view_statements(), CLUSTER)] == originals


def test_generated_statements_parse(generated: list[Generated], engine: Store) -> None:
    for st in [st for g in generated for st in g.statements] + views_on_cluster(view_statements(), CLUSTER):
        formatted = _formatted(engine, st)
        if ON in st:
            assert f"ON CLUSTER {CLUSTER}" in formatted, formatted[:200]  # as ClickHouse parsed it


def test_an_alter_reaches_each_shard_once() -> None:
    """A sharded table's ALTER runs ON CLUSTER on its local table (one replica per shard takes it, Keeper the
    others); an every-node table's runs on one node as written: ON CLUSTER would give each shard's replica of the
    one table the same mutation again (an UPDATE x = x + 1 applied once per shard)."""
    delete = "ALTER TABLE clicktrail.referrer_channels DELETE WHERE site_id != '' SETTINGS mutations_sync = 2"
    assert on_cluster([delete], CLUSTER) == [delete]
    assert on_cluster(["ALTER TABLE clicktrail.page_leaves DELETE WHERE event_id = 'x'"], CLUSTER) == [
        f"ALTER TABLE clicktrail.page_leaves_local {ON} DELETE WHERE event_id = 'x'"]
    assert on_cluster(["ALTER TABLE clicktrail.events DROP COLUMN x"], CLUSTER) == [
        f"ALTER TABLE clicktrail.events_local {ON} DROP COLUMN x", f"ALTER TABLE clicktrail.events {ON} DROP COLUMN x"]


def test_what_has_no_cluster_form_is_refused() -> None:
    with pytest.raises(ClusterDDLError, match="SHARD_KEYS"):
        on_cluster(["CREATE TABLE clicktrail.unknown (a UInt8) ENGINE = MergeTree ORDER BY a"], CLUSTER)
    with pytest.raises(ClusterDDLError, match="split"):
        on_cluster(["ALTER TABLE clicktrail.events ADD COLUMN x UInt8, MATERIALIZE PROJECTION p"], CLUSTER)
    with pytest.raises(ClusterDDLError, match="MergeTree"):
        on_cluster(["CREATE TABLE clicktrail.touches (a UInt8) ENGINE = Memory"], CLUSTER)
    with pytest.raises(ClusterDDLError, match="views"):
        views_on_cluster(["CREATE TABLE clicktrail.touches (a UInt8) ENGINE = MergeTree ORDER BY a"], CLUSTER)
    for name in ("", "a'b", "a b"):
        with pytest.raises(ClusterDDLError, match="cluster"):
            on_cluster([], name)


def _table(statement: str) -> str | None:
    match = _TABLE.match(statement) or re.match(r"^(?:DROP|ALTER) TABLE (?:IF EXISTS )?clicktrail\.(\w+) ON", statement)
    return match[1] if match else None


def _formatted(engine: Store, statement: str) -> str:
    return engine.query("SELECT formatQuerySingleLine({q:String})", "TabSeparatedRaw", readonly=False,
                        params={"q": _escaped(statement)}).decode().strip()


def _escaped(value: str) -> str:
    """A query parameter's text as ClickHouse reads it (escaped, as in TabSeparated)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


# --- the single-node run ----------------------------------------------------------------------------------------

#: Migrations applied again once the events are in, on the cluster form only: every backfill into a sharded and an
#: every-node table, and the re-keyings (create, copy, exchange, drop) over data. The rollups' idempotent states
#: and FINAL reads must leave every view's answer as it was.
RERUN = ("0002", "0003", "0006", "0007", "0008", "0010", "0011")


def _rows(now_ms: int) -> tuple[bytes, str]:
    """The generated events as the gateway stores them, and a stream of site_a."""
    data = generate(11, now_ms)
    stream = next(e["props"]["stream_id"] for e in data.events
                  if e["site_id"] == "site_a" and e["event"] == "registration")
    window = TimeWindow.of(1825, 3600, "the secret key")
    out = []
    for event in data.events:
        wire = {k: v for k, v in event.items() if k != "site_id"}
        ctx = Context(event["site_id"], now_ms, 0, window, "10.0.0.0", NO_AGENT, "")
        out.append(build_row(decode_event(orjson.dumps(wire)), ctx))
    return encode(out), stream


def _answers(store: Store, params: dict[str, str]) -> dict[str, str]:
    """Every analyst view's rows, sorted: the views without parameters whole, the others for ``params``."""
    views = store.query(f"SELECT name, as_select FROM system.tables WHERE database = '{DATABASE}' AND engine = 'View'"
                        " ORDER BY name", "JSONCompactEachRow", readonly=False)
    answers = {}
    for name, select in map(orjson.loads, views.splitlines()):
        wanted = sorted(set(re.findall(r"\{(\w+):", select)))
        if any(p not in params for p in wanted):
            continue
        call = f"{name}({', '.join(f'{p} = {params[p]}' for p in wanted)})" if wanted else name
        answers[name] = store.query(f"SELECT * FROM {DATABASE}.{call} ORDER BY ALL", "TabSeparated",
                                    readonly=False).decode()
    return answers


@dataclass
class Run:
    plain: dict[str, str]  # each view's answer on the plain schema
    clustered: dict[str, str]  # on the single-node cluster form
    two_shards: dict[str, str]  # on the cluster form over two shards
    tables: dict[str, str]  # the cluster form's tables: name -> engine
    counts: tuple[int, int]  # rows of events (Distributed) and of events_local
    spread: list[int]  # on two shards: the events of each shard, then the persons with events on both
    store: Store  # the two-shard form, reopened with its second shard on a host nobody answers


def _load(store: Store, rows: bytes, rerun: bool) -> None:
    """The events in through the loader's path (the Distributed events, on the cluster form), and, with ``rerun``,
    the RERUN migrations' cluster statements over them."""
    store.insert_data(f"INSERT INTO {DATABASE}.events SETTINGS distributed_foreground_insert = 1", "JSONEachRow", rows)
    if rerun:
        for path in migration_files():
            if path.name[:4] in RERUN:
                for st in on_cluster(original_statements(path), CLUSTER):
                    store.query(single_node(st), readonly=False)
    store.refresh_persons()


def _shard_filters() -> str:
    """Each sharded local table read in a shard's part of a query shows that shard its own share only (by the
    table's sharding key): the two shards of TWO_LOCAL_SHARDS_CONFIG are one table in this engine, each reading it
    as if it held only what the Distributed table sent it. Other reads (shardNum() = 0) see it all: a materialized
    view's of its block, and a backfill's shard by shard (parallel_distributed_insert_select), which ClickHouse runs
    here outside any shard's part, so each copies every row, twice in all: the idempotent states and FINAL the
    rollups are read with make that the same as once, as they do for a backfill run twice."""
    filters = ", ".join(f"'{DATABASE}.{table}_local': 'shardNum() = 0 OR {_quoted(key)} % 2 + 1 = shardNum()'"
                        for table, key in SHARD_KEYS.items())
    return f"SET additional_table_filters = {{{filters}}}"


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The same events in a plain store, in the single-node cluster form and in the cluster form over two shards;
    each one's view answers. chDB opens one data directory at a time, so each store is read and closed in turn; the
    two-shard one is then reopened with its second shard elsewhere, for EXPLAIN and the statement checks' parsing."""
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows, stream = _rows(int(now.timestamp() * 1000))
    first = (now.date() - timedelta(days=120)).isoformat()
    params = {"site": "'site_a'", "date_from": f"'{first}'", "date_to": f"'{now.date().isoformat()}'",
              "conversion": "'registration'", "model": "'linear'", "window_s": "604800",
              "steps": "['page_view', 'registration']", "by_channel": "1", "window_days": "30",
              "stream": f"'{stream}'"}

    plain = Store(tmp_path_factory.mktemp("plain") / "store")
    plain.open()
    _load(plain, rows, rerun=False)
    plain_answers = _answers(plain, params)
    plain.close()

    one = ClusterStore(tmp_path_factory.mktemp("one_shard") / "store")
    one.open()
    _load(one, rows, rerun=True)
    one_answers = _answers(one, params)
    tables = dict(orjson.loads(line) for line in one.query(
        f"SELECT name, engine FROM system.tables WHERE database = '{DATABASE}'", "JSONCompactEachRow",
        readonly=False).splitlines())
    counts = (int(one.query(f"SELECT count() FROM {DATABASE}.events", readonly=False)),
              int(one.query(f"SELECT count() FROM {DATABASE}.events_local", readonly=False)))
    one.close()

    two = ClusterStore(tmp_path_factory.mktemp("two_shards") / "store")
    two.config = TWO_LOCAL_SHARDS_CONFIG
    two.open()
    two.query(_shard_filters(), readonly=False)  # on the loader's and migrations' connection, which _answers reads on
    _load(two, rows, rerun=True)
    two_answers = _answers(two, params)  # with ClickHouse's default distributed_product_mode, 'deny'
    spread = [int(n) for n in two.query(
        f"SELECT countIf(_shard_num = 1), countIf(_shard_num = 2) FROM {DATABASE}.events", readonly=False).split()]
    spread.append(int(two.query(
        "SELECT count() FROM (SELECT clicktrail_person(site_id, anonymous_id, user_id) AS person"
        f" FROM {DATABASE}.events GROUP BY site_id, person HAVING uniqExact(_shard_num) > 1)", readonly=False)))
    two.close()

    explain = ClusterStore(two.path)
    explain.config = TWO_SHARDS_CONFIG
    explain.open()
    yield Run(plain_answers, one_answers, two_answers, tables, counts, spread, explain)
    explain.close()


@pytest.fixture(scope="module")
def engine(run: Run) -> Store:
    return run.store


def test_the_cluster_layout_holds_the_events_in_local_tables(run: Run) -> None:
    for table in SHARD_KEYS:
        if table.endswith("_by_time"):
            assert table not in run.tables and f"{table}_local" not in run.tables  # dropped by their migration
            continue
        assert run.tables[table] == "Distributed" and run.tables[f"{table}_local"].endswith("MergeTree")
    for table in cluster.EVERY_NODE - {"touches_by_time"}:
        assert run.tables[table].endswith("MergeTree")
    assert run.counts[0] == run.counts[1] > 1000


def test_every_view_answers_as_on_the_plain_schema(run: Run) -> None:
    plain, clustered = run.plain, run.clustered
    assert sorted(clustered) == sorted(plain) == sorted(run.two_shards)
    assert {"sessions", "attribution", "channel_roi", "live_stream_stats", "funnel", "lifecycle_funnel"} <= set(plain)
    for name, rows in plain.items():
        assert _same(clustered[name], rows), (name, clustered[name], rows)
    assert sum(bool(rows) for rows in plain.values()) >= 0.8 * len(plain)  # the data gives most views rows


def test_on_two_shards_every_view_answers_as_on_the_plain_schema(run: Run) -> None:
    """Persons whose devices lie on both shards (an identify linked them, or a user id on a server-side event) are
    counted once, joined to all their touches and stages, and run through funnels whole: per-person states merge at
    the initiator, and the tables the joins look persons up in are on every node. No view needs a setting for it:
    the answers were read under ClickHouse's default distributed_product_mode ('deny')."""
    shard_1, shard_2, persons_on_both = run.spread
    assert shard_1 > 1000 and shard_2 > 1000 and shard_1 + shard_2 == run.counts[0]  # each event on one shard
    assert persons_on_both >= 5  # and persons' devices across shards: what the views must put back together
    for name, rows in run.plain.items():
        assert _same(run.two_shards[name], rows), (name, run.two_shards[name], rows)


def _same(got: str, want: str) -> bool:
    """The same rows, cell by cell; numbers within 1e-9 (a sum of floats depends on the order it adds them in)."""
    got_rows, want_rows = got.splitlines(), want.splitlines()
    if len(got_rows) != len(want_rows):
        return False
    for g, w in zip(got_rows, want_rows, strict=True):
        got_cells, want_cells = g.split("\t"), w.split("\t")
        if len(got_cells) != len(want_cells):
            return False
        if not all(a == b or _close(a, b) for a, b in zip(got_cells, want_cells, strict=True)):
            return False
    return True


def _close(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    except ValueError:
        return False


def test_every_view_parameter_is_known() -> None:
    """_answers skips a view whose parameters it lacks: the skipped must be none of the views' files'."""
    names = {p for st in view_statements() for p in re.findall(r"\{(\w+):", st)}
    assert names <= {"site", "date_from", "date_to", "conversion", "model", "window_s", "steps", "by_channel",
                     "window_days", "stream"}, names




def test_views_over_every_node_tables_ask_no_shard(run: Run) -> None:
    """Planned on two shards, the second elsewhere (EXPLAIN connects to none): the views that read only every-node
    tables (touches, lead_stages, the persons dictionary) run on the node asked, those over sharded tables ask the
    other shard. (Planning some views runs their scalar subqueries, which would connect: they are not among these.)"""
    params = {"site": "'site_a'", "date_from": "'2026-01-01'", "date_to": "'2026-01-31'", "steps": "['page_view']",
              "window_s": "3600"}
    remote = {}
    for name in ("touch_channels", "first_touch_channels", "identities", "lead_stage_persons", "lifecycle_recycling",
                 "sessions", "event_channels", "funnel", "live_stream_stats", "content_engagement", "lead_persons"):
        select = run.store.query(f"SELECT as_select FROM system.tables WHERE database = '{DATABASE}'"
                                 f" AND name = '{name}'", "TabSeparatedRaw", readonly=False).decode()
        wanted = sorted(set(re.findall(r"\{(\w+):", select)))
        call = f"{name}({', '.join(f'{p} = {params[p]}' for p in wanted)})" if wanted else name
        plan = run.store.query(f"EXPLAIN SELECT * FROM {DATABASE}.{call}", readonly=False).decode()
        remote[name] = "ReadFromRemote" in plan
    assert remote == {"touch_channels": False, "first_touch_channels": False, "identities": False,
                      "lead_stage_persons": False, "lifecycle_recycling": False, "sessions": True,
                      "event_channels": True, "funnel": True, "live_stream_stats": True, "content_engagement": True,
                      "lead_persons": True}
