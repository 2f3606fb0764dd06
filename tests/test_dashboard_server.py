"""The dashboard's server side in a real gateway process: its files and security headers on the ClickHouse port, the
login with the [[users]] accounts (and the wrong-password throttle it shares with the ClickHouse interface), and
the session cookie, which runs queries as its user, read-only and within the user's sites, only with the header
X-Clicktrail-Dashboard: 1. Spoken to with httpx as the browser would (cookies kept by the client)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.conftest import GatewayProcess, make_event
from tests.test_clickhouse_http import ADMIN, ANALYST, assert_error

AGENCY_A = ("agency_a", "agency-a-pw")
USERS = f"""
[[users]]
name = "{AGENCY_A[0]}"
password = "{AGENCY_A[1]}"
sites = ["site_a"]
"""
ALL_SITES = ["site_a", "site_b", "site_c", "limited"]  # loadtests/gateway_process.py SITES, in order
DASHBOARD = {"X-Clicktrail-Dashboard": "1"}
SITE_COUNTS = "SELECT site_id, count() AS n FROM clicktrail.events GROUP BY site_id ORDER BY site_id"
OVERVIEW = "SELECT * FROM clicktrail.overview(site = {site:String}, date_from = today() - 1, date_to = today() + 1)"
#: Client addresses for the tests that fail logins on purpose (the gateway trusts one proxy hop, so
#: X-Forwarded-For names the client): each its own throttle, and the other tests' address (the peer's) none.
addresses = (f"10.9.0.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), users=USERS, trusted_proxy_hops=1).start()
    registration = {"props": {"stream_id": "webinar-1"}}
    events = [make_event(), make_event("registration", **registration), make_event("registration", **registration)]
    assert gw.send(events[:2], key="wk_a").status_code == 200
    assert gw.send(events[2:], key="wk_b").status_code == 200
    assert gw.wait_for("SELECT count() FROM clicktrail.events", 3) == 3
    yield gw
    gw.stop()


def client(gw: GatewayProcess, address: str | None = None) -> httpx.Client:
    """A browser on the ClickHouse port: it keeps cookies; ``address``: the client address the gateway sees."""
    headers = {"X-Forwarded-For": address} if address else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{gw.clickhouse_port}", headers=headers, timeout=60)


def login(browser: httpx.Client, user: tuple[str, str]) -> httpx.Response:
    return browser.post("/dashboard/api/login", json={"user": user[0], "password": user[1]})


def query(browser: httpx.Client, sql: str, headers: dict[str, str] | None = None, **params: str) -> httpx.Response:
    return browser.post("/", content=sql.encode(), headers=DASHBOARD if headers is None else headers,
                        params={"default_format": "JSON", **params})


def data(response: httpx.Response) -> list[dict[str, object]]:
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_login_answers_the_user_and_its_sites_and_sets_a_strict_httponly_cookie(gateway: GatewayProcess) -> None:
    for user, sites, readonly in ((AGENCY_A, ["site_a"], True), (ANALYST, ALL_SITES, True), (ADMIN, ALL_SITES, False)):
        with client(gateway) as browser:
            response = login(browser, user)
            assert response.status_code == 200, response.text
            assert response.json() == {"user": user[0], "sites": sites, "readonly": readonly}
            cookie = response.headers["set-cookie"]
            assert cookie.startswith("clicktrail_session=")
            assert {"HttpOnly", "SameSite=strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
            assert len(browser.cookies["clicktrail_session"]) >= 40  # 32 random bytes, base64
            assert response.headers["cache-control"] == "no-store"
            session = browser.get("/dashboard/api/session")
            assert session.status_code == 200 and session.json() == response.json()


def test_a_wrong_password_an_unknown_user_and_a_bad_body_are_refused(gateway: GatewayProcess) -> None:
    with client(gateway, next(addresses)) as browser:
        for user in ((ANALYST[0], "wrong"), ("nobody", ANALYST[1]), (ANALYST[0], "")):
            response = login(browser, user)
            assert response.status_code == 401 and "error" in response.json()
            assert "set-cookie" not in response.headers
        for body in (b"", b"not json", b'["analyst"]', b'{"user": "analyst"}', b'{"user": 1, "password": "x"}',
                     b'{"user": "analyst", "password": "' + b"x" * 20000 + b'"}'):
            response = browser.post("/dashboard/api/login", content=body)
            assert response.status_code == 400 and "error" in response.json(), body[:40]
        assert browser.get("/dashboard/api/session").status_code == 401


def test_wrong_passwords_are_throttled_with_the_clickhouse_interface(gateway: GatewayProcess) -> None:
    """The default limit, 10 wrong passwords a minute per address, counts both doors: past it the right password
    is refused unchecked too, and wrong passwords on the ClickHouse interface use up the dashboard's tries."""
    with client(gateway, next(addresses)) as browser:
        for _ in range(10):
            assert login(browser, (ANALYST[0], "wrong")).status_code == 401
        refused = login(browser, ANALYST)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "error" in refused.json() and "set-cookie" not in refused.headers
        assert_error(browser.post("/", content=b"SELECT 1", auth=ANALYST), 429, 201, "Too many failed")
    with client(gateway, next(addresses)) as browser:
        for _ in range(10):
            assert browser.post("/", content=b"SELECT 1", auth=(ANALYST[0], "wrong")).status_code == 403
        assert login(browser, ANALYST).status_code == 429
    with client(gateway, next(addresses)) as browser:  # another address is unaffected
        assert login(browser, ANALYST).status_code == 200


def test_the_cookie_authenticates_only_with_the_dashboard_header(gateway: GatewayProcess) -> None:
    with client(gateway, next(addresses)) as browser:
        assert login(browser, ANALYST).status_code == 200
        # Without the header the cookie is no credential: the request is ClickHouse's user `default`, unknown here.
        assert_error(query(browser, "SELECT 1", headers={}), 403, 516, "default: Authentication failed")
        assert_error(query(browser, "SELECT 1", headers={"X-Clicktrail-Dashboard": "yes"}), 403, 516, "default")
        answer = query(browser, "SELECT {site:String} AS site", param_site="site_a")
        assert data(answer) == [{"site": "site_a"}]
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-frame-options"] == "DENY"
    with client(gateway) as stranger:  # no session: the header alone is nothing
        assert_error(query(stranger, "SELECT 1"), 403, 516, "No dashboard session")
        stranger.cookies.set("clicktrail_session", "made-up")
        assert_error(query(stranger, "SELECT 1"), 403, 516, "No dashboard session")


def test_a_site_limited_user_reads_only_its_sites_through_the_dashboard(gateway: GatewayProcess) -> None:
    with client(gateway) as browser:
        assert login(browser, AGENCY_A).status_code == 200
        assert data(query(browser, SITE_COUNTS)) == [{"site_id": "site_a", "n": 2}]
        assert data(query(browser, "SELECT count() AS n FROM clicktrail.events WHERE site_id = {site:String}",
                          param_site="site_b")) == [{"n": 0}]
        # The user's own refusals hold too: dictionaries read past the site filters.
        assert_error(query(browser, "SELECT dictGet('clicktrail.persons', 'person_id', ('site_b', 'x'))"),
                     403, 497, "agency_a: Not enough privileges")
        # The analytics views, with their parameters bound as the pages bind them: another site's rows are not there.
        for site, registrations in (("site_a", 1), ("site_b", 0)):
            assert data(query(browser, OVERVIEW, param_site=site))[0]["registrations"] == registrations
    with client(gateway) as browser:
        assert login(browser, ANALYST).status_code == 200
        assert data(query(browser, SITE_COUNTS)) == [{"site_id": "site_a", "n": 2}, {"site_id": "site_b", "n": 1}]
        assert data(query(browser, OVERVIEW, param_site="site_b"))[0]["registrations"] == 1


def test_an_admin_is_read_only_through_the_dashboard(gateway: GatewayProcess) -> None:
    insert = "INSERT INTO clicktrail.channel_costs (site_id, channel, day, cost) VALUES ('site_a', 'x', today(), 1)"
    with client(gateway) as browser:
        assert login(browser, ADMIN).status_code == 200
        assert data(query(browser, SITE_COUNTS))[0] == {"site_id": "site_a", "n": 2}
        assert_error(query(browser, insert), 500, 164, "admin: Cannot execute query in readonly mode")
        assert_error(query(browser, "CREATE TABLE clicktrail.t (x UInt8) ENGINE = Memory"), 500, 164, "readonly")
        assert_error(query(browser, "SET readonly = 0"), 500, 164, "readonly")
        # What reaches past the tables is refused as for read-only users, though the admin may do it with a password.
        assert_error(query(browser, "SELECT * FROM file('/etc/hostname', 'LineAsString')"), 403, 497,
                     "the table function file()")
        assert_error(query(browser, "SELECT 1", session_id="s1"), 400, 36, "session_id")
    assert gateway.scalar("SELECT count() FROM clicktrail.channel_costs WHERE channel = 'x'") == 0
    assert gateway.query("SELECT 1", *ADMIN).strip() == "1"


def test_logout_ends_the_session(gateway: GatewayProcess) -> None:
    with client(gateway) as browser:
        assert login(browser, ANALYST).status_code == 200
        token = browser.cookies["clicktrail_session"]
        assert data(query(browser, "SELECT 1 AS one")) == [{"one": 1}]
        response = browser.post("/dashboard/api/logout")
        assert response.status_code == 204
        assert "clicktrail_session=" in response.headers["set-cookie"] and "Max-Age=0" in response.headers["set-cookie"]
        assert browser.get("/dashboard/api/session").status_code == 401
    with client(gateway) as replay:  # the old cookie, sent again, is no session
        replay.cookies.set("clicktrail_session", token)
        assert_error(query(replay, "SELECT 1"), 403, 516, "No dashboard session")
        assert replay.get("/dashboard/api/session").status_code == 401


def test_the_pages_are_served_with_security_headers(gateway: GatewayProcess) -> None:
    with client(gateway) as browser:
        redirect = browser.get("/dashboard")
        assert redirect.status_code == 307 and redirect.headers["location"].endswith("/dashboard/")
        page = browser.get("/dashboard/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self';")
        assert "script-src" not in page.headers["content-security-policy"]  # scripts: 'self' only
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        assert page.text == browser.get("/dashboard/index.html").text
        for script in ("app.js", "app.css"):
            if f"{script}" in page.text:
                assert browser.get(f"/dashboard/{script}").status_code == 200
        assert browser.get("/dashboard/no-such-file.js").status_code == 404
        assert browser.get("/dashboard/../../config.py").status_code == 404
        # The pages are the gateway's own: the ingest port (the internet's) has no dashboard.
        assert httpx.get(f"{gateway.base}/dashboard/").status_code == 404


def test_the_interface_still_answers_without_the_dashboard(gateway: GatewayProcess) -> None:
    """Password requests are untouched (no dashboard headers; an admin writes), and so is a password request that
    carries a dashboard cookie without the header."""
    insert = "INSERT INTO clicktrail.channel_costs (site_id, channel, day, cost) VALUES ('site_c', 'y', today(), 2)"
    with client(gateway) as browser:
        assert login(browser, ANALYST).status_code == 200
        response = browser.post("/", content=insert.encode(), auth=ADMIN)
        assert response.status_code == 200 and "cache-control" not in response.headers
        assert gateway.scalar("SELECT count() FROM clicktrail.channel_costs WHERE site_id = 'site_c'") == 1
        assert orjson.loads(browser.get("/dashboard/api/session").text)["user"] == ANALYST[0]


def test_the_demo_page_links_to_the_dashboard(gateway: GatewayProcess) -> None:
    """The demo page (ingest port) gets the ClickHouse port written in, and builds the link on the host it came from."""
    page = gateway.http.get("/").text
    assert f"var dashboardPort = '{gateway.clickhouse_port}';" in page and "{{" not in page
    assert "location.hostname + ':' + dashboardPort + '/dashboard/'" in page
