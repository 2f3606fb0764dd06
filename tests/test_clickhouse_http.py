"""The ClickHouse HTTP interface in a real uvicorn server over a real embedded ClickHouse, spoken to
with httpx and clickhouse-connect as analysts' tools would."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import chdb
import clickhouse_connect
import httpx
import pytest
import uvicorn
from clickhouse_connect.driver.exceptions import DatabaseError
from starlette.applications import Starlette

from gateway.config import UserConfig
from gateway.serve.clickhouse import create_app
from gateway.warehouse.store import Store

ADMIN = ("admin", "admin-pw")
ANALYST = ("analyst", "analyst-pw")
USERS = [UserConfig(*ADMIN, readonly=False), UserConfig(*ANALYST)]


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run ``app`` in uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One Store for the module: chDB allows one data directory per process at a time.
    store = Store(tmp_path_factory.mktemp("clickhouse") / "data", users=USERS)
    store.open()
    try:
        with serve(create_app(store, USERS)) as base:
            yield base
    finally:
        store.close()


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def post(http: httpx.Client, sql: str, auth: tuple[str, str] = ADMIN, **kwargs: object) -> httpx.Response:
    return http.post("/", content=sql.encode(), auth=auth, **kwargs)  # type: ignore[arg-type]


def assert_error(response: httpx.Response, status: int, code: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["X-ClickHouse-Exception-Code"] == str(code)
    assert response.text.startswith(f"Code: {code}. DB::Exception: ")
    assert text in response.text
    assert response.text.endswith(")\n") and "(version 26." in response.text


# -- health --------------------------------------------------------------------------------------------


def test_ping_and_root_answer_ok_without_credentials(http: httpx.Client) -> None:
    for path in ("/ping", "/"):
        response = http.get(path)
        assert (response.status_code, response.text) == (200, "Ok.\n")


# -- queries -------------------------------------------------------------------------------------------


def test_select_in_get_parameter(http: httpx.Client) -> None:
    response = http.get("/", params={"query": "SELECT 1 + 1, 'a b'"}, auth=ANALYST)
    assert response.status_code == 200, response.text
    assert response.text == "2\ta b\n"
    assert response.headers["X-ClickHouse-Format"] == "TabSeparated"
    assert response.headers["Content-Type"] == "text/tab-separated-values; charset=UTF-8"
    assert response.headers["X-ClickHouse-Timezone"] == "UTC"
    assert response.headers["X-ClickHouse-Server-Display-Name"] == socket.gethostname()
    assert len(response.headers["X-ClickHouse-Query-Id"]) == 36


def test_query_id_is_echoed(http: httpx.Client) -> None:
    response = http.get("/", params={"query": "SELECT 1", "query_id": "q-42"}, auth=ANALYST)
    assert response.headers["X-ClickHouse-Query-Id"] == "q-42"


def test_select_in_post_body_and_split_over_parameter_and_body(http: httpx.Client) -> None:
    assert post(http, "SELECT number FROM system.numbers LIMIT 3", ANALYST).text == "0\n1\n2\n"
    response = http.post("/", params={"query": "SELECT number FROM system.numbers"}, content=b"LIMIT 2",
                         auth=ANALYST)
    assert response.text == "0\n1\n"


def test_format_clause_and_default_format(http: httpx.Client) -> None:
    response = post(http, "SELECT 1 AS x, 'y' AS s FORMAT JSONEachRow", ANALYST)
    assert response.text == '{"x":1,"s":"y"}\n'
    assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"

    response = post(http, "SELECT 1 AS x", ANALYST, params={"default_format": "CSVWithNames"})
    assert response.text == '"x"\n1\n'
    assert response.headers["X-ClickHouse-Format"] == "CSVWithNames"
    assert response.headers["Content-Type"] == "text/csv; charset=UTF-8; header=present"

    # The query's FORMAT clause wins over default_format, even with SETTINGS after it and a string
    # that looks like a clause.
    response = post(http, "SELECT 'FORMAT CSV' AS f FORMAT JSONCompactEachRow SETTINGS max_threads = 1", ADMIN,
                    params={"default_format": "CSV"})
    assert response.text == '["FORMAT CSV"]\n'
    assert response.headers["X-ClickHouse-Format"] == "JSONCompactEachRow"


def test_param_placeholders(http: httpx.Client) -> None:
    response = http.get("/", params={"query": "SELECT {n:UInt8} + 1, {s:String}", "param_n": "41",
                                     "param_s": "it's"}, auth=ANALYST)
    assert response.text == "42\tit\\'s\n"  # TabSeparated escapes the quote


def test_default_database_is_clicktrail_and_database_parameter_is_per_request(http: httpx.Client) -> None:
    assert post(http, "SELECT currentDatabase()", ANALYST).text == "clicktrail\n"
    assert post(http, "SELECT count() FROM events WHERE site_id = 'nobody'", ANALYST).text == "0\n"
    assert post(http, "SELECT currentDatabase()", ANALYST, params={"database": "system"}).text == "system\n"
    assert post(http, "SELECT currentDatabase()", ANALYST,
                headers={"X-ClickHouse-Database": "default"}).text == "default\n"
    # Neither a database parameter nor a USE in a query carries over to the next request.
    assert post(http, "USE system", ANALYST).status_code == 200
    assert post(http, "SELECT currentDatabase()", ANALYST).text == "clicktrail\n"
    assert_error(post(http, "SELECT 1", ANALYST, params={"database": "nope"}), 404, 81, "(UNKNOWN_DATABASE)")


def test_gzip_request_body_and_gzip_response(http: httpx.Client) -> None:
    response = http.post("/", content=gzip.compress(b"SELECT 'zipped'"), auth=ANALYST,
                         headers={"Content-Encoding": "gzip"})
    assert response.text == "zipped\n"
    assert "Content-Encoding" not in response.headers  # not asked for with enable_http_compression

    response = http.post("/", params={"enable_http_compression": "1"}, content=b"SELECT 'back'", auth=ANALYST,
                         headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.text == "back\n"  # httpx inflated it

    response = http.post("/", content=b"SELECT 1", auth=ANALYST, headers={"Content-Encoding": "gzip"})
    assert_error(response, 400, 271, "(CANNOT_DECOMPRESS)")
    response = http.post("/", content=b"SELECT 1", auth=ANALYST, headers={"Content-Encoding": "snappy"})
    assert_error(response, 501, 48, "Unknown compression method 'snappy'")


def test_empty_post_is_a_syntax_error(http: httpx.Client) -> None:
    assert_error(post(http, "", ANALYST), 400, 62, "Empty query. (SYNTAX_ERROR)")


# -- authentication ------------------------------------------------------------------------------------


def test_each_authentication_method(http: httpx.Client) -> None:
    sql = "SELECT 'in'"
    assert post(http, sql, ANALYST).text == "in\n"
    assert http.post("/", params={"user": "analyst", "password": "analyst-pw"}, content=sql).text == "in\n"
    headers = {"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": "analyst-pw"}
    assert http.post("/", headers=headers, content=sql).text == "in\n"


@pytest.mark.parametrize("credentials", [
    {"auth": ("analyst", "admin-pw")},
    {"auth": ("nobody", "analyst-pw")},
    {"params": {"user": "analyst", "password": ""}},
    {"headers": {"X-ClickHouse-User": "admin", "X-ClickHouse-Key": "wrong"}},
    {},  # no credentials: ClickHouse tries user 'default', which does not exist here
])
def test_wrong_or_missing_credentials(http: httpx.Client, credentials: dict[str, object]) -> None:
    response = http.post("/", content=b"SELECT 1", **credentials)  # type: ignore[arg-type]
    assert_error(response, 403, 516, "Authentication failed: password is incorrect, or there is no user with"
                                     " such name. (AUTHENTICATION_FAILED)")
    assert "admin-pw" not in response.text and "analyst-pw" not in response.text


def test_mixing_authentication_methods_is_refused(http: httpx.Client) -> None:
    response = http.post("/", params={"user": "analyst", "password": "analyst-pw"}, content=b"SELECT 1",
                         auth=ANALYST)
    assert_error(response, 403, 516, "not allowed to use Authorization HTTP header and authentication via"
                                     " parameters simultaneously")


def test_non_basic_authorization_is_refused(http: httpx.Client) -> None:
    response = http.post("/", content=b"SELECT 1", headers={"Authorization": "Bearer abc"})
    assert_error(response, 403, 516, "'Bearer' HTTP Authorization scheme is not supported")


# -- what readonly users and GET cannot do ------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "INSERT INTO clicktrail.events (site_id, event_id) VALUES ('s', 'ro')",
    "CREATE TABLE clicktrail.mine (a UInt8) ENGINE = Memory",
    "DROP TABLE clicktrail.events",
    "SET readonly = 0",
])
def test_readonly_user_cannot_write_or_escape(http: httpx.Client, sql: str) -> None:
    response = post(http, sql, ANALYST, params={"readonly": "0"})  # a URL setting grants nothing
    assert_error(response, 500, 164, "(READONLY)")
    assert post(http, "EXISTS TABLE clicktrail.events", ADMIN).text == "1\n"


def test_readonly_error_names_the_http_user(http: httpx.Client) -> None:
    response = post(http, "CREATE TABLE clicktrail.mine (a UInt8) ENGINE = Memory", ANALYST)
    assert "DB::Exception: analyst: Cannot execute query in readonly mode. (READONLY) (version" in response.text


def test_into_outfile_is_refused_for_everyone(http: httpx.Client, tmp_path: Path) -> None:
    target = tmp_path / "out.tsv"
    for auth in (ANALYST, ADMIN):
        response = post(http, f"SELECT 1 INTO /* sneaky */ OUTFILE '{target}'", auth)
        assert_error(response, 500, 358, "(INTO_OUTFILE_NOT_ALLOWED)")
    assert not target.exists()


def test_get_is_readonly_even_for_admin(http: httpx.Client) -> None:
    response = http.get("/", params={"query": "CREATE TABLE clicktrail.by_get (a UInt8) ENGINE = Memory"},
                        auth=ADMIN)
    assert_error(response, 500, 164, "(READONLY)")


def test_admin_set_without_a_session_is_checked_and_forgotten(http: httpx.Client) -> None:
    # As in ClickHouse: without session_id the setting dies with the request.
    assert post(http, "/* hi */ SET readonly = 1", ADMIN).status_code == 200
    assert post(http, "SELECT getSetting('readonly')", ADMIN).text == "0\n"
    assert_error(post(http, "SET no_such_setting = 1", ADMIN), 404, 115, "(UNKNOWN_SETTING)")


# -- what admins can do --------------------------------------------------------------------------------


def test_admin_inserts_into_events_and_reads_back(http: httpx.Client) -> None:
    insert = ("INSERT INTO clicktrail.events (site_id, event_id, event, ts) VALUES"
              " ('site_http', 'e-admin-1', 'signup', '2025-01-02 03:04:05.678')")
    response = post(http, insert, ADMIN)
    assert (response.status_code, response.text) == (200, "")
    response = post(http, "SELECT event_id, event, ts FROM events WHERE site_id = 'site_http' FORMAT JSONEachRow",
                    ANALYST)
    assert response.text == '{"event_id":"e-admin-1","event":"signup","ts":"2025-01-02 03:04:05.678"}\n'


# -- errors --------------------------------------------------------------------------------------------


def test_syntax_error(http: httpx.Client) -> None:
    assert_error(post(http, "SELEC 1", ANALYST), 400, 62, "Syntax error")


def test_unknown_table(http: httpx.Client) -> None:
    response = post(http, "SELECT * FROM clicktrail.nope", ANALYST)
    assert_error(response, 404, 60, "(UNKNOWN_TABLE)")
    assert response.text.count("(UNKNOWN_TABLE)") == 1


def test_unknown_format_carries_its_name_once(http: httpx.Client) -> None:
    response = post(http, "SELECT 1", ANALYST, params={"default_format": "Nope"})
    assert_error(response, 404, 73, "Unknown format Nope.")
    assert response.text.endswith(f". (UNKNOWN_FORMAT) (version {chdb.engine_version})\n")
    assert response.text.count("Code:") == 1 and response.text.count("(UNKNOWN_FORMAT)") == 1


def test_unavailable_store_is_503(tmp_path: Path) -> None:
    never_opened = Store(tmp_path / "closed")
    with serve(create_app(never_opened, USERS)) as base:
        response = httpx.post(base + "/", content=b"SELECT 1", auth=ANALYST)
    assert response.status_code == 503
    assert response.text == "ClickHouse is not available right now (ClickHouse is not open); retry later.\n"


def test_slow_query_does_not_block_the_event_loop(http: httpx.Client, url: str) -> None:
    slow = threading.Thread(target=post, args=(http, "SELECT sleep(2)", ANALYST))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert httpx.get(url + "/ping").text == "Ok.\n"
    assert time.monotonic() - started < 1
    slow.join()


# -- clickhouse-connect --------------------------------------------------------------------------------


def connect(url: str, user: tuple[str, str]) -> clickhouse_connect.driver.Client:
    port = int(url.rsplit(":", 1)[1])
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, username=user[0], password=user[1])


def test_clickhouse_connect_query_and_command(url: str) -> None:
    client = connect(url, ANALYST)
    result = client.query("SELECT number, toString(number) AS s FROM system.numbers LIMIT 3")
    assert result.column_names == ("number", "s")
    assert result.result_rows == [(0, "0"), (1, "1"), (2, "2")]
    assert client.query("SELECT {n:UInt32} * 2", parameters={"n": 21}).result_rows == [(42,)]
    assert client.command("SELECT 1 + 1") == 2
    assert client.command("SELECT currentDatabase()") == "clicktrail"
    with pytest.raises(DatabaseError) as failure:
        client.query("SELECT * FROM nope")
    assert failure.value.code == 60  # type: ignore[attr-defined]
    client.close()


def test_clickhouse_connect_admin_command_writes(url: str) -> None:
    client = connect(url, ADMIN)
    client.command("INSERT INTO clicktrail.events (site_id, event_id, event) VALUES ('site_cc', 'e-cc-1', 'x')")
    assert client.query("SELECT event_id FROM events WHERE site_id = 'site_cc'").result_rows == [("e-cc-1",)]
    client.close()


def test_clickhouse_connect_wrong_password(url: str) -> None:
    with pytest.raises(DatabaseError) as failure:
        connect(url, ("analyst", "nope"))
    assert failure.value.code == 516  # type: ignore[attr-defined]
