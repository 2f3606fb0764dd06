"""What only a site's secret key may say about an event: the client of its real origin (``ip``, ``user_agent``),
for a backend tracking on behalf of a browser, over a real gateway; and that keys are matched exactly, by kind.

The older timestamps a secret key may send are tested with the time window in tests/test_poison.py, the throttle
on wrong keys in tests/test_hostile_input.py, the logs (with an event naming its client) in tests/test_ingest.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import clicktrail
import orjson
import pytest

from gateway.config import SiteConfig
from gateway.ingest.sites import Sites
from tests.conftest import GatewayProcess, make_event
from tests.test_ingest import CHROME_ANDROID, stored

#: What a backend's HTTP client says of itself: the event's client is somebody else.
SERVER_UA = "clicktrail-python/1.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
IP_REFUSED = "ip: may be set with the site's secret key only; with a write key an event has the request's own address"
UA_REFUSED = ("user_agent: may be set with the site's secret key only; with a write key an event has the request's "
              "own User-Agent")
#: The request's client as stored: the test's own address, anonymized (the default), and no agent it names.
LOCAL = "127.0.0.0"
CHROME_ANDROID_AGENT = ("Chrome Mobile", "Android", "mobile", False)
SERVER_AGENT = ("Other", "Other", "other", False)


def client(row: dict[str, Any]) -> tuple[object, ...]:
    """The stored client of an event: address, User-Agent, and what enrichment read from it."""
    return row["ip"], row["user_agent"], row["browser"], row["os"], row["device_type"], row["is_bot"]


def test_a_secret_key_names_each_events_client(gateway: GatewayProcess) -> None:
    on_behalf = make_event(ip="203.0.113.7", user_agent=CHROME_ANDROID)
    crawler = make_event(ip="2001:DB8:1234:5678::9", user_agent=GOOGLEBOT)
    ip_only = make_event(ip="198.51.100.23")
    agent_only = make_event(user_agent=CHROME_ANDROID)
    neither = make_event(ip=None, user_agent=None)
    events = [on_behalf, crawler, ip_only, agent_only, neither]
    response = gateway.send(events, key="sk_a", headers={"User-Agent": SERVER_UA})
    assert response.json() == {"accepted": 5, "rejected": []}
    rows = {r["event_id"]: r for r in stored(gateway, [e["event_id"] for e in events])}

    # Each field on its own replaces the request's; the address is anonymized as the request's would be.
    assert client(rows[on_behalf["event_id"]]) == ("203.0.113.0", CHROME_ANDROID, *CHROME_ANDROID_AGENT)
    assert client(rows[crawler["event_id"]]) == ("2001:db8:1234::", GOOGLEBOT, "Googlebot", "Other", "bot", True)
    assert client(rows[ip_only["event_id"]]) == ("198.51.100.0", SERVER_UA, *SERVER_AGENT)
    assert client(rows[agent_only["event_id"]]) == (LOCAL, CHROME_ANDROID, *CHROME_ANDROID_AGENT)
    assert client(rows[neither["event_id"]]) == (LOCAL, SERVER_UA, *SERVER_AGENT)


def test_the_single_endpoint_takes_them_with_the_secret_key_in_the_body(gateway: GatewayProcess) -> None:
    event = make_event(ip="203.0.113.8", user_agent=GOOGLEBOT)
    response = gateway.http.post("/v1/event", content=orjson.dumps({**event, "key": "sk_a"}),
                                 headers={"User-Agent": SERVER_UA})
    assert (response.status_code, response.json()) == (200, {"accepted": 1, "rejected": []})
    assert client(stored(gateway, [event["event_id"]])[0]) == ("203.0.113.0", GOOGLEBOT, "Googlebot", "Other",
                                                              "bot", True)


def test_a_write_key_may_not_name_the_events_client(gateway: GatewayProcess) -> None:
    """A write key is public (every page of the site carries it): with it anyone could forge the addresses and
    agents in a site's data. The event is refused, naming the field, so a backend on the wrong key notices."""
    headers = {"User-Agent": CHROME_ANDROID}
    forged_ip = make_event(ip="203.0.113.7")
    alone = gateway.send([forged_ip], key="wk_a", headers=headers)
    assert (alone.status_code, alone.json()) == (400, {
        "accepted": 0, "rejected": [{"index": 0, "event_id": forged_ip["event_id"], "error": IP_REFUSED}],
        "error": "batch: no valid event"})

    kept, forged_agent = make_event(), make_event(user_agent=GOOGLEBOT)
    mixed = gateway.send([kept, forged_agent], key="wk_a", headers=headers)
    assert (mixed.status_code, mixed.json()) == (200, {
        "accepted": 1, "rejected": [{"index": 1, "event_id": forged_agent["event_id"], "error": UA_REFUSED}]})

    both = make_event(ip="203.0.113.7", user_agent=GOOGLEBOT)  # the first field is named
    single = gateway.http.post("/v1/event", content=orjson.dumps(both), headers={"X-Write-Key": "wk_a", **headers})
    assert (single.status_code, single.json()) == (400, {"error": IP_REFUSED})

    pixel_id = uuid.uuid4().hex
    pixel = gateway.http.get("/v1/pixel.gif", params={"k": "wk_a", "event": "email_open", "event_id": pixel_id,
                                                      "anonymous_id": "a-1", "user_agent": GOOGLEBOT})
    assert (pixel.status_code, pixel.json()) == (400, {"error": UA_REFUSED})

    # A later request's event loaded means the ones before it were too, had they been stored.
    later = make_event()
    assert gateway.send([later], key="wk_a", headers=headers).status_code == 200
    rows = {r["event_id"]: r for r in stored(gateway, [kept["event_id"], later["event_id"]])}
    assert client(rows[kept["event_id"]]) == (LOCAL, CHROME_ANDROID, *CHROME_ANDROID_AGENT)
    refused = ",".join(f"'{e}'" for e in (forged_ip["event_id"], forged_agent["event_id"], both["event_id"], pixel_id))
    assert gateway.scalar(f"SELECT count() FROM clicktrail.events WHERE event_id IN ({refused})") == 0


def test_the_python_sdk_sends_them(gateway: GatewayProcess) -> None:
    with clicktrail.Client("sk_a", host=gateway.base, strict=True, sync_mode=True) as sdk:
        sent = sdk.page(anonymous_id="a-1", ip="203.0.113.9", user_agent=GOOGLEBOT)
    assert sent is not None
    assert client(stored(gateway, [sent])[0]) == ("203.0.113.0", GOOGLEBOT, "Googlebot", "Other", "bot", True)

    failures: list[clicktrail.Failure] = []
    with clicktrail.Client("wk_a", host=gateway.base, sync_mode=True, on_error=failures.append) as sdk:
        refused = sdk.page(anonymous_id="a-1", ip="203.0.113.9")
        assert sdk.stats().rejected == 1
    assert failures == [clicktrail.Failure(str(refused), IP_REFUSED)]


@pytest.mark.parametrize("key", ["wk_a", "sk_a"])
def test_events_without_them_keep_the_requests_client(gateway: GatewayProcess, key: str) -> None:
    events = [make_event(), make_event(ip=None, user_agent=None)]
    response = gateway.send(events, key=key, headers={"User-Agent": CHROME_ANDROID})
    assert response.json() == {"accepted": 2, "rejected": []}
    rows = stored(gateway, [e["event_id"] for e in events])
    assert [client(r) for r in rows] == [(LOCAL, CHROME_ANDROID, *CHROME_ANDROID_AGENT)] * 2


def test_an_invalid_client_is_refused_whatever_the_key(gateway: GatewayProcess) -> None:
    """The contract comes first: a write key's event with a malformed address hears of the address, not the key."""
    for key in ("sk_a", "wk_a"):
        bad = make_event(ip="203.0.113.7:443")
        response = gateway.send([bad], key=key)
        assert response.json()["rejected"] == [{"index": 0, "event_id": bad["event_id"],
                                                "error": "ip: not an IPv4 or IPv6 address"}]


def test_keys_are_matched_exactly_and_by_kind() -> None:
    sites = Sites([SiteConfig(id="s", write_key="wk_0123456789", secret_key="sk_0123456789"),
                   SiteConfig(id="public_only", write_key="wk_abcdefghij")])
    assert sites.authenticate("wk_0123456789").kind == "write"  # type: ignore[union-attr]
    assert sites.authenticate("sk_0123456789").kind == "secret"  # type: ignore[union-attr]
    assert sites.authenticate("wk_abcdefghij").kind == "write"  # type: ignore[union-attr]
    # A site without a secret key has none: its empty default must not be a key anyone can send.
    for guess in ("", "sk_012345678", "sk_01234567890", "SK_0123456789", "sk_0123456788", " sk_0123456789",
                  "sk_0123456789\x00", "sk_012345678\uff19", "wk_0123456789" * 2):
        assert sites.authenticate(guess) is None, guess


def test_a_key_that_is_not_ascii_is_matched_too() -> None:
    """compare_digest refuses str beyond ASCII (TypeError): a site configured with such a key would answer every
    request that sends it with an error of ours."""
    sites = Sites([SiteConfig(id="s", write_key="wk_渠道码-0001")])
    assert sites.authenticate("wk_渠道码-0001").site.id == "s"  # type: ignore[union-attr]
    assert sites.authenticate("wk_渠道码-0002") is None
