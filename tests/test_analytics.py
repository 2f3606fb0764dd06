"""The analysts' views against the definitions, computed in plain Python (tests/analytics/reference.py) from the
events a seeded generator sent through a real gateway: duplicates, reordering, late identifies and all.

Counts must be equal, rates and credits within 1e-9. Each seed gets its own gateway.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.analytics import reference
from tests.analytics.generate import Dataset, generate
from tests.analytics.harness import RULES, SEEDS, Loaded, assert_rows_equal, deliver, loaded
from tests.conftest import GatewayProcess

__all__ = ["loaded"]  # the fixture, shared with the other analytics test modules

MODELS = reference.MODELS
CONVERSIONS = ("registration", "form_submit", "download", "lead_stage:mql")

def test_the_generator_reaches_every_corner(loaded: Loaded) -> None:
    stats = reference.live_stream_stats(loaded.data.events)
    assert stats and any(r["no_show_replay_viewers"] for r in stats) and any(r["interactors"] for r in stats)
    assert reference.identities(loaded.data.events)
    assert len(loaded.data.deliveries) > 10


def test_identities(loaded: Loaded) -> None:
    got = loaded.rows("SELECT site_id, anonymous_id, person_id, toUnixTimestamp64Milli(identified_at) AS identified_at"
                      " FROM clicktrail.identities")
    assert_rows_equal(got, reference.identities(loaded.data.events), ("site_id", "anonymous_id"))


def test_touches_and_their_channels(loaded: Loaded) -> None:
    got = loaded.rows("SELECT site_id, person_id, toUnixTimestamp64Milli(ts) AS ts, channel, sharer"
                      " FROM clicktrail.touch_channels")
    want = [t._asdict() for t in reference.touches(loaded.data.events, RULES)]
    assert sorted(tuple(r.values()) for r in got) == sorted(tuple(r.values()) for r in want)


def test_live_stream_stats(loaded: Loaded) -> None:
    got = loaded.rows("SELECT * EXCEPT (first_ts, last_ts), toUnixTimestamp64Milli(first_ts) AS first_ts,"
                      " toUnixTimestamp64Milli(last_ts) AS last_ts FROM clicktrail.live_stream_stats")
    assert_rows_equal(got, reference.live_stream_stats(loaded.data.events), ("site_id", "stream_id"))


def test_live_concurrency(loaded: Loaded) -> None:
    got = loaded.rows("SELECT site_id, stream_id, toUnixTimestamp(minute) * 1000 AS minute, viewers"
                      " FROM clicktrail.live_concurrency")
    assert_rows_equal(got, reference.live_concurrency(loaded.data.events), ("site_id", "stream_id", "minute"))


def test_live_retention(loaded: Loaded) -> None:
    got = loaded.rows("SELECT * FROM clicktrail.live_retention")
    assert_rows_equal(got, reference.live_retention(loaded.data.events), ("site_id", "stream_id", "mode", "minute"))


def test_live_interactions(loaded: Loaded) -> None:
    got = loaded.rows("SELECT * FROM clicktrail.live_interactions")
    assert_rows_equal(got, reference.live_interactions(loaded.data.events), ("site_id", "stream_id", "kind"))


@pytest.mark.parametrize("model", MODELS)
def test_attribution(loaded: Loaded, model: str) -> None:
    today = loaded.now.date()
    for site_id in loaded.sites:
        for conversion in CONVERSIONS:
            for date_from, date_to in ((today - timedelta(days=61), today), (today - timedelta(days=20), today)):
                for view, expected in (
                    ("attribution", reference.attribution(loaded.data.events, site_id, conversion, model, date_from,
                                                          date_to, RULES)),
                    ("attribution_by_sharer", reference.attribution_by_sharer(loaded.data.events, site_id, conversion,
                                                                              model, date_from, date_to)),
                ):
                    column = "channel" if view == "attribution" else "sharer"
                    got = loaded.rows(
                        f"SELECT {column}, conversions FROM clicktrail.{view}(site = '{site_id}', conversion ="
                        f" '{conversion}', model = '{model}', date_from = '{date_from}', date_to = '{date_to}')")
                    credit = {r[column]: float(r["conversions"]) for r in got}
                    assert credit.keys() == expected.keys(), (site_id, conversion, date_from)
                    for name, value in expected.items():
                        assert math.isclose(credit[name], value, rel_tol=1e-9, abs_tol=1e-9), (site_id, conversion,
                                                                                                  name)


def test_attribution_refuses_an_unknown_model(loaded: Loaded) -> None:
    with pytest.raises(AssertionError, match="model: must be one of"):
        loaded.gw.query(f"SELECT * FROM clicktrail.attribution(site = 'site_a', conversion = 'registration',"
                        f" model = 'best', date_from = '{date(2026, 1, 1)}', date_to = '{date(2026, 12, 31)}')")


def test_stream_audience(loaded: Loaded) -> None:
    got = loaded.rows("SELECT * EXCEPT registered_at, toUnixTimestamp64Milli(registered_at) AS registered_at"
                      " FROM clicktrail.stream_audience")
    want = reference.stream_audience(loaded.data.events, RULES)
    assert_rows_equal(got, want, ("site_id", "stream_id", "person_id"))


def compare_core_views(gw: GatewayProcess, events: list[dict[str, Any]]) -> None:
    """The views whose answers depend most on what arrived when: persons, touches, streams, audiences."""
    loaded = Loaded(gw, Dataset(events, []), datetime.now(UTC))
    test_identities(loaded)
    test_touches_and_their_channels(loaded)
    test_live_stream_stats(loaded)
    test_stream_audience(loaded)
    test_attribution(loaded, "u_shaped")


def test_any_arrival_order_gives_the_same_answers(new_gateway: Callable[..., GatewayProcess]) -> None:
    data = generate(SEEDS[0], int(datetime.now(UTC).timestamp() * 1000))
    gw = new_gateway().start()
    # Backwards: every identify before the visits it links, every heartbeat before its join.
    deliver(gw, data.deliveries[::-1], len(data.events))
    compare_core_views(gw, data.events)


def test_an_install_with_events_from_before_the_rollups_gets_them_backfilled(
        new_gateway: Callable[..., GatewayProcess]) -> None:
    data = generate(SEEDS[1], int(datetime.now(UTC).timestamp() * 1000))
    gw = new_gateway().start()
    deliver(gw, data.deliveries, len(data.events))
    # Back to the state of an install that stored these events before any analytics migration ran.
    for kind in ("View", "MaterializedView", "Dictionary", "%"):
        for name in gw.query(f"SELECT name FROM system.tables WHERE database = 'clicktrail' AND engine LIKE '{kind}'"
                             " AND name NOT IN ('events', 'schema_migrations')").split():
            gw.query(f"DROP {'DICTIONARY' if kind == 'Dictionary' else 'TABLE'} clicktrail.`{name}`")
    gw.query("ALTER TABLE clicktrail.schema_migrations DELETE WHERE version > 1 SETTINGS mutations_sync = 2")
    gw.stop()
    gw.start()
    assert gw.scalar("SELECT count() FROM clicktrail.schema_migrations") > 1
    compare_core_views(gw, data.events)


def cookbook(containing: str, loaded: Loaded, site_id: str, stream_id: str = "") -> str:
    """The cookbook query (clickhouse/README.md) that contains ``containing``, for a site and stream of the data,
    with now() and today() the moment the data was generated for (the expectations' too)."""
    text = (Path(__file__).resolve().parent.parent / "clickhouse" / "README.md").read_text()
    (sql,) = [block for block in re.findall(r"```sql\n(.*?)```", text, re.S) if containing in block]
    sql = sql.replace("'demo'", f"'{site_id}'").replace("'webinar-2026-12'", f"'{stream_id}'")
    now = loaded.now.strftime("%Y-%m-%d %H:%M:%S")
    return sql.replace("today()", f"toDate('{loaded.now.date()}')").replace("now()", f"toDateTime('{now}', 'UTC')")


def rounded_equal(got: float, want: float) -> bool:
    """``got`` is ``want`` rounded to 2 decimals by ClickHouse, whose sum may differ from Python's in the last
    bits (another order of addition), which can move a rounding by 0.01 at a tie."""
    return abs(got - want) <= 0.005 + 1e-9


def test_cookbook_webinar_overview_retention_and_concurrency(loaded: Loaded) -> None:
    stats = reference.live_stream_stats(loaded.data.events)
    week_ago = int((loaded.now - timedelta(days=7)).timestamp() * 1000)
    for site_id in loaded.sites:
        got = loaded.rows(cookbook("round(avg_watch_ms / 60000, 1)", loaded, site_id))
        want = [r for r in stats if r["site_id"] == site_id and r["first_ts"] >= week_ago]
        assert [(r["stream_id"], r["registrants"], r["attendees"], r["peak_concurrency"]) for r in got] == [
            (r["stream_id"], r["registrants"], r["attendees"], r["peak_concurrency"])
            for r in sorted(want, key=lambda r: -r["first_ts"])]
    site_id, stream_id = stats[0]["site_id"], stats[0]["stream_id"]
    got = loaded.rows(cookbook("FROM clicktrail.live_retention", loaded, site_id, stream_id))
    want = [r for r in reference.live_retention(loaded.data.events)
            if (r["site_id"], r["stream_id"], r["mode"]) == (site_id, stream_id, "live")]
    assert [r["minute"] for r in got] == [r["minute"] for r in want] and len(got) > 1
    assert all(math.isclose(g["share"], w["share"], abs_tol=1e-9) for g, w in zip(got, want, strict=True))
    got = loaded.rows(cookbook("FROM clicktrail.live_concurrency", loaded, site_id, stream_id))
    want = [r for r in reference.live_concurrency(loaded.data.events) if (r["site_id"], r["stream_id"]) ==
            (site_id, stream_id)]
    assert [r["viewers"] for r in got] == [r["viewers"] for r in want] and got


def test_cookbook_registrations_by_channel_last_month(loaded: Loaded) -> None:
    today = loaded.now.date()
    last_month_end = today.replace(day=1) - timedelta(days=1)
    answered = False
    for site_id in loaded.sites:
        got = loaded.rows(cookbook("SELECT model, channel, round(conversions, 2) AS registrations", loaded, site_id))
        want = {(model, channel): credit
                for model in ("first_touch", "last_touch")
                for channel, credit in reference.attribution(loaded.data.events, site_id, "registration", model,
                                                             last_month_end.replace(day=1), last_month_end,
                                                             RULES).items()}
        assert {(r["model"], r["channel"]) for r in got} == want.keys()
        assert all(rounded_equal(r["registrations"], want[r["model"], r["channel"]]) for r in got)
        answered = answered or len(want) > 0
    assert answered, "no registration last month: the cookbook's question went untested"


def test_cookbook_no_shows_and_their_replays(loaded: Loaded) -> None:
    audience = reference.stream_audience(loaded.data.events, RULES)
    for row in reference.live_stream_stats(loaded.data.events):
        site_id, stream_id = row["site_id"], row["stream_id"]
        got = loaded.rows(cookbook("live_watch_ms = 0", loaded, site_id, stream_id))
        want = [r for r in audience if (r["site_id"], r["stream_id"]) == (site_id, stream_id)
                and r["registered_at"] is not None and r["live_watch_ms"] == 0]
        assert sorted((r["person_id"], bool(r["watched_replay"])) for r in got) == sorted(
            (r["person_id"], r["replay_watch_ms"] > 0) for r in want)
    assert any(r["registered_at"] is not None and r["live_watch_ms"] == 0 and r["replay_watch_ms"] > 0
               for r in audience), "no no-show watched a replay: the cookbook's question went untested"


def test_cookbook_sharers_by_registrations(loaded: Loaded) -> None:
    today = loaded.now.date()
    answered = False
    for site_id in loaded.sites:
        got = loaded.rows(cookbook("FROM clicktrail.attribution_by_sharer", loaded, site_id))
        want = reference.attribution_by_sharer(loaded.data.events, site_id, "registration", "first_touch",
                                               today - timedelta(days=30), today)
        want.pop("(none)", None)
        assert {r["sharer"] for r in got} == want.keys()
        assert all(rounded_equal(r["registrations"], want[r["sharer"]]) for r in got)
        answered = answered or len(got) > 0
    assert answered, "no sharer brought a registration: the cookbook's question went untested"


def test_every_events_channel_by_the_last_touch_rule(loaded: Loaded) -> None:
    got = {(r["site_id"], r["event_id"]): r["channel"]
           for r in loaded.rows("SELECT site_id, event_id, channel FROM clicktrail.event_channels")}
    want = reference.last_touch_channels(loaded.data.events, RULES)
    assert got == want
    assert {"(direct)", "search", "partner"} <= set(want.values())
