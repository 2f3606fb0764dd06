"""What hostile clients send, on both ports: never a crash (a 5xx of ours or no answer), always a clear refusal.

Requests are written byte for byte on raw sockets where httpx would refuse to send them (invalid UTF-8,
NUL or CR/LF in a header). Also here: the client address behind proxies, throttled key and password
guessing, site rate limits spent only on accepted events, CORS per site, and UTF-8 User-Agents.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
import pytest

from gateway import config
from tests.conftest import GatewayProcess, make_event

ADMIN_BASIC = b"Authorization: Basic YWRtaW46YWRtaW4tcHc=\r\n"  # admin:admin-pw

# Values spliced into a JSON body where a string (or a key) stands.
JSON_VALUES: dict[str, bytes] = {
    "invalid UTF-8": b'"a\xff\xfeb"',
    "escaped NUL": b'"a\\u0000b"',
    "raw NUL": b'"a\x00b"',
    "escaped CR/LF": b'"a\\r\\nX-Evil: 1"',
    "raw CR/LF": b'"a\r\nX-Evil: 1"',
    "huge integer": b"99999999999999999999999",
    "huge float": b"1e999",
    "non-ASCII digits": '"١٢٣"'.encode(),
    "lone high surrogate": b'"\\ud800"',
    "lone low surrogate": b'"x\\udc00"',
    "deep arrays": b"[" * 3000 + b"]" * 3000,
    "deep objects": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "long string": b'"' + b"x" * 40_000 + b'"',
}
# Values put raw into headers and percent-encoded into URLs (within the gateway's URL and header limits).
TEXT_VALUES: dict[str, bytes] = {
    "invalid UTF-8": b"a\xff\xfeb",
    "NUL": b"a\x00b",
    "CR/LF": b"a\r\nX-Evil: 1",
    "huge integer": b"99999999999999999999999",
    "non-ASCII digits": "١٢٣".encode(),
    "superscript digit": "²".encode(),
    "UTF-8 of a surrogate": b"\xed\xa0\x80",
    "CJK": "微信".encode(),
    "long": b"x" * 6000,
}
EVENT_FIELDS = ["event", "event_id", "anonymous_id", "user_id", "session_id", "ts", "channel", "utm_source",
                "utm_medium", "utm_campaign", "utm_content", "utm_term", "sharer", "url", "referrer", "title",
                "props", "props value", "props key"]
PIXEL_PARAMS = ["k", "event", "event_id", "user_id", "ts", "ch", "url", "p.k", "p.<name>", "props"]
INGEST_HEADERS = ["Origin", "User-Agent", "Referer", "X-Write-Key", "Authorization", "Content-Type",
                  "Content-Encoding", "X-Forwarded-For"]
CLICKHOUSE_PLACES = ["query_id", "default_format", "database", "user", "password", "param_p", "query",
                     "X-ClickHouse-Query-Id", "X-ClickHouse-Format", "X-ClickHouse-Database", "X-ClickHouse-User",
                     "X-ClickHouse-Key", "Authorization", "Content-Encoding", "X-Forwarded-For", "body"]


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def exchange(port: int, head: bytes, body: bytes = b"") -> Answer:
    """One request, written as given, on its own connection; the answer as read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data, f"no answer to {head[:120]!r}"
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return Answer(int(status_line.split()[1]), headers, rest)


def assert_refused_or_served(answer: Answer, what: object) -> None:
    assert answer.status < 500, (what, answer)
    assert answer.body or answer.status == 204, (what, answer)  # a refusal says why
    assert "x-evil" not in answer.headers, (what, answer.headers)


def assert_clickhouse_answer(answer: Answer, what: object) -> None:
    """Below 500, or one of the 5xx ClickHouse itself answers for that error code (READONLY is a 500 there):
    a deliberate answer with its code, never a crash of ours. A query may well answer nothing; a refusal
    says why (the HTTP parser's own 400, for a NUL in a header, too)."""
    if answer.status >= 500:
        assert "x-clickhouse-exception-code" in answer.headers, (what, answer)
        assert answer.body.startswith(b"Code: "), (what, answer)
    assert answer.body or answer.status < 400, (what, answer)
    assert "x-evil" not in answer.headers, (what, answer.headers)


def assert_no_traceback(gw: GatewayProcess) -> None:
    log = gw.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:4000]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway behind one proxy (so X-Forwarded-For is read), never throttling this file's many failed keys."""
    gw = GatewayProcess(tmp_path_factory.mktemp("hostile"), trusted_proxy_hops=1, auth_failure_limit=1_000_000,
                        fsync="off", anonymize_ip=False).start()
    yield gw
    gw.stop()


def stored(gw: GatewayProcess, event_id: str) -> dict[str, Any]:
    gw.wait_for(f"SELECT count() FROM clicktrail.events WHERE event_id = '{event_id}'", 1)
    return gw.rows(f"SELECT * FROM clicktrail.events WHERE event_id = '{event_id}'")[0]


# -- every endpoint and field, every hostile value ---------------------------------------------------------


def _hostile_event(field: str, value: bytes) -> bytes:
    event = make_event(props={"k": 1})
    if field == "props value":
        event["props"] = {"k": "HOSTILE"}
    elif field == "props key":
        event["props"] = {"HOSTILE": 1}
    else:
        event[field] = "HOSTILE"
    return orjson.dumps(event).replace(b'"HOSTILE"', value)


@pytest.mark.parametrize("field", [*EVENT_FIELDS, "key", "sent_at"])
def test_hostile_json_values_get_a_clear_answer(hostile: GatewayProcess, field: str) -> None:
    for name, value in JSON_VALUES.items():
        if field in ("key", "sent_at"):
            batch = orjson.dumps({"batch": [make_event()], field: "HOSTILE"}).replace(b'"HOSTILE"', value)
            single = orjson.dumps({**make_event(), field: "HOSTILE"}).replace(b'"HOSTILE"', value)
        else:
            batch = b'{"batch":[' + orjson.dumps(make_event()) + b"," + _hostile_event(field, value) + b"]}"
            single = _hostile_event(field, value)
        for path, body in (("/v1/batch", batch), ("/v1/event", single)):
            answer = exchange(hostile.port, b"POST %s HTTP/1.1\r\nHost: x\r\nX-Write-Key: wk_b\r\n" % path.encode(),
                              body)
            assert_refused_or_served(answer, (path, field, name))
            assert answer.headers["content-type"] == "application/json"
            orjson.loads(answer.body)
    assert_no_traceback(hostile)


@pytest.mark.parametrize("param", PIXEL_PARAMS)
def test_hostile_pixel_parameters_get_a_clear_answer(hostile: GatewayProcess, param: str) -> None:
    for name, value in TEXT_VALUES.items():
        params = {b"k": b"wk_b", b"event": b"email_open", b"user_id": b"u-hostile"}
        if param == "p.<name>":
            params[b"p." + value] = b"1"
        else:
            params[param.encode()] = value
        query = urllib.parse.urlencode(params).encode()
        answer = exchange(hostile.port, b"GET /v1/pixel.gif?" + query + b" HTTP/1.1\r\nHost: x\r\n")
        assert_refused_or_served(answer, (param, name))
    assert_no_traceback(hostile)


@pytest.mark.parametrize("header", INGEST_HEADERS)
def test_hostile_ingest_headers_get_a_clear_answer(hostile: GatewayProcess, header: str) -> None:
    for name, value in TEXT_VALUES.items():
        line = header.encode() + b": " + (b"Bearer " + value if header == "Authorization" else value) + b"\r\n"
        key = b"" if header in ("X-Write-Key", "Authorization") else b"X-Write-Key: wk_b\r\n"
        requests = [
            (b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n" + key + line, orjson.dumps({"batch": [make_event()]})),
            (b"POST /v1/event HTTP/1.1\r\nHost: x\r\n" + key + line, orjson.dumps(make_event())),
            (b"GET /v1/pixel.gif?event=x&user_id=u&k=wk_b HTTP/1.1\r\nHost: x\r\n" + line, b""),
            (b"OPTIONS /v1/batch HTTP/1.1\r\nHost: x\r\nAccess-Control-Request-Method: POST\r\n" + line, b""),
        ]
        for head, body in requests:
            assert_refused_or_served(exchange(hostile.port, head, body), (header, name, head[:20]))
    assert_no_traceback(hostile)


@pytest.mark.parametrize("place", CLICKHOUSE_PLACES)
def test_hostile_values_on_the_clickhouse_port_get_clickhouse_answers(hostile: GatewayProcess, place: str) -> None:
    for name, value in TEXT_VALUES.items():
        params: dict[str, bytes] = {"query": b"SELECT {p:String}" if place == "param_p" else b"SELECT 1"}
        auth, lines, body = ADMIN_BASIC, b"", b""
        if place in ("user", "password"):
            auth = b""
            params |= {"user": b"admin", "password": b"admin-pw", place: value}
        elif place in ("X-ClickHouse-User", "X-ClickHouse-Key"):
            auth = b""
            lines = {"X-ClickHouse-User": b"X-ClickHouse-Key: admin-pw\r\n",
                     "X-ClickHouse-Key": b"X-ClickHouse-User: admin\r\n"}[place]
            lines += place.encode() + b": " + value + b"\r\n"
        elif place == "Authorization":
            auth = b"Authorization: Basic " + value + b"\r\n"
        elif place == "body":
            body = b"SELECT '" + value + b"'"
            del params["query"]
        elif place[0].isupper():
            lines = place.encode() + b": " + value + b"\r\n"
        else:
            params[place] = value
        target = b"/?" + urllib.parse.urlencode(params).encode()
        answer = exchange(hostile.clickhouse_port, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + auth + lines, body)
        assert_clickhouse_answer(answer, (place, name))
    assert_no_traceback(hostile)


# -- the three crashes there were -----------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "error"), [
    ("event_id", b'"e\xff"', "event_id: invalid JSON: invalid UTF-8"),
    ("url", b'"e\xff"', "url: invalid JSON: invalid UTF-8"),
    ("props value", b'"e\xff"', "props.k: invalid JSON: invalid UTF-8"),
    ("props key", b'"e\xff"', "props: invalid JSON: invalid UTF-8"),
    # A browser's title.slice(0, 1000) through an emoji: msgspec refused the whole batch for it.
    ("title", b'"Webinar \\ud83d"', "title: invalid JSON: unpaired surrogate"),
])
def test_a_batch_stores_the_valid_event_beside_one_with_text_that_is_not_unicode(
        hostile: GatewayProcess, field: str, value: bytes, error: str) -> None:
    valid = make_event(props={"n": 1e5, "text": "微信"})
    bad = _hostile_event(field, value)
    response = hostile.http.post("/v1/batch", content=b'{"batch":[' + orjson.dumps(valid) + b"," + bad + b"]}",
                                 headers={"X-Write-Key": "wk_b"})
    assert response.status_code == 200, response.text
    rejected = response.json()["rejected"]
    assert response.json()["accepted"] == 1
    assert [(r["index"], r["error"]) for r in rejected] == [(1, error)]
    # Echoed where msgspec can read it: not beside an unpaired surrogate, which it refuses even to skip.
    echoed = None if field in ("event_id", "title") else bad.split(b'"event_id":"')[1].split(b'"')[0].decode()
    assert rejected[0]["event_id"] == echoed
    row = stored(hostile, valid["event_id"])
    assert (row["site_id"], orjson.loads(row["props"])) == ("site_b", valid["props"])


@pytest.mark.parametrize(("body", "error"), [
    (b'{"event":"x","event_id":"e\xff","anonymous_id":"a"}', "event_id: invalid JSON: invalid UTF-8"),
    (b'{"event":"x","event_id":"e","anonymous_id":"a","title":"\\ud800"}', "title: invalid JSON: unpaired surrogate"),
    (b'{"event":"x","event_id":"e","anonymous_id":"a","props":{"a":[1,"\\udc00"]}}',
     "props.a[1]: invalid JSON: unpaired surrogate"),
    (b'{"event":"x","event_id":"e","anonymous_id":"a","key":"\xff"}', "key: invalid JSON: invalid UTF-8"),
    (b'{"event":"x","event_id":"e","anonymous_id":"a","props":' + b"[" * 3000 + b"]" * 3000 + b"}",
     "body: invalid JSON: nested too deeply"),
])
def test_single_event_with_text_that_is_not_unicode_is_a_400_naming_the_field(hostile: GatewayProcess, body: bytes,
                                                                                 error: str) -> None:
    response = hostile.http.post("/v1/event", content=body, headers={"X-Write-Key": "wk_b"})
    assert (response.status_code, response.json()) == (400, {"error": error})


@pytest.mark.parametrize(("envelope", "error"), [
    (b'{"batch":[{}],"key":"wk_b\xff"}', "key: invalid JSON: invalid UTF-8"),
    (b'{"batch":[{}],"sent_at":"\\ud800"}', "sent_at: invalid JSON: unpaired surrogate"),
])
def test_envelope_with_text_that_is_not_unicode_is_a_400_naming_the_field(hostile: GatewayProcess, envelope: bytes,
                                                                           error: str) -> None:
    response = hostile.http.post("/v1/batch", content=envelope, headers={"X-Write-Key": "wk_b"})
    assert (response.status_code, response.json()) == (400, {"error": error})


@pytest.mark.parametrize(("ts", "error"), [
    ("99999999999999999999999", "ts: out of range (2000-01-01 to 2100-01-01)"),
    ("١٢٣", "ts: not a valid time (milliseconds since the epoch or RFC 3339)"),
    ("²", "ts: not a valid time (milliseconds since the epoch or RFC 3339)"),
])
def test_pixel_ts_beyond_64_bits_or_not_ascii_digits_is_a_400(hostile: GatewayProcess, ts: str, error: str) -> None:
    response = hostile.http.get("/v1/pixel.gif", params={"k": "wk_b", "event": "email_open", "user_id": "u", "ts": ts})
    assert (response.status_code, response.json()) == (400, {"error": error})


def test_pixel_ts_digits_are_judged_as_the_same_number_in_a_body(hostile: GatewayProcess) -> None:
    for digits in ("1" + "0" * 30, "9" * 5000):  # int() refuses more than 4,300 digits
        pixel = hostile.http.get("/v1/pixel.gif", params={"k": "wk_b", "event": "x", "user_id": "u", "ts": digits})
        body = b'{"event":"x","event_id":"e","user_id":"u","ts":%s}' % digits.encode()
        single = hostile.http.post("/v1/event", content=body, headers={"X-Write-Key": "wk_b"})
        assert (pixel.status_code, pixel.json()) == (single.status_code, single.json()) == (400, pixel.json())


def test_pixel_ts_with_leading_zeros_is_the_number_it_spells(hostile: GatewayProcess) -> None:
    event_id = "px-" + str(time.time_ns())
    ts = int(time.time() * 1000) - 60_000
    response = hostile.http.get("/v1/pixel.gif", params={"k": "wk_b", "event": "email_open", "user_id": "u",
                                                         "event_id": event_id, "ts": f"000{ts}"})
    assert response.status_code == 200, response.text
    seconds, ms = divmod(ts, 1000)
    assert stored(hostile, event_id)["ts"] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}"


def test_pixel_props_must_be_a_json_object(hostile: GatewayProcess) -> None:
    for props in ('[["a", "b"]]', '"ab"', "[", "[" * 2000):
        response = hostile.http.get("/v1/pixel.gif", params={"k": "wk_b", "event": "x", "user_id": "u",
                                                             "props": props})
        assert (response.status_code, response.json()) == (400, {"error": "props: not a JSON object"})


@pytest.mark.parametrize("query_id", ["微信", "é", "a\r\nX-Evil: 1", "a\x00b", "tab\there"])
def test_a_query_id_unfit_for_a_header_is_refused(hostile: GatewayProcess, query_id: str) -> None:
    url = f"http://127.0.0.1:{hostile.clickhouse_port}/"
    response = httpx.get(url, params={"query": "SELECT 1", "query_id": query_id}, auth=("admin", "admin-pw"))
    assert response.status_code == 400, response.text
    assert response.headers["X-ClickHouse-Exception-Code"] == "36"
    assert response.text.startswith("Code: 36. DB::Exception: The query_id may contain only printable ASCII")
    assert len(response.headers["X-ClickHouse-Query-Id"]) == 36  # one of ours instead
    assert "X-Evil" not in response.headers
    # Before authentication the client's query_id is not even read: the answer is about the credentials.
    response = httpx.get(url, params={"query": "SELECT 1", "query_id": query_id}, auth=("admin", "wrong"))
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    assert_no_traceback(hostile)


def test_query_id_header_and_format_are_checked_before_they_are_echoed(hostile: GatewayProcess) -> None:
    answer = exchange(hostile.clickhouse_port, b"POST / HTTP/1.1\r\nHost: x\r\n" + ADMIN_BASIC
                      + "X-ClickHouse-Query-Id: 微信\r\n".encode(), b"SELECT 1")
    assert (answer.status, answer.headers["x-clickhouse-exception-code"]) == (400, "36")
    assert httpx.get(f"http://127.0.0.1:{hostile.clickhouse_port}/", auth=("admin", "admin-pw"),
                     params={"query": "SELECT 1", "query_id": "q-ok_1"}).headers["X-ClickHouse-Query-Id"] == "q-ok_1"
    # DDL writes no output, so ClickHouse never looks the format up; the name would go back in a header as it is.
    response = httpx.post(f"http://127.0.0.1:{hostile.clickhouse_port}/", auth=("admin", "admin-pw"),
                          params={"default_format": "微信"},
                          content=b"CREATE TABLE IF NOT EXISTS default.hostile (a UInt8) ENGINE = Memory")
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (404, "73")
    assert "Unknown format 微信. (UNKNOWN_FORMAT)" in response.text
    answer = exchange(hostile.clickhouse_port, b"POST / HTTP/1.1\r\nHost: x\r\n"
                      + "Authorization: Basic 微信\r\n".encode(), b"SELECT 1")
    assert (answer.status, answer.headers["x-clickhouse-exception-code"]) == (403, "516")
    assert b"malformed Basic credentials" in answer.body


# -- the client address behind proxies -----------------------------------------------------------------


def test_forwarded_for_takes_the_entry_our_proxy_added_not_the_clients(hostile: GatewayProcess) -> None:
    cases = [
        ([("X-Forwarded-For", "6.6.6.6, 203.0.113.7")], "203.0.113.7"),  # the client wrote 6.6.6.6 itself
        ([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.8")], "203.0.113.8"),  # two lines
        ([("X-Forwarded-For", "203.0.113.9")], "203.0.113.9"),
        ([("X-Forwarded-For", "6.6.6.6, not-an-address")], "127.0.0.1"),  # a proxy gone wrong: the peer
        ([], "127.0.0.1"),
    ]
    for headers, ip in cases:
        event = make_event()
        response = hostile.http.post("/v1/batch", content=orjson.dumps({"batch": [event]}),
                                     headers=[("X-Write-Key", "wk_b"), *headers])
        assert response.status_code == 200, response.text
        assert stored(hostile, event["event_id"])["ip"] == ip, headers


def test_forwarded_for_is_ignored_without_trusted_proxies(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(anonymize_ip=False, fsync="off").start()
    event = make_event()
    assert gw.send([event], key="wk_b", headers={"X-Forwarded-For": "6.6.6.6"}).status_code == 200
    assert stored(gw, event["event_id"])["ip"] == "127.0.0.1"


def test_two_trusted_proxies_take_the_second_entry_from_the_right(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(anonymize_ip=False, fsync="off", trusted_proxy_hops=2).start()
    cases = [("6.6.6.6, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
             ("198.51.100.2", "198.51.100.2")]  # it skipped the outer proxy: the entry is still one of ours
    for forwarded, ip in cases:
        event = make_event()
        assert gw.send([event], key="wk_b", headers={"X-Forwarded-For": forwarded}).status_code == 200
        assert stored(gw, event["event_id"])["ip"] == ip


def test_trust_forwarded_for_in_an_old_config_says_what_to_write(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text('[server]\ntrust_forwarded_for = true\n[[sites]]\nid = "s"\nwrite_key = "k"\n')
    with pytest.raises(config.ConfigError, match="write trusted_proxy_hops = 1"):
        config.load(path)


# -- guessing keys and passwords ------------------------------------------------------------------------

ATTACKER = {"X-Forwarded-For": "198.51.100.66"}
NEIGHBOUR = {"X-Forwarded-For": "198.51.100.77"}


def _guesses(attempt: Callable[[], int], seconds: float) -> tuple[int, int, float]:
    """(answers that checked the key, answers that refused unchecked, seconds) of a burst of attempts."""
    checked = refused = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        status = attempt()
        assert status in (401, 403, 429), status
        checked += status != 429
        refused += status == 429
    return checked, refused, time.monotonic() - started


def test_wrong_keys_are_throttled_per_address(new_gateway: Callable[..., GatewayProcess]) -> None:
    # 10 failures, then one more each second: the window is 10 s so that the steps below take far less.
    gw = new_gateway(trusted_proxy_hops=1, auth_failure_limit=10, auth_failure_window_s=10, fsync="off").start()
    for _ in range(10):
        assert gw.send([make_event()], key="wk_guess", headers=ATTACKER).status_code == 401
    locked = gw.send([make_event()], key="wk_b", headers=ATTACKER)  # the right key, unchecked
    assert locked.status_code == 429
    assert locked.json() == {"error": "key: too many unknown keys from this address; retry later"}
    assert locked.headers["retry-after"] == "1"
    assert gw.send([make_event()], key="wk_b", headers=NEIGHBOUR).status_code == 200

    checked, refused, seconds = _guesses(
        lambda: gw.send([make_event()], key="wk_guess", headers=ATTACKER).status_code, 1.5)
    assert checked / seconds <= 20 and checked <= 3, (checked, refused, seconds)  # against ~3,750/s unthrottled
    assert refused > 10 * checked

    time.sleep(1.1)  # a failure aged out
    assert gw.send([make_event()], key="wk_b", headers=ATTACKER).status_code == 200


def test_wrong_passwords_are_throttled_per_address(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(trusted_proxy_hops=1, auth_failure_limit=10, auth_failure_window_s=10, fsync="off").start()
    url = f"http://127.0.0.1:{gw.clickhouse_port}/"

    def attempt(password: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, content=b"SELECT 1", auth=("analyst", password), headers=headers)

    for _ in range(10):
        assert attempt("guess", ATTACKER).headers["X-ClickHouse-Exception-Code"] == "516"
    locked = attempt("analyst-pw", ATTACKER)
    assert (locked.status_code, locked.headers["X-ClickHouse-Exception-Code"]) == (429, "201")
    assert locked.text.startswith("Code: 201. DB::Exception: Too many failed authentication attempts from this"
                                  " address (the limit is 10 in 10 s); retry in 1 s. (QUOTA_EXCEEDED)")
    assert locked.headers["Retry-After"] == "1"
    assert attempt("analyst-pw", NEIGHBOUR).text == "1\n"

    checked, refused, seconds = _guesses(lambda: attempt("guess", ATTACKER).status_code, 1.5)
    assert checked / seconds <= 20 and checked <= 3, (checked, refused, seconds)
    assert refused > 10 * checked

    time.sleep(1.1)
    assert attempt("analyst-pw", ATTACKER).text == "1\n"


# -- a site's rate limit is spent on accepted events only -----------------------------------------------


def test_refused_and_invalid_events_do_not_spend_the_sites_rate_limit(
        new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(fsync="off").start()  # site "limited": 5 events/s, bursts of 10
    invalid = [make_event("registration", props={}) for _ in range(20)]
    accepted, started = 0, time.monotonic()
    while time.monotonic() - started < 3:
        assert gw.send(invalid, key="wk_limited").status_code == 400
        assert gw.send([make_event()], key="wk_limited", headers={"Origin": "https://evil.example"}).status_code == 403
        response = gw.send([make_event(), *invalid[:5]], key="wk_limited")
        assert response.status_code in (200, 429), response.text
        accepted += response.json().get("accepted", 0)
    share = 10 + 5 * (time.monotonic() - started)
    # Charged for the invalid events too, the valid ones got a small fraction of this.
    assert 0.8 * share <= accepted <= share + 1, (accepted, share)


# -- CORS -------------------------------------------------------------------------------------------------


def test_cors_answers_only_origins_of_the_keys_site_and_never_allows_credentials(hostile: GatewayProcess) -> None:
    def allowed(response: httpx.Response) -> str | None:
        assert "access-control-allow-credentials" not in response.headers
        return response.headers.get("access-control-allow-origin")

    h = hostile
    ok = h.send([make_event()], key="wk_a", headers={"Origin": "https://a.example"})
    assert (ok.status_code, allowed(ok)) == (200, "https://a.example")
    # site_b allows any origin, but site_a's key was used: no CORS answer, the page cannot read the 403.
    other = h.send([make_event()], key="wk_a", headers={"Origin": "https://b.example"})
    assert (other.status_code, allowed(other)) == (403, None)
    anywhere = h.send([make_event()], key="wk_b", headers={"Origin": "https://b.example"})
    assert (anywhere.status_code, allowed(anywhere)) == (200, "*")
    # Before a key is known, a page of any site may read why it was refused.
    unknown = h.send([make_event()], key="wk_nope", headers={"Origin": "https://a.example"})
    assert (unknown.status_code, allowed(unknown)) == (401, "https://a.example")
    preflight = {"Access-Control-Request-Method": "POST"}
    listed = h.http.options("/v1/batch", headers={**preflight, "Origin": "https://a.example"})
    assert (listed.status_code, allowed(listed)) == (204, "https://a.example")
    unlisted = h.http.options("/v1/batch", headers={**preflight, "Origin": "https://c.example"})
    assert (unlisted.status_code, allowed(unlisted)) == (204, "*")  # site_b allows any
    pixel = h.http.get("/v1/pixel.gif", params={"k": "wk_a", "event": "x", "user_id": "u"},
                       headers={"Origin": "https://a.example"})
    assert (pixel.status_code, allowed(pixel)) == (200, "https://a.example")


# -- UTF-8 in stored headers ------------------------------------------------------------------------------

WECHAT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
          " Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN 微信")


def test_a_utf8_user_agent_is_stored_as_sent(hostile: GatewayProcess) -> None:
    cases = [(WECHAT.encode(), WECHAT), (b"Mozilla/5.0 caf\xe9", "Mozilla/5.0 café")]  # not UTF-8: latin-1
    for header, expected in cases:
        event = make_event()
        response = hostile.http.post("/v1/batch", content=orjson.dumps({"batch": [event]}),
                                     headers={"X-Write-Key": "wk_b", "User-Agent": header})
        assert response.status_code == 200, response.text
        assert stored(hostile, event["event_id"])["user_agent"] == expected
