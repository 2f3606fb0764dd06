"""The dashboard's views (clickhouse/views/overview.sql, live_audience.sql) against plain-Python computations over the
generator's events.

For every seed, through a real gateway, for several periods of every site: overview, overview_daily and
overview_channels equal what the events give when counted here (sessions, their persons and entry channels, bounces,
registrations and new leads from tests/analytics/reference.py's definitions); event_names equals a count of the events
by name; stream_journey, live_registrant_chain and live_watch_distribution equal the registrants, live views and
watch times of each stream. Counts exact, rates within 1e-9. Without a gateway, on an engine of this process: streams
the generator never makes (no registrant; a registrant who joined live without a heartbeat).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from gateway.warehouse.store import Store
from tests.analytics import reference
from tests.analytics.generate import TOUCH_FIELDS
from tests.analytics.harness import RULES, Loaded, assert_rows_equal, loaded
from tests.test_analytics import cookbook
from tests.test_analytics_pipeline import _periods
from tests.test_analytics_sessions_content import SESSION_KEY, _entry_persons, _insert

__all__ = ["loaded"]  # the fixture: one gateway per seed

Event = dict[str, Any]
Row = dict[str, Any]
BUCKET_MS = 5 * 60_000
COMPLETE = 0.9


def _day(ts: int) -> date:
    return datetime.fromtimestamp(ts / 1000, UTC).date()


def _sessions(events: list[Event], site_id: str, date_from: date, date_to: date) -> list[Row]:
    """The site's sessions that started in the period, each with its person (the entry event's)."""
    persons = {tuple(r[k] for k in SESSION_KEY): r["person_id"] for r in _entry_persons(events)}
    return [{**s, "person_id": persons[tuple(s[k] for k in SESSION_KEY)]}
            for s in reference.sessions(events, RULES)
            if s["site_id"] == site_id and date_from <= s["day"] <= date_to]


def _traffic(sessions: Iterable[Row]) -> Row:
    sessions = list(sessions)
    bounces = sum(bool(s["bounce"]) for s in sessions)
    return {"visitors": len({s["person_id"] for s in sessions}), "sessions": len(sessions), "bounces": bounces}


def _registrations(events: list[Event], site_id: str, date_from: date, date_to: date) -> int:
    return sum(e["site_id"] == site_id and e["event"] == "registration" and date_from <= _day(e["ts"]) <= date_to
               for e in events)


def overview(events: list[Event], site_id: str, date_from: date, date_to: date) -> Row:
    traffic = _traffic(_sessions(events, site_id, date_from, date_to))
    leads = reference.leads(events, site_id).values()
    return {**traffic, "bounce_rate": traffic["bounces"] / traffic["sessions"] if traffic["sessions"] else 0.0,
            "registrations": _registrations(events, site_id, date_from, date_to),
            "new_leads": sum(date_from <= _day(lead.lead_at) <= date_to for lead in leads)}


def overview_daily(events: list[Event], site_id: str, date_from: date, date_to: date) -> list[Row]:
    groups: dict[tuple[date, str], list[Row]] = defaultdict(list)
    for s in _sessions(events, site_id, date_from, date_to):
        groups[s["day"], s["entry_channel"]].append(s)
    return [{"day": day.isoformat(), "channel": channel, **_traffic(group)}
            for (day, channel), group in sorted(groups.items())]


def overview_channels(events: list[Event], site_id: str, date_from: date, date_to: date) -> list[Row]:
    by_entry: dict[str, list[Row]] = defaultdict(list)
    for s in _sessions(events, site_id, date_from, date_to):
        by_entry[s["entry_channel"]].append(s)
    registrations = reference.attribution(events, site_id, "registration", "last_touch", date_from, date_to, RULES)
    new_leads = {r["channel"]: r["new_leads"]
                 for r in reference.channel_roi(events, {}, site_id, date_from, date_to, RULES) if r["new_leads"]}
    rows = []
    for channel in sorted(by_entry.keys() | registrations.keys() | new_leads.keys()):
        traffic = _traffic(by_entry.get(channel, []))
        rows.append({"channel": channel, **traffic,
                     "bounce_rate": traffic["bounces"] / traffic["sessions"] if traffic["sessions"] else 0.0,
                     "registrations": float(registrations.get(channel, 0.0)), "new_leads": new_leads.get(channel, 0)})
    return rows


def event_names(events: list[Event]) -> list[Row]:
    counts = Counter((e["site_id"], e["event"]) for e in events)
    last: dict[tuple[str, str], int] = {}
    for e in events:
        last[e["site_id"], e["event"]] = max(last.get((e["site_id"], e["event"]), 0), e["ts"])
    return [{"site_id": site_id, "event": name, "events": n, "last_ts": last[site_id, name]}
            for (site_id, name), n in sorted(counts.items())]


def attendance(events: list[Event]) -> dict[tuple[str, str, str], Row]:
    """(site, stream, person) -> registered, attended (a live view), completed (a live view of completion >= 0.9),
    for every registrant and viewer of a stream."""
    flags: dict[tuple[str, str, str], Row] = defaultdict(lambda: {"registered": 0, "attended": 0, "completed": 0})
    for row in reference.stream_audience(events, RULES):
        key = (row["site_id"], row["stream_id"], row["person_id"])
        flags[key]["registered"] = int(row["registered_at"] is not None)
    for view in reference.live_views(events):
        if view["mode"] == "live":
            key = (view["site_id"], view["stream_id"], view["person_id"])
            flags[key]["attended"] = 1
            if view["completion"] is not None and view["completion"] >= COMPLETE:
                flags[key]["completed"] = 1
    return flags


def stream_journey(events: list[Event]) -> list[Row]:
    flags = attendance(events)
    return [{**dict(zip(("site_id", "stream_id", "person_id"), key, strict=True)), "attended": f["attended"],
             "no_show": int(f["registered"] and not f["attended"]), "completed": f["completed"]}
            for key, f in sorted(flags.items())]


def live_registrant_chain(events: list[Event]) -> list[Row]:
    """A row for every stream of live_stream_stats (a registration, an interaction or a view)."""
    streams: dict[tuple[str, str], list[Row]] = {(r["site_id"], r["stream_id"]): []
                                                 for r in reference.live_stream_stats(events)}
    for (site_id, stream_id, _), f in attendance(events).items():
        if f["registered"]:
            streams[site_id, stream_id].append(f)
    rows = []
    for (site_id, stream_id), registrants in sorted(streams.items()):
        attendees = [f for f in registrants if f["attended"]]
        completed = sum(f["completed"] for f in attendees)
        rows.append({"site_id": site_id, "stream_id": stream_id, "registrants": len(registrants),
                     "attendees": len(attendees), "completed": completed,
                     "attendance_rate": len(attendees) / len(registrants) if registrants else 0.0,
                     "completed_rate": completed / len(attendees) if attendees else 0.0})
    return rows


def live_watch_distribution(events: list[Event]) -> list[Row]:
    watched: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)  # (site, stream, mode) -> person -> ms
    for view in reference.live_views(events):
        watched[view["site_id"], view["stream_id"], view["mode"]][view["person_id"]] += view["watch_ms"]
    rows = []
    for (site_id, stream_id, mode), persons in sorted(watched.items()):
        buckets = Counter(ms // BUCKET_MS for ms in persons.values())
        for bucket in range(max(buckets) + 1):
            rows.append({"site_id": site_id, "stream_id": stream_id, "mode": mode, "bucket_min": bucket * 5,
                         "persons": buckets[bucket], "share": buckets[bucket] / len(persons)})
    return rows


# --- the views, through a gateway ---------------------------------------------------------------------------------


def _call(view: str, site_id: str, date_from: date, date_to: date) -> str:
    return f"{view}(site = '{site_id}', date_from = '{date_from}', date_to = '{date_to}')"


def test_the_generator_reaches_the_corners_of_the_overview(loaded: Loaded) -> None:
    events, today = loaded.data.events, loaded.now.date()
    date_from, date_to = _periods(today)[0]
    site = loaded.sites[0]
    row = overview(events, site, date_from, date_to)
    assert row["visitors"] < row["sessions"] and row["bounces"] and row["registrations"] and row["new_leads"]
    channels = [r for site in loaded.sites for period in _periods(today)
                for r in overview_channels(events, site, *period)]
    assert any(r["sessions"] == 0 for r in channels)  # a channel that brought leads or registrations, no session
    assert any(r["new_leads"] for r in channels) and any(r["visitors"] < r["sessions"] for r in channels)
    chain = live_registrant_chain(events)
    assert any(r["completed"] for r in chain) and any(r["attendees"] < r["registrants"] for r in chain)
    assert any(r["persons"] == 0 for r in live_watch_distribution(events))


def test_overview(loaded: Loaded) -> None:
    events, today = loaded.data.events, loaded.now.date()
    for site in [*loaded.sites, "limited"]:
        for date_from, date_to in _periods(today):
            got = loaded.rows(f"SELECT * FROM clicktrail.{_call('overview', site, date_from, date_to)}")
            assert got == [pytest.approx(overview(events, site, date_from, date_to), rel=1e-9)], (site, date_from)


def test_overview_daily_and_channels(loaded: Loaded) -> None:
    events, today = loaded.data.events, loaded.now.date()
    for site in loaded.sites:
        for date_from, date_to in _periods(today):
            daily = loaded.rows(f"SELECT * FROM clicktrail.{_call('overview_daily', site, date_from, date_to)}")
            assert_rows_equal(daily, overview_daily(events, site, date_from, date_to), ("day", "channel"))
            channels = loaded.rows(f"SELECT * FROM clicktrail.{_call('overview_channels', site, date_from, date_to)}")
            assert_rows_equal(channels, overview_channels(events, site, date_from, date_to), ("channel",))


def test_event_names(loaded: Loaded) -> None:
    got = loaded.rows("SELECT site_id, event, events, toUnixTimestamp64Milli(last_ts) AS last_ts"
                      " FROM clicktrail.event_names")
    assert_rows_equal(got, event_names(loaded.data.events), ("site_id", "event"))


def test_stream_journey_and_the_registrant_chain(loaded: Loaded) -> None:
    events = loaded.data.events
    journey = loaded.rows("SELECT site_id, stream_id, person_id, attended, no_show, completed"
                          " FROM clicktrail.stream_journey")
    assert_rows_equal(journey, stream_journey(events), ("site_id", "stream_id", "person_id"))
    assert len(journey) == len(loaded.rows("SELECT 1 FROM clicktrail.stream_audience"))  # a row for each of its
    chain = loaded.rows("SELECT * FROM clicktrail.live_registrant_chain")
    assert_rows_equal(chain, live_registrant_chain(events), ("site_id", "stream_id"))
    # The chain's first two steps are live_stream_stats' registrants and attendees.
    stats = {(r["site_id"], r["stream_id"]): r for r in reference.live_stream_stats(events)}
    for row in chain:
        stream = stats[row["site_id"], row["stream_id"]]
        assert (row["registrants"], row["attendees"]) == (stream["registrants"], stream["attendees"])


def test_live_watch_distribution(loaded: Loaded) -> None:
    got = loaded.rows("SELECT * FROM clicktrail.live_watch_distribution")
    assert_rows_equal(got, live_watch_distribution(loaded.data.events), ("site_id", "stream_id", "mode", "bucket_min"))


# --- the cookbook of clickhouse/README.md -------------------------------------------------------------------------


def test_cookbook_this_month_against_the_days_before(loaded: Loaded) -> None:
    today = loaded.now.date()
    start = today.replace(day=1)
    before = start - timedelta(days=(today - start).days + 1)
    for site in loaded.sites:
        got = {r.pop("period"): r for r in loaded.rows(cookbook("'this' AS period", loaded, site))}
        assert got == {"this": pytest.approx(overview(loaded.data.events, site, start, today), rel=1e-9),
                       "before": pytest.approx(overview(loaded.data.events, site, before, start - timedelta(days=1)),
                                               rel=1e-9)}


def test_cookbook_no_shows_for_the_replay_push(loaded: Loaded) -> None:
    flags = attendance(loaded.data.events)
    answered = False
    for row in live_registrant_chain(loaded.data.events):
        got = loaded.rows(cookbook("FROM clicktrail.stream_journey", loaded, row["site_id"], row["stream_id"]))
        want = sorted(person for (site_id, stream_id, person), f in flags.items()
                      if (site_id, stream_id) == (row["site_id"], row["stream_id"])
                      and f["registered"] and not f["attended"])
        assert sorted(r["person_id"] for r in got) == want
        answered = answered or bool(want)
    assert answered, "nobody missed a stream: the cookbook's question went untested"


# --- hand-made corners, on an engine of this process ---------------------------------------------------------------


def _hand_streams(t0: int) -> list[Event]:
    ids = itertools.count()

    def ev(name: str, ts: int, anonymous_id: str, **props: Any) -> Event:
        return {"site_id": "hand", "event_id": f"hs{next(ids):03d}", "event": name, "ts": ts,
                "anonymous_id": anonymous_id, "user_id": "", "session_id": "", **{f: "" for f in TOUCH_FIELDS},
                "url": "", "referrer": "", "title": "", "props": props}

    minute = 60_000
    return [
        # replay-only: one replay viewer, nobody registered.
        ev("live_join", t0, "r1", stream_id="replay-only", view_id="v1", mode="replay"),
        ev("live_heartbeat", t0 + minute, "r1", stream_id="replay-only", view_id="v1", mode="replay",
           watched_ms=minute, duration_s=3600),
        # talk-only: an interaction and nothing else.
        ev("interaction", t0, "i1", stream_id="talk-only", kind="cta"),
        # joined: j1 registered and joined live but sent no heartbeat (an attendee with 0 ms watched, no no-show);
        # j2 registered and never came.
        ev("registration", t0, "j1", stream_id="joined"),
        ev("live_join", t0 + minute, "j1", stream_id="joined", view_id="v2", mode="live"),
        ev("registration", t0, "j2", stream_id="joined"),
    ]


def test_streams_without_registrants_and_an_attendee_without_watch_time(store: Store) -> None:
    now = int(datetime.now(UTC).timestamp() * 1000)
    events = _hand_streams(now - 86_400_000)
    _insert(store, events, now)

    def rows(sql: str) -> list[Row]:
        return [orjson.loads(line) for line in store.query(sql, "JSONEachRow").decode().splitlines()]

    chain = rows("SELECT * FROM clicktrail.live_registrant_chain")
    assert_rows_equal(chain, live_registrant_chain(events), ("site_id", "stream_id"))
    figures = {r["stream_id"]: (r["registrants"], r["attendees"], r["completed"], r["attendance_rate"]) for r in chain}
    assert figures == {"replay-only": (0, 0, 0, 0.0), "talk-only": (0, 0, 0, 0.0), "joined": (2, 1, 0, 0.5)}
    journey = rows("SELECT site_id, stream_id, person_id, attended, no_show, completed, live_watch_ms"
                   " FROM clicktrail.stream_journey")
    assert_rows_equal(journey, stream_journey(events), ("site_id", "stream_id", "person_id"))
    assert {(r["person_id"], r["attended"], r["no_show"], r["live_watch_ms"]) for r in journey} == {
        ("r1", 0, 0, 0), ("j1", 1, 0, 0), ("j2", 0, 1, 0)}
