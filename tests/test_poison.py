"""No batch can block the loader, and no event can claim a time far from its arrival.

A batch spread over more months than ClickHouse lets one INSERT create partitions for (100) was
accepted and then stopped loading for every site, for good. Now the gateway bounds what time an
event may claim (by key), and the loader loads what ClickHouse still refuses partition by partition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.conftest import GatewayProcess, assert_exactly_once, make_event

DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def monthly(months: int, **fields: Any) -> list[dict[str, Any]]:
    """One event in each of ``months`` consecutive months, the latest this month."""
    today = datetime.now(UTC)
    events = []
    for back in range(months):
        year, month = divmod(today.year * 12 + today.month - 1 - back, 12)
        ts = int(datetime(year, month + 1, 1, 12, tzinfo=UTC).timestamp() * 1000)
        events.append(make_event(ts=ts, **fields))
    return events


def test_batches_over_many_months_from_two_sites_load_and_block_nothing(
        new_gateway: Callable[..., GatewayProcess]) -> None:
    # A gateway told to take 20 years of history from any key: its batches span 150 months.
    gw = new_gateway(max_past_days_write_key=20 * 365.0, max_past_days_secret_key=20 * 365.0).start()
    spread = {"wk_a": monthly(150), "wk_b": monthly(150)}
    answers: dict[str, int] = {}

    def post(key: str) -> None:
        answers[key] = gw.send(spread[key], key=key).status_code

    senders = [threading.Thread(target=post, args=(key,)) for key in spread]
    for sender in senders:  # both in the same second, so one insert would hold 2 x 150 rows in 150 months
        sender.start()
    for sender in senders:
        sender.join()
    assert answers == {"wk_a": 200, "wk_b": 200}
    ordinary = [make_event() for _ in range(20)]
    assert gw.send(ordinary, key="wk_b").status_code == 200
    acked = [e["event_id"] for e in [*spread["wk_a"], *spread["wk_b"], *ordinary]]
    assert_exactly_once(gw, acked)
    assert gw.scalar("SELECT uniqExact(toYYYYMM(ts)) FROM clicktrail.events") == 150
    assert not (gw.directory / "data" / "spool" / "quarantine").exists(), "valid rows were set aside"
    # The gateway restarts and keeps loading: nothing was left stuck in the spool.
    gw.stop()
    gw.start()
    later = [make_event() for _ in range(5)]
    assert gw.send(later).status_code == 200
    assert_exactly_once(gw, [*acked, *(e["event_id"] for e in later)])


def test_the_time_an_event_may_claim_depends_on_the_key(gateway: GatewayProcess) -> None:
    now = now_ms()
    cases = [  # (key, ts, the error or None when accepted)
        ("wk_a", now - 6 * DAY_MS, None),
        ("wk_a", now - 8 * DAY_MS, "ts: more than 7 days before the gateway received it, the limit for a write "
                                   "key (send older events with the site's secret key)"),
        ("sk_a", now - 8 * DAY_MS, None),
        ("sk_a", now - 4 * 365 * DAY_MS, None),
        ("sk_a", now - 6 * 365 * DAY_MS, "ts: more than 1825 days before the gateway received it, the limit for "
                                         "the secret key"),
        ("wk_a", now + 30 * 60_000, None),
        ("wk_a", now + 2 * 3_600_000, "ts: more than 3600 s after the gateway received it; check the client's clock"),
        ("sk_a", now + 2 * 3_600_000, "ts: more than 3600 s after the gateway received it; check the client's clock"),
    ]
    stored = []
    for key, ts, error in cases:
        event = make_event(ts=ts)
        body = gateway.send([event, make_event()], key=key).json()
        if error is None:
            assert body["rejected"] == [], (key, ts)
            stored.append((event["event_id"], ts))
        else:
            assert body["rejected"] == [{"index": 0, "event_id": event["event_id"], "error": error}], (key, ts)
    ids = ",".join(f"'{event_id}'" for event_id, _ in stored)
    gateway.wait_for(f"SELECT count() FROM clicktrail.events WHERE event_id IN ({ids})", len(stored))
    rows = gateway.rows(f"SELECT event_id, toUnixTimestamp64Milli(ts) AS ms FROM clicktrail.events "
                        f"WHERE event_id IN ({ids})")
    assert {r["event_id"]: int(r["ms"]) for r in rows} == dict(stored)


def test_a_far_sent_at_cannot_move_an_event_out_of_the_window(gateway: GatewayProcess) -> None:
    # Both times are within the contract's range (2000 to 2100), but the skew correction would put the
    # event in 1926: received_at - (sent_at - ts).
    event = make_event(ts=946_684_800_000)  # 2000-01-01
    response = gateway.http.post("/v1/batch", json={"batch": [event], "sent_at": 4_102_444_000_000},
                                 headers={"X-Write-Key": "sk_a"})
    assert response.status_code == 400
    assert response.json()["rejected"][0]["error"].startswith("ts: more than 1825 days before")
    single = gateway.http.post("/v1/event", json={**make_event(ts=now_ms() - 30 * DAY_MS)},
                               headers={"X-Write-Key": "wk_a"})
    assert single.status_code == 400 and single.json()["error"].startswith("ts: more than 7 days before")
    pixel = gateway.http.get("/v1/pixel.gif", params={"k": "wk_a", "event": "email_open", "anonymous_id": "a",
                                                      "ts": str(now_ms() - 30 * DAY_MS)})
    assert pixel.status_code == 400 and pixel.json()["error"].startswith("ts: more than 7 days before")
