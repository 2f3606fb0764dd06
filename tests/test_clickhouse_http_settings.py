"""Settings and limits through the ClickHouse HTTP interface: per-query settings from the URL (as clickhouse-connect's
``settings=`` sends them) and from the SETTINGS clause take effect for that query only, and the users' limits are
ClickHouse's, which a query may lower but not lift. A real gateway process, spoken to with clickhouse-connect and
httpx."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, ProgrammingError

from gateway.config import UserConfig
from gateway.warehouse.user_limits import DEFAULT_MEMORY_SHARE, Profiles, machine_memory
from tests.conftest import GatewayProcess
from tests.test_clickhouse_http import ADMIN, ANALYST, assert_error, post

CAPPED = ("capped", "capped-pw")
MEMORY_CAP = 64 * 1024 * 1024
USERS = f"""
[[users]]
name = "{CAPPED[0]}"
password = "{CAPPED[1]}"
max_memory_usage = {MEMORY_CAP}
max_execution_time = 1
max_result_rows = 1000
max_result_bytes = 1000000
max_rows_to_read = 5000000
"""
# A query that holds more than MEMORY_CAP (two million strings of 100 bytes in one array), reading fewer rows
# than max_rows_to_read.
BIG = "SELECT length(groupArray(repeat('x', 100))) FROM numbers(2000000)"
SLOW = "SELECT sleepEachRow(0.25) FROM numbers(12) SETTINGS max_block_size = 1"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), users=USERS).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.clickhouse_port}", timeout=30) as client:
        yield client


def connect(gateway: GatewayProcess, user: tuple[str, str], **kwargs: Any) -> Client:
    return clickhouse_connect.get_client(host="127.0.0.1", port=gateway.clickhouse_port, username=user[0],
                                         password=user[1], **kwargs)


@pytest.fixture(scope="module")
def analyst(gateway: GatewayProcess) -> Iterator[Client]:
    client = connect(gateway, ANALYST)  # with a session of its own, clickhouse-connect's default
    yield client
    client.close()


@pytest.fixture(scope="module")
def admin(gateway: GatewayProcess) -> Iterator[Client]:
    client = connect(gateway, ADMIN)
    yield client
    client.close()


def code(failure: pytest.ExceptionInfo[DatabaseError]) -> int:
    return failure.value.code  # type: ignore[attr-defined,no-any-return]


def value(http: httpx.Client, setting: str, auth: tuple[str, str] = ANALYST, **params: Any) -> str:
    response = post(http, f"SELECT getSetting('{setting}')", auth, params=params)
    assert response.status_code == 200, response.text
    return response.text.strip()


# -- settings take effect ------------------------------------------------------------------------------


def test_clickhouse_connect_settings_apply_to_the_query(analyst: Client) -> None:
    sql = "SELECT getSetting('max_threads'), getSetting('max_block_size')"
    assert analyst.query(sql, settings={"max_threads": 1, "max_block_size": 1000}).result_rows == [(1, 1000)]
    with pytest.raises(DatabaseError) as failure:
        analyst.query("SELECT number FROM numbers(10)", settings={"max_result_rows": 5,
                                                                  "result_overflow_mode": "throw"})
    assert code(failure) == 396  # TOO_MANY_ROWS_OR_BYTES
    # Its session does not keep them.
    assert analyst.query("SELECT number FROM numbers(10)").row_count == 10
    assert analyst.query(sql).result_rows != [(1, 1000)]


@pytest.mark.parametrize(("settings", "answer"), [
    ({"output_format_json_quote_64bit_integers": 1}, b'{"n":"18446744073709551615","t":"2024-05-06 07:08:09"}\n'),
    ({"output_format_json_quote_64bit_integers": 0, "date_time_output_format": "iso"},
     b'{"n":18446744073709551615,"t":"2024-05-06T07:08:09Z"}\n'),
])
def test_output_format_settings_change_the_answer(analyst: Client, settings: dict[str, Any], answer: bytes) -> None:
    sql = "SELECT toUInt64(18446744073709551615) AS n, toDateTime('2024-05-06 07:08:09', 'UTC') AS t"
    assert analyst.raw_query(sql, settings=settings, fmt="JSONEachRow") == answer


def test_settings_clause_applies_to_its_query(http: httpx.Client) -> None:
    assert post(http, "SELECT getSetting('max_block_size') SETTINGS max_block_size = 123", ANALYST).text == "123\n"
    response = post(http, "SELECT number FROM numbers(10) SETTINGS max_result_rows = 5", ANALYST)
    assert_error(response, 500, 396, "Limit for result exceeded, max rows: 5.00")
    assert value(http, "max_block_size") == "65409"


def test_max_execution_time_stops_a_slow_query(analyst: Client) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseError) as failure:
        analyst.query(SLOW, settings={"max_execution_time": 1})
    assert code(failure) == 159  # TIMEOUT_EXCEEDED
    assert time.monotonic() - started < 2.5


def test_input_settings_apply_to_an_insert(http: httpx.Client) -> None:
    table = "t_" + uuid.uuid4().hex[:8]
    assert post(http, f"CREATE TABLE {table} (n UInt8, t DateTime) ENGINE = MergeTree ORDER BY n").status_code == 200
    rows = "1,2024-05-06T07:08:09Z\nx,2024-05-06 07:08:09\n3,2024-05-06 07:08:09\n"
    insert = f"INSERT INTO {table} FORMAT CSV\n{rows}"
    assert post(http, insert).status_code != 200  # neither the ISO time nor the 'x' is read by default
    assert post(http, insert, params={"date_time_input_format": "best_effort"}).status_code != 200
    response = post(http, insert, params={"date_time_input_format": "best_effort", "input_format_allow_errors_num": 1})
    assert response.status_code == 200, response.text
    assert post(http, f"SELECT n, t FROM {table} ORDER BY n").text == \
        "1\t2024-05-06 07:08:09\n3\t2024-05-06 07:08:09\n"


def test_a_url_setting_lasts_for_its_query_only_also_in_a_session(http: httpx.Client) -> None:
    session = "s-" + uuid.uuid4().hex
    assert post(http, "SET max_block_size = 77", params={"session_id": session}).status_code == 200
    assert value(http, "max_block_size", ADMIN, session_id=session, max_block_size=5) == "5"
    assert value(http, "max_block_size", ADMIN, session_id=session) == "77"  # its own SET stays
    assert value(http, "max_block_size", ADMIN, max_block_size=5) == "5"
    assert value(http, "max_block_size", ADMIN) == "65409"
    for params in ({"session_id": session}, {}):
        assert value(http, "max_block_size", ANALYST, max_block_size=6, **params) == "6"
        assert value(http, "max_block_size", ANALYST, **params) == "65409"


def test_a_readonly_the_url_raised_does_not_outlive_its_query_in_a_session(http: httpx.Client) -> None:
    session = "s-" + uuid.uuid4().hex
    assert value(http, "readonly", ADMIN, session_id=session, readonly=1) == "1"
    assert value(http, "readonly", ADMIN, session_id=session) == "0"


def test_parameters_of_the_interface_are_not_settings(http: httpx.Client) -> None:
    params = {"query_id": "q-" + uuid.uuid4().hex, "wait_end_of_query": 1, "buffer_size": 4096, "stacktrace": 0,
              "quota_key": "k", "database": "system", "default_format": "TSV", "param_x": "2", "": "empty"}
    response = post(http, "SELECT {x:UInt8} * 2, currentDatabase()", ANALYST, params=params)
    assert (response.status_code, response.text) == (200, "4\tsystem\n")


# -- settings refused ----------------------------------------------------------------------------------


def test_unknown_setting_gets_clickhouse_s_error(http: httpx.Client, analyst: Client) -> None:
    assert_error(post(http, "SELECT 1", ANALYST, params={"no_such_setting": 1}), 404, 115,
                 "Unknown setting 'no_such_setting'")
    assert_error(post(http, "SELECT 1 SETTINGS no_such_setting = 1", ANALYST), 404, 115, "(UNKNOWN_SETTING)")
    with pytest.raises(DatabaseError) as failure:
        analyst.query("SELECT 1", settings={"no_such_setting": 1})  # unknown to it, so it lets the server say
    assert code(failure) == 115


def test_a_value_the_setting_cannot_take_is_the_client_s_error(http: httpx.Client) -> None:
    response = post(http, "SELECT 1", ANALYST, params={"max_threads": "many"})
    assert response.status_code == 400, response.text
    assert response.headers["X-ClickHouse-Exception-Code"] == "27"  # CANNOT_PARSE_INPUT_ASSERTION_FAILED


def test_readonly_user_cannot_change_readonly(http: httpx.Client, analyst: Client) -> None:
    for params, sql in (({"readonly": 0}, "SELECT 1"), ({}, "SELECT 1 SETTINGS readonly = 0"),
                        ({"readonly": 1}, "SELECT 1")):
        assert_error(post(http, sql, ANALYST, params=params), 500, 164,
                     "Cannot modify 'readonly' setting in readonly mode. (READONLY)")
    # clickhouse-connect reads from system.settings which settings the user may change, and says so itself.
    with pytest.raises(ProgrammingError, match="Setting readonly is readonly"):
        analyst.query("SELECT 1", settings={"readonly": 0})


def test_get_is_readonly_2_for_an_admin(http: httpx.Client) -> None:
    response = http.get("/", params={"query": "SELECT getSetting('readonly'), getSetting('max_threads')",
                                     "max_threads": 1}, auth=ADMIN)
    assert (response.status_code, response.text) == (200, "2\t1\n")
    response = http.get("/", params={"query": "SELECT 1", "readonly": 0}, auth=ADMIN)
    assert_error(response, 500, 164, "Cannot modify 'readonly' setting in readonly mode")


# -- limits --------------------------------------------------------------------------------------------


def test_default_limits_keep_a_one_box_install_safe(http: httpx.Client) -> None:
    cap = int(machine_memory() * DEFAULT_MEMORY_SHARE)
    for auth in (ANALYST, ADMIN):
        assert value(http, "max_memory_usage", auth) == str(cap)
        assert value(http, "max_execution_time", auth) == "60"  # server.query_timeout_s
        assert_error(post(http, f"SELECT 1 SETTINGS max_memory_usage = {cap + 1}", auth), 500, 452,
                     f"Setting max_memory_usage shouldn't be greater than {cap}")


def test_memory_limit(http: httpx.Client) -> None:
    assert_error(post(http, BIG, CAPPED), 500, 241, "(MEMORY_LIMIT_EXCEEDED)")
    # A query may lower its limit; the analyst's default would let this one through.
    assert post(http, BIG, ANALYST).text == "2000000\n"
    assert_error(post(http, BIG, ANALYST, params={"max_memory_usage": MEMORY_CAP}), 500, 241, "(MEMORY_LIMIT_EXCEEDED)")


def test_result_limits(http: httpx.Client) -> None:
    assert_error(post(http, "SELECT number FROM numbers(1001)", CAPPED), 500, 396, "max rows: 1.00 thousand")
    assert post(http, "SELECT count() FROM numbers(1001)", CAPPED).text == "1001\n"
    wide = "SELECT repeat(toString(number % 10), 2000) FROM numbers(999)"  # 2 MB in fewer than 1000 rows
    assert_error(post(http, wide, CAPPED), 500, 396, "max bytes: 976.56 KiB")
    assert_error(post(http, "SELECT count() FROM numbers(10000000)", CAPPED), 500, 158, "(TOO_MANY_ROWS)")


def test_time_limit(http: httpx.Client) -> None:
    started = time.monotonic()
    assert_error(post(http, SLOW, CAPPED), 408, 159, "(TIMEOUT_EXCEEDED)")
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(("setting", "raised", "message"), [
    ("max_memory_usage", 10 * MEMORY_CAP, f"shouldn't be greater than {MEMORY_CAP}"),
    ("max_memory_usage", 0, "shouldn't be less than 1"),  # 0 is no limit to ClickHouse
    ("max_execution_time", 10, "shouldn't be greater than 1"),
    ("max_execution_time", 0, "shouldn't be less than 0.001"),
    ("max_result_rows", 0, "shouldn't be less than 1"),
    ("max_result_bytes", 2000000, "shouldn't be greater than 1000000"),
    ("max_rows_to_read", 0, "shouldn't be less than 1"),
])
def test_limits_cannot_be_lifted(http: httpx.Client, setting: str, raised: int, message: str) -> None:
    for params, sql in (({setting: raised}, "SELECT 1"), ({}, f"SELECT 1 SETTINGS {setting} = {raised}")):
        assert_error(post(http, sql, CAPPED, params=params), 500, 452,
                     f"Setting {setting} {message}. (SETTING_CONSTRAINT_VIOLATION)")


def test_limits_cannot_be_lifted_around_the_constraint(http: httpx.Client) -> None:
    # A subquery's settings are held to the constraints (clamped), and switching to the default profile keeps them.
    lifted = SLOW.replace("SETTINGS", "SETTINGS max_execution_time = 0,")
    for sql in (f"SELECT * FROM ({lifted})", f"SELECT * FROM ({lifted}) SETTINGS profile = 'default'"):
        started = time.monotonic()
        assert_error(post(http, sql, CAPPED), 408, 159, "(TIMEOUT_EXCEEDED)")
        assert time.monotonic() - started < 2.5


def test_no_user_can_name_another_s_profile(http: httpx.Client) -> None:
    """Switching profile is a setting anyone may change; a user must not be able to name another's, laxer, one."""
    own = post(http, "SELECT currentProfiles()", CAPPED).text
    assert own.startswith("['clicktrail_") and own != post(http, "SELECT currentProfiles()", ANALYST).text
    for sql in ("SELECT name FROM system.settings_profiles", "SHOW SETTINGS PROFILES"):
        assert_error(post(http, sql, CAPPED), 403, 497, "(ACCESS_DENIED)")
    users = [UserConfig("a", "x"), UserConfig("b", "y", readonly=False)]
    first, second = Profiles(users, 60), Profiles(users, 60)  # two starts
    assert len(set(first.names.values()) | set(second.names.values())) == 4
