"""The ingest API over real HTTP: responses, error classes, keys, CORS, the pixel and enrichment."""

from __future__ import annotations

import gzip
import time
import uuid

import orjson

from tests.conftest import GatewayProcess, make_event

CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.0.0 Mobile Safari/537.36")


def stored(gw: GatewayProcess, event_ids: list[str], expect: int | None = None) -> list[dict]:
    """The rows of these events, once ``expect`` of them (default: all) have loaded."""
    ids = ",".join(f"'{i}'" for i in event_ids)
    gw.wait_for(f"SELECT count() FROM clicktrail.events WHERE event_id IN ({ids})",
                len(event_ids) if expect is None else expect)
    return gw.rows(f"SELECT * FROM clicktrail.events WHERE event_id IN ({ids}) ORDER BY ts")


def test_mixed_batch_stores_the_valid_and_reports_the_invalid(gateway: GatewayProcess) -> None:
    good = [make_event(), make_event("registration", props={"stream_id": "w1"}), make_event("cta_click")]
    bad_props = make_event("registration", props={})
    no_id = {"event": "page_view", "event_id": "x-" + uuid.uuid4().hex}
    response = gateway.send([good[0], bad_props, good[1], no_id, good[2]])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 3,
        "rejected": [
            {"index": 1, "event_id": bad_props["event_id"], "error": "props.stream_id: required"},
            {"index": 3, "event_id": no_id["event_id"], "error": "anonymous_id: anonymous_id or user_id is required"},
        ],
    }
    gateway.send([make_event()])  # a later segment: once it is loaded, so is the batch before it
    rows = stored(gateway, [e["event_id"] for e in [*good, bad_props, no_id]], expect=3)
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in good)
    assert {r["site_id"] for r in rows} == {"site_a"}


def test_a_batch_with_no_valid_event_is_a_400_with_the_reasons(gateway: GatewayProcess) -> None:
    response = gateway.send([make_event("live_heartbeat", props={"stream_id": "s"})])
    assert response.status_code == 400
    assert response.json()["accepted"] == 0
    assert response.json()["rejected"][0]["error"] == "props.view_id: required"


def test_unreadable_bodies_say_what_and_where(gateway: GatewayProcess) -> None:
    cases = [
        (b'{"batch": [', "body: invalid JSON"),
        (b'{"batch": {}}', "batch: expected array"),
        (b"[]", "body: expected object"),
        (orjson.dumps({"batch": [make_event()] * 501}), "batch: more than 500 events"),
    ]
    for body, error in cases:
        response = gateway.http.post("/v1/batch", content=body, headers={"X-Write-Key": "wk_a"})
        assert response.status_code == 400, (body[:40], response.text)
        assert response.json()["error"].startswith(error), response.text


def test_keys_are_read_from_header_bearer_body_and_query(gateway: GatewayProcess) -> None:
    events = [make_event() for _ in range(4)]
    h = gateway.http
    assert h.post("/v1/batch", json={"batch": [events[0]]}, headers={"X-Write-Key": "wk_b"}).status_code == 200
    assert h.post("/v1/batch", json={"batch": [events[1]]}, headers={"Authorization": "Bearer wk_b"}).status_code == 200
    assert h.post("/v1/batch", json={"batch": [events[2]], "key": "wk_b"}).status_code == 200
    assert h.post("/v1/batch?k=wk_b", json={"batch": [events[3]]}).status_code == 200
    rows = stored(gateway, [e["event_id"] for e in events])
    assert [r["site_id"] for r in rows] == ["site_b"] * 4


def test_missing_and_unknown_keys_are_401(gateway: GatewayProcess) -> None:
    response = gateway.http.post("/v1/batch", json={"batch": [make_event()]})
    assert response.status_code == 401
    assert response.json()["error"].startswith("key: missing")
    response = gateway.send([make_event()], key="wk_nope")
    assert response.status_code == 401
    assert response.json() == {"error": "key: unknown write key"}


def test_origins_outside_the_sites_list_are_403(gateway: GatewayProcess) -> None:
    response = gateway.send([make_event()], headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert "https://evil.example" in response.json()["error"]
    ok = gateway.send([make_event()], headers={"Origin": "https://a.example"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://a.example"
    assert ok.headers["access-control-expose-headers"] == "Retry-After"


def test_cors_preflight(gateway: GatewayProcess) -> None:
    headers = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type, x-write-key"}
    response = gateway.http.options("/v1/batch", headers=headers)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://a.example"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "x-write-key" in response.headers["access-control-allow-headers"].lower()
    # site_b allows any origin, so a preflight from anywhere is answered; the POST is then judged per site.
    assert gateway.http.options("/v1/event", headers={**headers, "Origin": "https://b.example"}).status_code == 204


def test_too_large_bodies_and_gzip_bombs_are_413(gateway: GatewayProcess) -> None:
    big = orjson.dumps({"batch": [make_event(props={"pad": "x" * 30000}) for _ in range(20)]})
    assert len(big) > 512 * 1024
    response = gateway.http.post("/v1/batch", content=big, headers={"X-Write-Key": "wk_a"})
    assert response.status_code == 413
    bomb = gzip.compress(b'{"batch": [' + b" " * (20 * 1024 * 1024) + b"]}")
    response = gateway.http.post("/v1/batch", content=bomb,
                                 headers={"X-Write-Key": "wk_a", "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "inflates" in response.json()["error"]
    huge_event = make_event(props={"pad": "x" * 33000})
    response = gateway.http.post("/v1/event", json=huge_event, headers={"X-Write-Key": "wk_a"})
    assert response.status_code == 413


def test_unsupported_content_type_and_encoding_are_415(gateway: GatewayProcess) -> None:
    response = gateway.http.post("/v1/batch", content=b"<x/>",
                                 headers={"X-Write-Key": "wk_a", "Content-Type": "application/xml"})
    assert response.status_code == 415
    assert response.json()["error"].startswith("content-type: application/xml")
    response = gateway.http.post("/v1/batch", content=b"{}", headers={"X-Write-Key": "wk_a", "Content-Encoding": "br"})
    assert response.status_code == 415


def test_sendbeacon_text_plain_and_gzip_bodies(gateway: GatewayProcess) -> None:
    beacon, zipped = make_event("page_leave", props={"engaged_ms": 1200, "scroll_pct": 80}), make_event()
    response = gateway.http.post("/v1/batch?k=wk_b", content=orjson.dumps({"batch": [beacon]}),
                                 headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert response.status_code == 200, response.text
    response = gateway.http.post("/v1/batch", content=gzip.compress(orjson.dumps({"batch": [zipped]})),
                                 headers={"X-Write-Key": "wk_b", "Content-Encoding": "gzip",
                                          "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    rows = stored(gateway, [beacon["event_id"], zipped["event_id"]])
    assert orjson.loads(next(r for r in rows if r["event"] == "page_leave")["props"]) == beacon["props"]


def test_a_gzip_body_of_several_members_is_read_whole(gateway: GatewayProcess) -> None:
    """Concatenated gzip members are one gzip body (RFC 1952): every member's events count, none is dropped; what
    is not gzip after the end is refused, not ignored; and the inflation limit holds for the members together."""
    events = [make_event() for _ in range(3)]
    body = orjson.dumps({"batch": events})
    headers = {"X-Write-Key": "wk_b", "Content-Encoding": "gzip", "Content-Type": "application/json"}
    members = b"".join(gzip.compress(body[i:i + 40]) for i in range(0, len(body), 40))
    response = gateway.http.post("/v1/batch", content=members, headers=headers)
    assert response.status_code == 200 and response.json()["accepted"] == 3, response.text
    assert len(stored(gateway, [e["event_id"] for e in events])) == 3
    junk = gateway.http.post("/v1/batch", content=gzip.compress(body) + b"junk", headers=headers)
    assert (junk.status_code, junk.json()) == (400, {"error": "body: data after the end of the gzip stream"})
    half = b" " * (3 * 1024 * 1024)
    bomb = gzip.compress(b'{"batch": [' + half) + gzip.compress(half + b"]}")
    assert gateway.http.post("/v1/batch", content=bomb, headers=headers).status_code == 413


def test_rate_limited_site_gets_429_with_retry_after(gateway: GatewayProcess) -> None:
    # 5 events/s with a 10-event burst: a 30-event batch passes on a full bucket and leaves it 20 in debt.
    assert gateway.send([make_event() for _ in range(30)], key="wk_limited").status_code == 200
    response = gateway.send([make_event()], key="wk_limited")
    assert response.status_code == 429
    assert 3 <= int(response.headers["retry-after"]) <= 5
    assert "rate limit" in response.json()["error"]


def test_single_event_endpoint(gateway: GatewayProcess) -> None:
    event = make_event("download", props={"file_url": "https://a.example/wp.pdf"})
    response = gateway.http.post("/v1/event", json={**event, "key": "wk_a"})
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "rejected": []}
    bad = gateway.http.post("/v1/event", json=make_event("download", props={}), headers={"X-Write-Key": "wk_a"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "props.file_url: required"}
    assert stored(gateway, [event["event_id"]])[0]["event"] == "download"


def test_pixel_stores_the_event_and_returns_a_gif(gateway: GatewayProcess) -> None:
    uid = "u-" + uuid.uuid4().hex
    response = gateway.http.get("/v1/pixel.gif", params={"k": "wk_b", "event": "email_open", "user_id": uid,
                                                         "ch": "edm_nov", "p.campaign": "nov-webinar"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a") and len(response.content) == 43
    assert "no-store" in response.headers["cache-control"]
    gateway.wait_for(f"SELECT count() FROM clicktrail.events WHERE user_id = '{uid}'", 1)
    row = gateway.rows(f"SELECT * FROM clicktrail.events WHERE user_id = '{uid}'")[0]
    assert (row["event"], row["channel"], row["site_id"]) == ("email_open", "edm_nov", "site_b")
    assert orjson.loads(row["props"]) == {"campaign": "nov-webinar"}
    missing = gateway.http.get("/v1/pixel.gif", params={"k": "wk_b", "event": "email_open"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "anonymous_id: anonymous_id or user_id is required"


def test_a_head_of_the_pixel_is_answered_and_stores_nothing(gateway: GatewayProcess) -> None:
    """Mail scanners and link checkers send HEAD: an answer as for GET, but no event (nobody opened the mail)."""
    checked, opened = "u-" + uuid.uuid4().hex, "u-" + uuid.uuid4().hex
    head = gateway.http.head("/v1/pixel.gif", params={"k": "wk_b", "event": "email_open", "user_id": checked})
    assert head.status_code == 200 and head.headers["content-type"] == "image/gif"
    assert gateway.http.head("/v1/pixel.gif", params={"k": "wk_b", "event": "email_open"}).status_code == 400
    # A GET sent after the HEAD is loaded, so the HEAD's event would be by now too.
    gateway.http.get("/v1/pixel.gif", params={"k": "wk_b", "event": "email_open", "user_id": opened})
    gateway.wait_for(f"SELECT count() FROM clicktrail.events WHERE user_id = '{opened}'", 1)
    assert gateway.rows(f"SELECT count() AS n FROM clicktrail.events WHERE user_id = '{checked}'") == [{"n": 0}]


def test_enrichment(gateway: GatewayProcess) -> None:
    now = int(time.time() * 1000)
    landing = make_event(url="https://a.example/webinar/2026?ch=wx_group_7&utm_source=wechat&sharer=emp_42&x=1",
                         referrer="https://mp.weixin.qq.com/s/abc")
    own_channel = make_event(url="https://a.example/?ch=from_url", channel="from_event")
    # The client's clock runs an hour behind: its ts and sent_at are both off by an hour.
    skewed = make_event(ts=now - 3_600_000 - 5_000)
    response = gateway.http.post("/v1/batch", content=orjson.dumps({"batch": [landing, own_channel, skewed],
                                                                       "sent_at": now - 3_600_000}),
                                 headers={"X-Write-Key": "wk_a", "User-Agent": CHROME_ANDROID})
    assert response.status_code == 200
    rows = {r["event_id"]: r for r in stored(gateway, [landing["event_id"], own_channel["event_id"],
                                                        skewed["event_id"]])}
    r = rows[landing["event_id"]]
    assert (r["channel"], r["utm_source"], r["sharer"]) == ("wx_group_7", "wechat", "emp_42")
    assert (r["url_host"], r["url_path"]) == ("a.example", "/webinar/2026")
    assert r["url_query"] == "ch=wx_group_7&utm_source=wechat&sharer=emp_42&x=1"
    assert r["referrer_host"] == "mp.weixin.qq.com"
    assert (r["browser"], r["os"], r["device_type"], r["is_bot"]) == ("Chrome Mobile", "Android", "mobile", False)
    assert r["ip"] == "127.0.0.0"
    assert rows[own_channel["event_id"]]["channel"] == "from_event"
    s = rows[skewed["event_id"]]
    received = _ms(s["received_at"])
    assert abs(received - now) < 60_000
    assert abs(_ms(s["ts"]) - (received - 5_000)) <= 2  # corrected by received_at - sent_at


def test_ts_defaults_to_receive_time(gateway: GatewayProcess) -> None:
    event = make_event()
    gateway.send([event])
    row = stored(gateway, [event["event_id"]])[0]
    assert row["ts"] == row["received_at"]


def test_health_readiness_and_metrics(gateway: GatewayProcess) -> None:
    assert gateway.http.get("/healthz").status_code == 200
    ready = gateway.ops.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"storage": True, "spool": True, "committer": True, "sealer": True, "loader": True}
    gateway.send([make_event()], key="wk_b")
    gateway.send([make_event()], key="wk_nope")
    text = gateway.ops.get("/metrics").text
    assert _metric(text, 'clicktrail_events_accepted_total{site="site_b"}') >= 1
    assert _metric(text, 'clicktrail_events_rejected_total{reason="unauthorized"}') >= 1
    for name in ("clicktrail_spool_bytes", "clicktrail_loader_lag_seconds", "clicktrail_insert_seconds_count",
                 "clicktrail_clickhouse_up", "clicktrail_internal_errors_total", "clicktrail_quarantined_rows_total",
                 "clicktrail_spool_segments"):
        assert f"\n{name} " in text, name


def test_demo_page_carries_the_demo_sites_key(gateway: GatewayProcess) -> None:
    page = gateway.http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '"wk_a"' in page.text


def test_row_struct_matches_the_events_table(gateway: GatewayProcess) -> None:
    from gateway.ingest.rows import Row

    columns = [r["name"] for r in gateway.rows("SELECT name FROM system.columns WHERE database = 'clicktrail' "
                                               "AND table = 'events' ORDER BY position")]
    assert list(Row.__struct_fields__) == columns


def _ms(value: str) -> int:
    """'2026-11-23 10:00:00.123' (UTC) to milliseconds."""
    from datetime import UTC, datetime

    return int(datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp() * 1000)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")



def test_bots_are_flagged(gateway: GatewayProcess) -> None:
    event = make_event()
    gateway.http.post("/v1/batch", content=orjson.dumps({"batch": [event]}),
                      headers={"X-Write-Key": "wk_a", "User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; "
                                                                      "+http://www.google.com/bot.html)"})
    row = stored(gateway, [event["event_id"]])[0]
    assert (row["is_bot"], row["device_type"]) == (True, "bot")


def test_logs_carry_no_keys_ids_or_addresses(gateway: GatewayProcess) -> None:
    secret_user = "u-" + uuid.uuid4().hex
    event = make_event(user_id=secret_user, url="https://a.example/?ch=x")
    # A backend's event naming the browser it tracks for: that browser's address and agent are personal data too.
    on_behalf = make_event(ip="192.0.2.201", user_agent=f"Mozilla/5.0 (X11; Linux x86_64; {uuid.uuid4().hex})")
    gateway.http.post("/v1/batch", content=orjson.dumps({"batch": [event, on_behalf]}),
                      headers={"Authorization": "Bearer sk_a"})
    gateway.send([make_event("registration")])  # a rejection
    gateway.send([on_behalf])  # refused: a write key may not name the client
    stored(gateway, [event["event_id"], on_behalf["event_id"]])
    log = gateway.log()
    for needle in (secret_user, event["event_id"], event["anonymous_id"], "sk_a", "admin-pw", "analyst-pw",
                   on_behalf["ip"], "192.0.2.0", on_behalf["user_agent"]):
        assert needle not in log, needle
