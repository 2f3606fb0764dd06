"""What one request to the ClickHouse HTTP interface may do to others: one statement per request, read-only
users that only read, and sessions (session_id) whose state is theirs alone. A real gateway process, spoken
to over HTTP with httpx and clickhouse-connect."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import httpx
import pytest

from gateway.serve.clickhouse import MAX_SESSIONS_PER_USER
from tests.conftest import COUNT_ALL, GatewayProcess, make_event
from tests.test_clickhouse_http import ADMIN, ANALYST, assert_error, post

EVENTS = 3


@pytest.fixture(scope="module")
def gw(gateway: GatewayProcess) -> GatewayProcess:
    """The module's gateway with a known number of events, so a count can tell clicktrail.events from
    system.events."""
    assert gateway.send([make_event() for _ in range(EVENTS)]).status_code == 200
    assert gateway.wait_for(COUNT_ALL, EVENTS) == EVENTS
    return gateway


@pytest.fixture(scope="module")
def http(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{gw.clickhouse_port}", timeout=30) as client:
        yield client


def text(http: httpx.Client, sql: str, auth: tuple[str, str] = ADMIN, **params: Any) -> str:
    """The body of a query's answer, which must succeed; ``params``: the URL's."""
    response = post(http, sql, auth, params=params)
    assert response.status_code == 200, response.text
    return response.text


def new_session() -> str:
    return "s-" + uuid.uuid4().hex


# -- one statement per request -------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT 1; USE system",
    "SELECT 1;USE system",
    "SELECT 1\n;\nSYSTEM STOP MERGES",
    "SELECT 1 /* ; */ ; SELECT 2",
    "SELECT 1 -- comment\n; SELECT 2",
    "SELECT ';' ; SELECT 2",
    "SELECT 'it''s; \\'; fine'; SELECT 2",
    "SELECT $$a;b$$; SELECT 2",
    "SELECT `a;b` FROM (SELECT 1 AS `a;b`); SELECT 2",
    "SELECT 1;;SELECT 2",
    "SELECT 1; SET max_threads = 1",
    "SELECT 1; #x",
])
@pytest.mark.parametrize("auth", [ADMIN, ANALYST])
def test_a_second_statement_is_a_syntax_error(http: httpx.Client, sql: str, auth: tuple[str, str]) -> None:
    assert_error(post(http, sql, auth), 400, 62, "Syntax error (Multi-statements are not allowed)")


@pytest.mark.parametrize("sql", ["SELECT 1;", "SELECT 1;;", "SELECT 1; -- bye", "SELECT 1 ;\n\n", "SELECT 1; /* bye */",
                                 "/* hi */ SELECT 1 -- bye"])
def test_trailing_semicolons_and_comments_leave_one_statement(http: httpx.Client, sql: str) -> None:
    assert text(http, sql, ANALYST) == "1\n"


@pytest.mark.parametrize("auth", [ADMIN, ANALYST])
def test_a_refused_use_moves_no_later_request(http: httpx.Client, auth: tuple[str, str]) -> None:
    assert_error(post(http, "SELECT 1; USE system", auth), 400, 62, "(SYNTAX_ERROR)")
    assert text(http, "SELECT count() FROM events", auth) == f"{EVENTS}\n"
    assert text(http, "SELECT count() FROM events", auth, database="clicktrail") == f"{EVENTS}\n"
    # A USE of its own is one statement, and lasts for its request only.
    assert text(http, "/* x */ use system", auth) == ""
    assert text(http, "SELECT currentDatabase(), count() FROM events", auth) == f"clicktrail\t{EVENTS}\n"


def test_insert_data_is_data_never_a_statement(http: httpx.Client) -> None:
    table = "t_" + uuid.uuid4().hex[:8]
    text(http, f"CREATE TABLE {table} (a UInt8, s String) ENGINE = MergeTree ORDER BY a")
    assert text(http, f"INSERT INTO {table} VALUES (1, 'a;b'), (2, 'it''s; DROP TABLE {table}') ;  ") == ""
    assert text(http, f"insert into {table} (a, s) format JSONEachRow\n"
                      '{"a": 3, "s": "USE system; x"}\n{"a": 4, "s": ""}\n') == ""
    # What follows the VALUES data is refused as ClickHouse refuses it, and never run; other formats read
    # it as data.
    assert_error(post(http, f"INSERT INTO {table} VALUES (5, 'x'); DROP TABLE {table}"), 500, 33,
                 "Cannot read data after semicolon")
    assert_error(post(http, f"INSERT INTO {table} VALUES (5, 'x'); -- trailing"), 500, 33,
                 "Cannot read data after semicolon")
    response = post(http, f"INSERT INTO {table} FORMAT TSV\n5\tx\n; DROP TABLE {table}")
    assert response.headers["X-ClickHouse-Exception-Code"] == "27"  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    # INSERT ... SELECT, with or without a FORMAT clause, has no data: what follows it is a statement.
    assert text(http, f"INSERT INTO {table} SELECT 6, 'sel' FORMAT TSV") == ""
    assert_error(post(http, f"INSERT INTO {table} SELECT 7, 'sel'; DROP TABLE {table}"), 400, 62,
                 "(Multi-statements are not allowed)")
    assert text(http, f"SELECT a, s FROM {table} ORDER BY a") == \
        "1\ta;b\n2\tit\\'s; DROP TABLE " + table + "\n3\tUSE system; x\n4\t\n6\tsel\n"


def test_a_statement_longer_than_max_query_size_is_refused_but_insert_data_is_not(http: httpx.Client) -> None:
    long_comment = "-- " + "x" * 300_000 + "\n"
    # The part read is a whole statement: refused all the same, as what follows it is unread.
    assert_error(post(http, "SELECT 1 " + long_comment + "; SYSTEM STOP MERGES"), 400, 62, "Max query size exceeded")
    assert_error(post(http, "SELECT 1 " + long_comment), 400, 62, "Max query size exceeded")
    table = "t_" + uuid.uuid4().hex[:8]
    text(http, f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree ORDER BY a")
    rows = 100_000
    assert text(http, f"INSERT INTO {table} VALUES " + ",".join(f"({i})" for i in range(rows))) == ""
    assert text(http, f"SELECT count(), sum(a) FROM {table}") == f"{rows}\t{rows * (rows - 1) // 2}\n"


# -- read-only users only read -------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SYSTEM STOP MERGES",
    "/* quiet */ system\nstop   merges clicktrail.events",
    "SYSTEM STOP TTL MERGES",
    "SYSTEM STOP MOVES",
    "SYSTEM START MERGES",
    "SYSTEM FLUSH LOGS",
    "SYSTEM DROP MARK CACHE",
    "KILL QUERY WHERE 1",
    "KILL MUTATION WHERE 1",
    "OPTIMIZE TABLE events FINAL",
    "SET max_threads = 1",
    "SET readonly = 0",
    "SET ROLE NONE",
    "SET DEFAULT ROLE NONE TO default",
    "GRANT SELECT ON *.* TO default",
    "REVOKE SELECT ON *.* FROM default",
    "CREATE TABLE mine (a UInt8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE mine (a UInt8)",
    "CREATE USER someone",
    "CREATE FUNCTION f AS x -> x",
    "DROP TABLE events",
    "ALTER TABLE events DELETE WHERE 1",
    "DELETE FROM events WHERE 1",
    "RENAME TABLE events TO gone",
    "TRUNCATE TABLE events",
    "DETACH TABLE events",
    "ATTACH TABLE events",
    "INSERT INTO events (site_id, event_id) VALUES ('s', 'ro')",
    "INSERT INTO events SELECT * FROM events",
    "EXCHANGE TABLES events AND events",
    "UNDROP TABLE events",
    "BACKUP TABLE events TO File('events.zip')",
    "RESTORE TABLE events FROM File('events.zip')",
    "MOVE USER default TO local_directory",
    "BEGIN TRANSACTION",
])
def test_readonly_user_cannot_change_the_server(http: httpx.Client, sql: str) -> None:
    response = post(http, sql, ANALYST)
    assert_error(response, 500, 164, "analyst: Cannot execute query in readonly mode. (READONLY)")


@pytest.mark.parametrize("sql", ["SYSTEM STOP MERGES", "KILL QUERY WHERE 1", "SET max_threads = 1"])
def test_get_is_readonly_for_admin_too(http: httpx.Client, sql: str) -> None:
    response = http.get("/", params={"query": sql}, auth=ADMIN)
    assert_error(response, 500, 164, "method GET implies readonly. You should use method POST for modifying")


def test_refused_system_statements_did_not_take_effect(http: httpx.Client) -> None:
    for sql in ("SYSTEM STOP MERGES", "SYSTEM STOP TTL MERGES", "SYSTEM STOP MOVES"):
        assert post(http, sql, ANALYST).status_code == 500
    table = "t_" + uuid.uuid4().hex[:8]
    text(http, f"CREATE TABLE {table} (a UInt8) ENGINE = MergeTree ORDER BY a")
    for value in (1, 2):
        text(http, f"INSERT INTO {table} VALUES ({value})")
    parts = f"SELECT count() FROM system.parts WHERE database = 'clicktrail' AND table = '{table}' AND active"
    assert text(http, parts) == "2\n"
    assert text(http, f"OPTIMIZE TABLE {table} FINAL") == ""  # stopped merges: "Cancelled merging parts"
    assert text(http, parts) == "1\n"
    assert text(http, "SELECT count() FROM events") == f"{EVENTS}\n"


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "WITH 1 AS x SELECT x",
    "EXPLAIN SELECT 1",
    "SHOW TABLES",
    "DESC events",
    "EXISTS TABLE events",
    "CHECK TABLE events",
    "USE system",
])
def test_readonly_user_reads(http: httpx.Client, sql: str) -> None:
    assert post(http, sql, ANALYST).status_code == 200


# -- sessions ------------------------------------------------------------------------------------------


def test_temporary_table_lives_in_its_session_only(http: httpx.Client) -> None:
    a, b = new_session(), new_session()
    assert text(http, "CREATE TEMPORARY TABLE tmp (x UInt8)", session_id=a) == ""
    assert text(http, "INSERT INTO tmp VALUES (1), (2)", session_id=a) == ""
    assert text(http, "SELECT sum(x) FROM tmp", session_id=a) == "3\n"
    for params in ({"session_id": b}, {}):
        assert_error(post(http, "SELECT sum(x) FROM tmp", params=params), 404, 60, "(UNKNOWN_TABLE)")
    # Sessions belong to their user: the same id is another session for another user.
    assert_error(post(http, "SELECT sum(x) FROM tmp", ANALYST, params={"session_id": a}), 404, 60, "(UNKNOWN_TABLE)")


def test_use_and_set_last_for_their_session_only(http: httpx.Client) -> None:
    a, b = new_session(), new_session()
    state = "SELECT currentDatabase(), getSetting('max_threads') = 3"
    assert text(http, "SET max_threads = 3", session_id=a) == ""
    assert text(http, "USE system", session_id=a) == ""
    assert text(http, state, session_id=a) == "system\t1\n"
    # The database parameter is the request's; the session keeps the one USE chose.
    assert text(http, state, session_id=a, database="default") == "default\t1\n"
    assert text(http, state, session_id=a) == "system\t1\n"
    assert text(http, state, session_id=b) == "clicktrail\t0\n"
    assert text(http, state) == "clicktrail\t0\n"


def test_readonly_user_session_keeps_use_and_refuses_set(http: httpx.Client) -> None:
    session = new_session()
    assert text(http, "USE system", ANALYST, session_id=session) == ""
    assert text(http, "SELECT currentDatabase()", ANALYST, session_id=session) == "system\n"
    assert_error(post(http, "SET max_threads = 1", ANALYST, params={"session_id": session}), 500, 164, "(READONLY)")
    assert text(http, "SELECT currentDatabase()", ANALYST) == "clicktrail\n"


def test_session_expires_after_its_timeout(http: httpx.Client) -> None:
    session = new_session()
    assert text(http, "CREATE TEMPORARY TABLE tmp (x UInt8)", session_id=session, session_timeout=1) == ""
    # Each request sets the timeout that follows it, as in ClickHouse.
    assert text(http, "SELECT count() FROM tmp", session_id=session, session_check=1, session_timeout=1) == "0\n"
    time.sleep(1.2)
    assert_error(post(http, "SELECT 1", params={"session_id": session, "session_check": 1}), 500, 372,
                 f"Session {session} not found. (SESSION_NOT_FOUND)")
    # Without session_check the id starts a new, empty session.
    assert_error(post(http, "SELECT count() FROM tmp", params={"session_id": session}), 404, 60, "(UNKNOWN_TABLE)")


@pytest.mark.parametrize(("timeout", "message"), [("x", "Invalid session timeout: 'x'"), ("-1", "Invalid session"),
                                                  ("3601", "larger than max_session_timeout: 3600")])
def test_invalid_session_timeout(http: httpx.Client, timeout: str, message: str) -> None:
    response = post(http, "SELECT 1", params={"session_id": new_session(), "session_timeout": timeout})
    assert_error(response, 500, 374, message)


def test_concurrent_use_of_a_session_is_refused(http: httpx.Client) -> None:
    session, other = new_session(), new_session()
    slow: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: slow.append(post(http, "SELECT sleep(1)", params={"session_id": session})))
    thread.start()
    time.sleep(0.3)
    assert_error(post(http, "SELECT 1", params={"session_id": session}), 500, 373,
                 f"Session {session} is locked by a concurrent client. (SESSION_IS_LOCKED)")
    assert text(http, "SELECT 2", session_id=other) == "2\n"  # another session waits its turn instead
    thread.join()
    assert slow[0].status_code == 200
    assert text(http, "SELECT 3", session_id=session) == "3\n"


def test_sessions_per_user_are_bounded(http: httpx.Client) -> None:
    opened = 0  # other tests' sessions of the analyst's may still be open and count
    while (response := post(http, "SELECT 1", ANALYST, params={"session_id": new_session(), "session_timeout": 1})
           ).status_code == 200:
        opened += 1
        assert opened <= MAX_SESSIONS_PER_USER
    assert opened > 0
    assert_error(response, 500, 700, "(USER_SESSION_LIMIT_EXCEEDED)")
    assert text(http, "SELECT 1", ADMIN, session_id=new_session()) == "1\n"  # another user's count
    assert text(http, "SELECT 1", ANALYST) == "1\n"  # and no session needs none
    time.sleep(1.2)
    assert text(http, "SELECT 1", ANALYST, session_id=new_session()) == "1\n"


def test_clickhouse_connect_sessions(gw: GatewayProcess) -> None:
    def client(**kwargs: Any) -> Any:
        return clickhouse_connect.get_client(host="127.0.0.1", port=gw.clickhouse_port, username=ADMIN[0],
                                             password=ADMIN[1], **kwargs)

    named, generated = client(session_id=new_session()), client()  # the default: a generated session_id
    for each in (named, generated):
        each.command("CREATE TEMPORARY TABLE cc_tmp (x UInt8)")
        each.command("INSERT INTO cc_tmp VALUES (7)")
        assert each.query("SELECT x FROM cc_tmp").result_rows == [(7,)]
    # Each client's temporary table is its own.
    generated.command("INSERT INTO cc_tmp VALUES (8)")
    assert named.query("SELECT count() FROM cc_tmp").result_rows == [(1,)]
    without = client(autogenerate_session_id=False)
    assert without.command("SELECT count() FROM events") == EVENTS
    for each in (named, generated, without):
        each.close()
