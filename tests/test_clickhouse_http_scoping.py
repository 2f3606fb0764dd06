"""Site scoping: a user with ``sites = [...]`` sees those sites' rows only, in every table and view of clicktrail,
whatever SQL it writes. A real gateway process holding the analytics generator's traffic for three sites, spoken to
with httpx and clickhouse-connect; each escape an analyst could try either answers from its own sites or is
refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import httpx
import orjson
import pytest
from clickhouse_connect.driver.exceptions import ProgrammingError

from tests.analytics.generate import generate
from tests.analytics.harness import deliver
from tests.conftest import GatewayProcess
from tests.test_clickhouse_http import ADMIN, ANALYST, assert_error, post

AGENCY_A = ("agency_a", "agency-a-pw")
AGENCY_BC = ("agency_bc", "agency-bc-pw")
USERS = f"""
[[users]]
name = "{AGENCY_A[0]}"
password = "{AGENCY_A[1]}"
sites = ["site_a"]

[[users]]
name = "{AGENCY_BC[0]}"
password = "{AGENCY_BC[1]}"
sites = ["site_b", "site_c"]
"""
#: What each scoped user may see: its sites, and the rows of no site (the built-in referrer classes).
SEES = {AGENCY_A: ("", "site_a"), AGENCY_BC: ("", "site_b", "site_c")}
SEED = 23  # a seed whose traffic has all three sites


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), users=USERS).start()
    data = generate(SEED, int(datetime.now(UTC).timestamp() * 1000))
    assert {e["site_id"] for e in data.events} == {"site_a", "site_b", "site_c"}
    deliver(gw, data.deliveries, len(data.events))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.clickhouse_port}", timeout=60) as client:
        yield client


def rows(http: httpx.Client, sql: str, auth: tuple[str, str], **params: Any) -> list[dict[str, Any]]:
    response = post(http, sql + " FORMAT JSONEachRow", auth, params=params)
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.text.splitlines()]


def scalar(http: httpx.Client, sql: str, auth: tuple[str, str], **params: Any) -> int:
    response = post(http, sql, auth, params=params)
    assert response.status_code == 200, response.text
    return int(response.text)


def site_tables(http: httpx.Client) -> list[str]:
    """Every table, materialized view, dictionary and (unparameterized) view of clicktrail with a site_id column."""
    sql = ("SELECT DISTINCT c.table AS table FROM system.columns AS c"
           " JOIN system.tables AS t ON t.database = c.database AND t.name = c.table"
           " WHERE c.database = 'clicktrail' AND c.name = 'site_id'"
           " AND NOT (t.engine = 'View' AND t.create_table_query LIKE '%{%:%}%') ORDER BY table")
    return [row["table"] for row in rows(http, sql, ADMIN)]


def test_every_table_and_view_shows_only_the_users_sites(http: httpx.Client) -> None:
    tables = site_tables(http)
    assert {"events", "touches", "identity_links", "live_views", "session_rollup", "content_hits", "page_leaves",
            "referrer_channels", "referrer_channels_dict", "persons", "sessions", "stream_audience"} <= set(tables)
    others = 0
    for table in tables:
        counts = {row["site_id"]: int(row["n"]) for row in rows(
            http, f"SELECT site_id, count() AS n FROM clicktrail.`{table}` GROUP BY site_id", ADMIN)}
        for user, sees in SEES.items():
            got = {row["site_id"]: int(row["n"]) for row in rows(
                http, f"SELECT site_id, count() AS n FROM clicktrail.`{table}` GROUP BY site_id", user)}
            assert got == {site: n for site, n in counts.items() if site in sees}, table
        others += any(site not in SEES[AGENCY_A] for site in counts)
    assert others >= 10  # the tables do hold other sites' rows to hide


def test_unscoped_users_see_every_site(http: httpx.Client) -> None:
    for user in (ADMIN, ANALYST):
        assert scalar(http, "SELECT uniqExact(site_id) FROM clicktrail.events", user) == 3


@pytest.mark.parametrize("view", ["attribution", "attribution_by_sharer", "attribution_credits"])
def test_parameterized_views_answer_only_for_the_users_sites(http: httpx.Client, view: str) -> None:
    def call(site: str, user: tuple[str, str]) -> int:
        return scalar(http, f"SELECT count() FROM clicktrail.{view}(site = '{site}', conversion = 'registration',"
                            " model = 'last_touch', date_from = '2000-01-01', date_to = '2100-01-01')", user)

    assert call("site_b", ADMIN) > 0 and call("site_a", ADMIN) > 0
    assert call("site_b", AGENCY_A) == 0
    assert call("site_a", AGENCY_A) == call("site_a", ADMIN)
    assert call("site_a", AGENCY_BC) == 0


# Each counts rows of site_b, through some way around a plain SELECT: agency_a must count none.
ESCAPES = [
    "SELECT count() FROM clicktrail.events WHERE site_id = 'site_b'",
    "SELECT count() FROM events WHERE site_id = 'site_b'",
    "SELECT count() FROM (SELECT * FROM clicktrail.events) WHERE site_id = 'site_b'",
    "SELECT count() FROM clicktrail.events AS e JOIN clicktrail.touches AS t USING (site_id, anonymous_id)"
    " WHERE site_id = 'site_b'",
    "SELECT count() FROM clicktrail.events AS e RIGHT JOIN clicktrail.touches AS t USING (site_id, anonymous_id)"
    " WHERE t.site_id = 'site_b'",
    "WITH x AS (SELECT site_id FROM clicktrail.events) SELECT countIf(site_id = 'site_b') FROM x",
    "SELECT count() FROM system.one WHERE 'site_b' IN (SELECT site_id FROM clicktrail.events)",
    "SELECT (SELECT count() FROM clicktrail.events WHERE site_id = 'site_b')",
    "SELECT count() FROM (SELECT site_id FROM clicktrail.events UNION ALL SELECT site_id FROM clicktrail.touches)"
    " WHERE site_id = 'site_b'",
    "SELECT count() FROM view(SELECT * FROM clicktrail.events WHERE site_id = 'site_b')",
    "SELECT countIf(site_id = 'site_b') FROM clicktrail.touches FINAL",
    "SELECT count() FROM clicktrail.persons WHERE site_id = 'site_b'",
    "SELECT count() FROM clicktrail.session_rollup_mv WHERE site_id = 'site_b'",
    "SELECT count() FROM clicktrail.stream_audience WHERE site_id = 'site_b'",
    "SELECT count() FROM (SELECT * FROM clicktrail.events WHERE site_id = 'site_b'"
    " SETTINGS additional_table_filters = {})",
    "SELECT count() FROM (SELECT * FROM clicktrail.events WHERE site_id = 'site_b'"
    " SETTINGS additional_table_filters = {}) SETTINGS profile = 'default'",
    "SELECT count() FROM clicktrail.events WHERE site_id = 'site_b'"
    " SETTINGS optimize_use_projections = 1, optimize_use_implicit_projections = 1, force_primary_key = 1",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_sql_cannot_escape_the_sites(http: httpx.Client, sql: str) -> None:
    assert scalar(http, sql, ADMIN) > 0  # there is something to hide
    assert scalar(http, sql, AGENCY_A) == 0


def test_a_scoped_count_is_not_the_table_s(http: httpx.Client) -> None:
    """ClickHouse answers a bare count() from part metadata where it can; a filtered table must not."""
    own = scalar(http, "SELECT count() FROM clicktrail.events WHERE site_id = 'site_a'", ADMIN)
    assert own < scalar(http, "SELECT count() FROM clicktrail.events", ADMIN)
    assert scalar(http, "SELECT count() FROM clicktrail.events SETTINGS optimize_trivial_count_query = 1",
                  AGENCY_A) == own


@pytest.mark.parametrize("sql", [
    "SELECT count() FROM merge('clicktrail', '^events$')",
    "SELECT count() FROM merge(clicktrail, 'events')",
    "SELECT count() FROM remote('127.0.0.1', clicktrail.events)",
    "SELECT count() FROM cluster('default', clicktrail.events)",
    "SELECT count() FROM loop(clicktrail.events) LIMIT 1",
    "SELECT count() FROM dictionary('clicktrail.persons')",
    "SELECT count() FROM mergeTreeIndex('clicktrail', 'events')",
    "SELECT count() FROM url('http://127.0.0.1:1/?query=SELECT+1', LineAsString)",
    "SELECT count() FROM FILE('clicktrail.toml', LineAsString)",
    "SELECT * FROM (SELECT * FROM s3('http://127.0.0.1:1/x.csv'))",
    "DESCRIBE TABLE file('clicktrail.toml', LineAsString)",
    "SELECT dictGet('clicktrail.persons', 'person_id', ('site_b', 'a'))",
    "SELECT dictGetOrDefault(concat('clicktrail.', 'persons'), 'person_id', ('site_b', 'a'), '')",
    "SELECT dictHas('clicktrail.referrer_channels_dict', ('site_b', 'x.example'))",
    "SELECT clicktrail_person('site_b', 'a', '')",  # an SQL function that looks up a dictionary
    "SELECT joinGet('clicktrail.events', 'event', 'x')",
    "SELECT file('clicktrail.toml')",
])
def test_what_reaches_past_the_filters_is_refused(http: httpx.Client, sql: str) -> None:
    assert_error(post(http, sql, AGENCY_A), 403, 497, "agency_a: Not enough privileges: ")


@pytest.mark.parametrize("sql", [
    "SELECT count() FROM url('http://127.0.0.1:1/', LineAsString)",
    "SELECT * FROM file('/etc/hostname', LineAsString)",
    "SELECT file('/etc/hostname')",
    "WITH (SELECT file('/etc/hostname')) AS f SELECT f",
])
def test_read_only_users_do_not_reach_files_or_servers(http: httpx.Client, sql: str) -> None:
    assert_error(post(http, sql, ANALYST), 403, 497, "analyst: Not enough privileges: ")


def test_what_makes_its_rows_up_or_reads_the_users_tables_is_allowed(http: httpx.Client) -> None:
    for sql in ("SELECT count() FROM numbers(3)", "SELECT count() FROM zeros(3)",
                "SELECT * FROM values('a UInt8', 3)",
                "SELECT count() FROM (SELECT * FROM generateRandom('a UInt8') LIMIT 3)",
                "SELECT count() FROM view(SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)",
                "SELECT count() FROM format(CSV, 'a\\nb\\nc\\n')"):
        assert post(http, sql, AGENCY_A).text == "3\n", sql
    # Only dictionary lookups are refused, and only to scoped users.
    assert post(http, "SELECT lower('A')", AGENCY_A).text == "a\n"
    assert post(http, "SELECT clicktrail_person('site_b', 'a', '')", ANALYST).text == "a\n"


@pytest.mark.parametrize(("params", "sql", "code"), [
    ({}, "SELECT count() FROM clicktrail.events SETTINGS additional_table_filters = {}", 452),
    ({"additional_table_filters": "{}"}, "SELECT count() FROM clicktrail.events", 452),
    ({"additional_table_filters": "{'clicktrail.events': '1'}"}, "SELECT count() FROM clicktrail.events", 452),
    ({}, "SELECT count() FROM clicktrail.events SETTINGS use_query_cache = 1", 452),
    ({"session_id": "s-" + uuid.uuid4().hex}, "SET additional_table_filters = {}", 164),
])
def test_the_filters_cannot_be_changed(http: httpx.Client, params: dict[str, str], sql: str, code: int) -> None:
    response = post(http, sql, AGENCY_A, params=params)
    assert_error(response, 500, code, "(SETTING_CONSTRAINT_VIOLATION)" if code == 452 else "(READONLY)")


def test_a_scoped_session_stays_scoped(http: httpx.Client) -> None:
    session = {"session_id": "s-" + uuid.uuid4().hex}
    assert post(http, "USE clicktrail", AGENCY_BC, params=session).status_code == 200
    for _ in range(2):
        assert rows(http, "SELECT DISTINCT site_id FROM events ORDER BY site_id", AGENCY_BC, **session) == \
            [{"site_id": "site_b"}, {"site_id": "site_c"}]
    assert scalar(http, "SELECT count() FROM referrer_channels WHERE site_id = 'site_a'", AGENCY_BC, **session) == 0
    assert scalar(http, "SELECT count() FROM referrer_channels WHERE site_id = 'site_a'", ADMIN) > 0


def test_clickhouse_connect_as_a_scoped_user(gateway: GatewayProcess) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=gateway.clickhouse_port, username=AGENCY_A[0],
                                           password=AGENCY_A[1])
    frame = client.query_df("SELECT site_id, event FROM clicktrail.events")
    assert len(frame) > 0 and set(frame["site_id"]) == {"site_a"}
    # It reads from system.settings that the filters are not the user's to change, and refuses itself.
    with pytest.raises(ProgrammingError, match="Setting additional_table_filters is readonly"):
        client.query("SELECT 1", settings={"additional_table_filters": {}})
    client.close()
