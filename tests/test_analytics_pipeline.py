"""Funnels, the lead lifecycle, channel ROI and pipeline influence (Analytics II) against the definitions in
tests/analytics/reference.py (choices 15 to 20).

For every seed, through a real gateway: funnel and funnel_by_channel for several step lists, windows and periods;
lifecycle_funnel, lifecycle_by_channel and lifecycle_recycling; channel_roi over costs imported with
``python -m gateway costs import`` (twice: the second import corrects days of the first); stream_influence for every
stream and several windows; and the cookbook queries of clickhouse/README.md about them. Counts exact, rates and
amounts within 1e-9. Corners the generator may miss (a number that is no string, a null amount, the window's last
millisecond), worked out by hand. Without a gateway, on an engine of this process: those corners through the views,
with the lead_stages rollup backfilled by its migration, and backfilled twice.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.warehouse.store import Store, split_statements
from loadtests.traffic import DAY_MS, HOUR_MS, MINUTE_MS
from tests.analytics import reference
from tests.analytics.generate import TOUCH_FIELDS, generate
from tests.analytics.harness import RULES, Loaded, assert_rows_equal, loaded
from tests.conftest import ROOT
from tests.test_analytics_sessions_content import BACKFILL, _stored

__all__ = ["loaded"]  # the fixture: one gateway per seed

Rows = Callable[[str], list[dict[str, Any]]]
DAY_S = 86_400
#: Step lists: the registration funnel; a mix of web, live and CRM steps; conditions on props; the lifecycle as a
#: funnel; one event name three times (one event never fills two steps).
FUNNELS = (
    ["page_view", "registration", "live_join[mode=live]"],
    ["registration", "live_heartbeat", "lead_stage:mql"],
    ["page_view", "form_submit[form_id=whitepaper-gate]", "download[file_name=2025数据安全白皮书.pdf]"],
    ["lead_stage:lead", "lead_stage:mql", "lead_stage:sql", "lead_stage:opportunity", "lead_stage:won"],
    ["page_view", "page_view", "page_view"],
)
WINDOWS_S = (3600, 7 * DAY_S, 30 * DAY_S)


def _periods(today: date) -> list[tuple[date, date]]:
    """Every day of the data, a span inside it, the last two weeks."""
    return [(today - timedelta(days=61), today), (today - timedelta(days=40), today - timedelta(days=20)),
            (today - timedelta(days=14), today)]


def _quote(steps: list[str]) -> str:
    return "[" + ", ".join("'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'" for s in steps) + "]"


# --- funnels --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", FUNNELS, ids=[" > ".join(s) for s in FUNNELS])
def test_funnel_and_funnel_by_channel(loaded: Loaded, steps: list[str]) -> None:
    today = loaded.now.date()
    every_day, inside = _periods(today)[:2]
    # Each window once over the whole data, the middle one over a span inside it as well, and by channel (the same
    # chains grouped otherwise): a funnel costs about 0.1 s.
    cases = [(window_s, every_day, False) for window_s in WINDOWS_S] + [(WINDOWS_S[1], inside, False),
                                                                        (WINDOWS_S[1], every_day, True)]
    completed = 0
    for site_id in loaded.sites:
        for window_s, (date_from, date_to), by_channel in cases:
            view, key = ("funnel_by_channel", ("channel", "step")) if by_channel else ("funnel", ("step",))
            got = loaded.rows(f"SELECT * FROM clicktrail.{view}(site = '{site_id}', steps = {_quote(steps)},"
                              f" window_s = {window_s}, date_from = '{date_from}', date_to = '{date_to}')")
            want = reference.funnel(loaded.data.events, site_id, steps, window_s, date_from, date_to, RULES,
                                    by_channel)
            assert_rows_equal(got, want, key)
            completed += sum(r["persons"] for r in want if r["step"] == len(steps))
    assert completed, "nobody went through the whole funnel: the comparison proved little"


def test_funnel_split_is_the_funnel_and_its_split_in_one(loaded: Loaded) -> None:
    """funnel_split's rows over every channel are funnel's, and its others funnel_by_channel's."""
    steps = FUNNELS[0]
    date_from, date_to = _periods(loaded.now.date())[0]
    checked = 0
    for site_id in loaded.sites:
        got = loaded.rows(f"SELECT * FROM clicktrail.funnel_split(site = '{site_id}', steps = {_quote(steps)},"
                          f" window_s = {WINDOWS_S[1]}, date_from = '{date_from}', date_to = '{date_to}')")
        for all_channels, by_channel, key in ((1, False, ("step",)), (0, True, ("channel", "step"))):
            rows = [{k: v for k, v in r.items() if k != "all_channels" and (by_channel or k != "channel")}
                    for r in got if r["all_channels"] == all_channels]
            want = reference.funnel(loaded.data.events, site_id, steps, WINDOWS_S[1], date_from, date_to, RULES,
                                    by_channel)
            assert_rows_equal(rows, want, key)
            checked += len(want)
    assert checked, "no funnel rows: the comparison proved little"


def test_funnel_levels_are_windowfunnel_strict_increase(loaded: Loaded) -> None:
    """The definition is ClickHouse's windowFunnel(window, 'strict_increase'): its levels, over the same events,
    are the reference's furthest steps."""
    today = loaded.now.date()
    date_from = today - timedelta(days=40)
    for steps in FUNNELS[:2]:
        parsed = [reference.Step.parse(s) for s in steps]
        conditions = ", ".join(
            f"event = '{step.name}'" + (f" AND JSONExtractString(props, '{step.key}') = '{step.value}'"
                                         if step.key else "") + (f" AND toDate(ts) <= '{today}'" if k == 0 else "")
            for k, step in enumerate(parsed))
        names = ", ".join(f"'{step.name}'" for step in parsed)
        for site_id in loaded.sites:
            got = loaded.rows(
                f"SELECT person_id, level FROM (SELECT clicktrail_person(site_id, anonymous_id, user_id) AS person_id,"
                f" windowFunnel({7 * DAY_S * 1000}, 'strict_increase')(toUInt64(toUnixTimestamp64Milli(ts)),"
                f" {conditions}) AS level FROM clicktrail.events WHERE site_id = '{site_id}' AND event IN ({names})"
                f" AND toDate(ts) >= '{date_from}' GROUP BY person_id) WHERE level > 0")
            chains = reference.funnel_chains(loaded.data.events, site_id, steps, 7 * DAY_S, date_from, today)
            assert {r["person_id"]: r["level"] for r in got} == {p: len(c) for p, c in chains.items()}


def test_a_funnel_without_steps_is_an_error(loaded: Loaded) -> None:
    with pytest.raises(AssertionError, match="steps: give at least one step"):
        loaded.gw.query("SELECT * FROM clicktrail.funnel(site = 'site_a', steps = [], window_s = 60,"
                        " date_from = '2026-01-01', date_to = '2026-12-31')")


# --- the lifecycle --------------------------------------------------------------------------------------------


def _check_lifecycle(rows: Rows, events: list[dict[str, Any]], sites: list[str], today: date) -> None:
    for site_id in sites:
        for date_from, date_to in _periods(today):
            params = f"site = '{site_id}', date_from = '{date_from}', date_to = '{date_to}'"
            assert_rows_equal(rows(f"SELECT * FROM clicktrail.lifecycle_funnel({params})"),
                              reference.lifecycle(events, site_id, date_from, date_to, RULES), ("stage",))
            assert_rows_equal(rows(f"SELECT * FROM clicktrail.lifecycle_by_channel({params})"),
                              reference.lifecycle(events, site_id, date_from, date_to, RULES, by_channel=True),
                              ("channel", "stage"))
            assert_rows_equal(rows(f"SELECT * FROM clicktrail.lifecycle_recycling({params})"),
                              reference.lifecycle_recycling(events, site_id, date_from, date_to), ("from_stage",))


def _check_influence(rows: Rows, events: list[dict[str, Any]], sites: list[str]) -> None:
    for site_id in sites:
        streams = sorted({e["props"]["stream_id"] for e in events
                          if e["site_id"] == site_id and e["event"] == "live_join"})
        for stream_id in streams:
            for days in (15, 30, 90):
                assert_rows_equal(rows(f"SELECT * FROM clicktrail.stream_influence(site = '{site_id}', stream ="
                                       f" '{stream_id}', window_days = {days})"),
                                  reference.stream_influence(events, site_id, stream_id, days), ("category",))


def test_lifecycle_funnel_by_channel_and_recycling(loaded: Loaded) -> None:
    _check_lifecycle(loaded.rows, loaded.data.events, loaded.sites, loaded.now.date())


def test_stream_influence(loaded: Loaded) -> None:
    _check_influence(loaded.rows, loaded.data.events, loaded.sites)


def test_the_generator_reaches_the_corners_of_the_pipeline(loaded: Loaded) -> None:
    events, today = loaded.data.events, loaded.now.date()
    stages = [e for e in events if e["event"] == "lead_stage"]
    assert {e["props"]["stage"] for e in stages} == {"lead", "mql", "sal", "sql", "opportunity", "won", "lost",
                                                     "nurture"}
    recycled = [r for site in loaded.sites for r in reference.lifecycle_recycling(events, site, today - timedelta(
        days=61), today)]
    assert any(r["returned"] for r in recycled) and any(r["returned"] < r["nurtured"] for r in recycled)
    lifecycle = [r for site in loaded.sites for r in reference.lifecycle(events, site, today - timedelta(days=61),
                                                                         today)]
    assert any(r["lost"] for r in lifecycle) and any(r["stage"] == "won" and r["persons"] for r in lifecycle)
    # A skip: someone reached SQL without a sal stage.
    assert any(lead.reached(4) is not None and not lead.stage_times("sal")
               for site in loaded.sites for lead in reference.leads(events, site).values())
    influence = [r for site in loaded.sites for stream in {e["props"]["stream_id"] for e in events if
                                                           e["site_id"] == site and e["event"] == "live_join"}
                 for r in reference.stream_influence(events, site, stream, 30)]
    assert any(r["category"] == "customer" and r["viewers"] for r in influence)
    assert any(r["opportunities"] for r in influence) and any(r["won_revenue"] for r in influence)


# --- costs and ROI --------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["day", "site_id", "channel", "cost"])  # any order of columns
        writer.writeheader()
        writer.writerows(rows)
    return path


def _import(loaded: Loaded, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "costs", "import", str(path), "--config",
                           str(loaded.gw.config)], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def costed(loaded: Loaded, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """The seed's gateway with the data's costs imported, one import after the other, by the command."""
    directory = tmp_path_factory.mktemp("costs")
    for i, rows in enumerate(loaded.data.costs):
        done = _import(loaded, _write_csv(directory / f"costs{i}.csv", rows))
        assert done.returncode == 0 and f"imported {len(rows)} cost rows" in done.stderr, done.stderr
    return loaded


def test_costs_are_imported_and_a_reimport_replaces(costed: Loaded) -> None:
    costs = reference.effective_costs(costed.data.costs)
    got = costed.rows("SELECT site_id, channel, toString(day) AS day, cost FROM clicktrail.channel_costs FINAL")
    assert {(r["site_id"], r["channel"], date.fromisoformat(r["day"])): r["cost"] for r in got} == costs
    assert sum(map(len, costed.data.costs)) > len(costs)  # the second import replaced some of the first's days


def test_channel_roi(costed: Loaded) -> None:
    today = costed.now.date()
    last_month_end = today.replace(day=1) - timedelta(days=1)
    costs = reference.effective_costs(costed.data.costs)
    paid_leads = 0
    for site_id in costed.sites:
        for date_from, date_to in [*_periods(today), (last_month_end.replace(day=1), last_month_end)]:
            got = costed.rows(f"SELECT * FROM clicktrail.channel_roi(site = '{site_id}', date_from = '{date_from}',"
                              f" date_to = '{date_to}')")
            want = reference.channel_roi(costed.data.events, costs, site_id, date_from, date_to, RULES)
            assert_rows_equal(got, want, ("channel",))
            paid_leads += sum(r["new_leads"] for r in want if r["cost"])
    assert paid_leads, "no lead came from a channel with costs: cpl went untested"


def test_a_bad_cost_file_imports_nothing_and_names_each_bad_line(costed: Loaded, tmp_path: Path) -> None:
    before = costed.rows("SELECT count() AS n FROM clicktrail.channel_costs")
    path = tmp_path / "bad.csv"
    path.write_text("site_id,channel,day,cost\nsite_a,search,2026-01-01,100\nnowhere,search,2026-01-01,1\n"
                    "site_a,,2026-01-01,1\nsite_a,search,2026-02-30,1\nsite_a,search,2026-01-02,-5\n"
                    "site_a,search,2026-01-03,lots\n")
    done = _import(costed, path)
    assert done.returncode == 1
    assert re.findall(r"bad\.csv:(\d+): (\w+)", done.stderr) == [
        ("3", "site_id"), ("4", "channel"), ("5", "day"), ("6", "cost"), ("7", "cost")]
    path.write_text("site,channel,day,cost\n")
    done = _import(costed, path)
    assert done.returncode == 1 and "the header must name the columns site_id, channel, day, cost" in done.stderr
    assert costed.rows("SELECT count() AS n FROM clicktrail.channel_costs") == before


# --- the cookbook of clickhouse/README.md -------------------------------------------------------------------------

FUNNEL_LEAKS = """\
SELECT channel, step, name, persons, conversion_from_previous, median_s_from_previous
FROM clicktrail.funnel_by_channel(site = 'demo', steps = ['page_view', 'registration', 'live_join[mode=live]'],
                                  window_s = 14 * 86400, date_from = today() - 30, date_to = today())
ORDER BY channel, step"""

COST_PER_LEAD = """\
SELECT channel, cost, new_leads, cpl, opportunities, won_revenue, roi
FROM clicktrail.channel_roi(site = 'demo', date_from = toStartOfMonth(today() - INTERVAL 1 MONTH),
                            date_to = toStartOfMonth(today()) - 1)
WHERE cost > 0
ORDER BY new_leads = 0, cpl, channel"""

WEBINAR_PIPELINE = """\
SELECT category, viewers, opportunities, opportunity_rate, won_revenue
FROM clicktrail.stream_influence(site = 'demo', stream = 'webinar-2026-12', window_days = 30)"""

NURTURE_RETURNS = """\
SELECT from_stage, nurtured, returned, return_rate, median_days_to_return
FROM clicktrail.lifecycle_recycling(site = 'demo', date_from = today() - 90, date_to = today())
WHERE from_stage != 'lead'"""

LEAD_FUNNEL = """\
SELECT stage, persons, conversion_from_previous, reference_conversion, reference_rate, median_days_from_previous, lost
FROM clicktrail.lifecycle_funnel(site = 'demo', date_from = today() - 90, date_to = today())"""


def _funnel_leaks(loaded: Loaded, site_id: str, today: date) -> list[dict[str, Any]]:
    rows = reference.funnel(loaded.data.events, site_id, ["page_view", "registration", "live_join[mode=live]"],
                            14 * DAY_S, today - timedelta(days=30), today, RULES, by_channel=True)
    return [{k: r[k] for k in ("channel", "step", "name", "persons", "conversion_from_previous",
                               "median_s_from_previous")} for r in rows]


def _cost_per_lead(loaded: Loaded, site_id: str, today: date) -> list[dict[str, Any]]:
    last_month_end = today.replace(day=1) - timedelta(days=1)
    rows = reference.channel_roi(loaded.data.events, reference.effective_costs(loaded.data.costs), site_id,
                                 last_month_end.replace(day=1), last_month_end, RULES)
    return sorted((r for r in rows if r["cost"] > 0), key=lambda r: (r["new_leads"] == 0, r["cpl"], r["channel"]))


def _nurture_returns(loaded: Loaded, site_id: str, today: date) -> list[dict[str, Any]]:
    return [r for r in reference.lifecycle_recycling(loaded.data.events, site_id, today - timedelta(days=90), today)
            if r["from_stage"] != "lead"]


def _lead_funnel(loaded: Loaded, site_id: str, today: date) -> list[dict[str, Any]]:
    return reference.lifecycle(loaded.data.events, site_id, today - timedelta(days=90), today)


#: name -> (query, the reference's answer, the columns that tell its rows apart)
COOKBOOK = {
    "where the registration funnel leaks, by channel": (FUNNEL_LEAKS, _funnel_leaks, ("channel", "step")),
    "what a lead costs per channel": (COST_PER_LEAD, _cost_per_lead, ("channel",)),
    "MQLs sent back to nurture who came back": (NURTURE_RETURNS, _nurture_returns, ("from_stage",)),
    "the lead funnel against the industry's": (LEAD_FUNNEL, _lead_funnel, ("stage",)),
}


def _cookbook_sql(sql: str, loaded: Loaded, site_id: str) -> str:
    """The query for a site of the data, with today() the day the data was generated for."""
    assert sql in (ROOT / "clickhouse" / "README.md").read_text(), "the README's query is not the one tested"
    return sql.replace("'demo'", f"'{site_id}'").replace("today()", f"toDate('{loaded.now.date()}')")


@pytest.mark.parametrize("name", COOKBOOK)
def test_cookbook(costed: Loaded, name: str) -> None:
    sql, expected, key = COOKBOOK[name]
    answered = 0
    for site_id in costed.sites:
        got = costed.rows(_cookbook_sql(sql, costed, site_id))
        want = expected(costed, site_id, costed.now.date())
        assert [tuple(r[k] for k in key) for r in got] == [tuple(r[k] for k in key) for r in want], site_id
        assert_rows_equal(got, want, key)
        answered += len(want)
    assert answered


def test_cookbook_opportunities_after_a_webinar(loaded: Loaded) -> None:
    opportunities = 0
    for site_id in loaded.sites:
        for stream_id in sorted({e["props"]["stream_id"] for e in loaded.data.events
                                 if e["site_id"] == site_id and e["event"] == "live_join"}):
            got = loaded.rows(_cookbook_sql(WEBINAR_PIPELINE, loaded, site_id).replace("'webinar-2026-12'",
                                                                                        f"'{stream_id}'"))
            want = reference.stream_influence(loaded.data.events, site_id, stream_id, 30)
            assert [r["category"] for r in got] == list(reference.CATEGORIES)
            assert_rows_equal(got, want, ("category",))
            opportunities += sum(r["opportunities"] for r in want)
    assert opportunities


# --- corners worked out by hand ------------------------------------------------------------------------------------

HAND_FUNNELS = (["step_a", "step_b", "step_c"], ["step_a", "step_b[kind=1]"], ["step_a", "step_a"])
HAND_STREAM = "hand-live"


def _hand_events(t: int) -> list[dict[str, Any]]:
    """Corners the generator may miss, on site 'hand', around ``t``; the values they give are in
    test_the_hand_made_corners."""
    made: list[dict[str, Any]] = []

    def ev(name: str, at: int, user: str = "", anon: str = "", props: dict[str, Any] | None = None,
           **fields: str) -> None:
        made.append({"event": name, "event_id": f"hand{len(made):03d}", "anonymous_id": anon, "user_id": user,
                     "session_id": "", "ts": at, **dict.fromkeys(TOUCH_FIELDS, ""), "url": "", "referrer": "",
                     "title": "", "props": props or {}, "site_id": "hand", **fields})

    # Funnels: f1 enters twice; only the second entry gets to step_c within the hour.
    ev("step_a", t, anon="f1")
    ev("step_a", t + 10 * MINUTE_MS, anon="f1")
    ev("step_b", t + 20 * MINUTE_MS, anon="f1")
    ev("step_c", t + 65 * MINUTE_MS, anon="f1")
    # f2: a kind that is the number 1 is no "1"; one event is never two steps.
    ev("step_a", t, anon="f2")
    ev("step_b", t + MINUTE_MS, anon="f2", props={"kind": 1})
    ev("step_b", t + 3 * MINUTE_MS, anon="f2", props={"kind": "1"})
    # The lifecycle: a skip to SQL, then lost; an MQL recycled twice; two wins, one without an amount.
    ev("lead_stage", t, "skip", props={"stage": "lead"})
    ev("lead_stage", t + 2 * DAY_MS, "skip", props={"stage": "sql"})
    ev("lead_stage", t + 5 * DAY_MS, "skip", props={"stage": "lost", "reason": "no budget"})
    ev("lead_stage", t, "recycled", props={"stage": "mql"})
    ev("lead_stage", t + DAY_MS, "recycled", props={"stage": "nurture", "reason": "not ready yet"})
    ev("lead_stage", t + 5 * DAY_MS, "recycled", props={"stage": "mql"})
    ev("lead_stage", t + 8 * DAY_MS, "recycled", props={"stage": "nurture"})
    ev("email_open", t - DAY_MS, "buyer", channel="hand_ch")
    ev("lead_stage", t, "buyer", props={"stage": "lead"})
    ev("lead_stage", t + 3 * DAY_MS, "buyer", props={"stage": "won", "amount": None})
    ev("lead_stage", t + 4 * DAY_MS, "buyer", props={"stage": "won", "amount": 5000})
    # Influence of HAND_STREAM: a customer (won before) whose opportunity falls on the window's last millisecond; a
    # new viewer (a form only after) with an opportunity the next day; an existing lead (a form before) without.
    ev("lead_stage", t - 10 * DAY_MS, "customer", props={"stage": "won", "amount": 1000})
    ev("live_join", t, "customer", props={"stream_id": HAND_STREAM, "view_id": "v1", "mode": "live"})
    ev("lead_stage", t + 30 * DAY_MS, "customer", props={"stage": "opportunity", "amount": 9000})
    ev("live_join", t + HOUR_MS, "newcomer", props={"stream_id": HAND_STREAM, "view_id": "v2", "mode": "replay"})
    ev("form_submit", t + 2 * HOUR_MS, "newcomer", props={"form_id": "replay-gate"})
    ev("lead_stage", t + DAY_MS, "newcomer", props={"stage": "opportunity"})
    ev("form_submit", t - DAY_MS, "known", props={"form_id": "contact"})
    ev("live_join", t + 3 * HOUR_MS, "known", props={"stream_id": HAND_STREAM, "view_id": "v3", "mode": "live"})
    return made


def test_the_hand_made_corners() -> None:
    t = 1_780_000_000_000
    hand = _hand_events(t)
    day = date(1970, 1, 1) + timedelta(days=t // DAY_MS)
    period = (day - timedelta(days=30), day + timedelta(days=30))
    chains = reference.funnel_chains(hand, "hand", HAND_FUNNELS[0], 3600, *period)
    # f1's first entry gets to step_c 65 minutes after it, its second 55; f2's step_b of kind 1 is a step_b.
    assert chains == {"f1": [t + 10 * MINUTE_MS, t + 20 * MINUTE_MS, t + 65 * MINUTE_MS], "f2": [t, t + MINUTE_MS]}
    # A kind that is the number 1 is no "1": f2's step 2 is the later step_b.
    assert reference.funnel_chains(hand, "hand", HAND_FUNNELS[1], 3600, *period)["f2"] == [t, t + 3 * MINUTE_MS]
    assert reference.funnel_chains(hand, "hand", HAND_FUNNELS[2], 3600, *period) == {
        "f1": [t, t + 10 * MINUTE_MS], "f2": [t]}
    lifecycle = {r["stage"]: r for r in reference.lifecycle(hand, "hand", *period)}
    # Cohort: skip (to sql), recycled (mql), buyer and customer (won), newcomer (opportunity). The skip passed MQL
    # and SAL at its SQL: no time between them, and it was lost there.
    assert [lifecycle[s]["persons"] for s in reference.LIFECYCLE] == [5, 5, 4, 4, 3, 2]
    assert lifecycle["sal"]["median_days_from_previous"] == 0.0 and lifecycle["sql"]["lost"] == 1
    assert reference.lifecycle_recycling(hand, "hand", *period) == [
        {"from_stage": "mql", "nurtured": 1, "returned": 1, "return_rate": 1.0, "median_days_to_return": 4.0}]
    roi = {r["channel"]: r for r in reference.channel_roi(hand, {("hand", "hand_ch", day): 2500.0}, "hand", *period)}
    assert (roi["hand_ch"]["new_leads"], roi["hand_ch"]["cpl"], roi["hand_ch"]["won_revenue"],
            roi["hand_ch"]["roi"]) == (1, 2500.0, 5000.0, 1.0)
    assert reference.stream_influence(hand, "hand", HAND_STREAM, 30) == [
        {"category": "new", "viewers": 1, "opportunities": 1, "opportunity_rate": 1.0, "won_revenue": 0.0},
        {"category": "existing_lead", "viewers": 1, "opportunities": 0, "opportunity_rate": 0.0, "won_revenue": 0.0},
        {"category": "customer", "viewers": 1, "opportunities": 1, "opportunity_rate": 1.0, "won_revenue": 0.0}]
    assert reference.stream_influence(hand, "hand", HAND_STREAM, 29)[2]["opportunities"] == 0


# --- backfills, on an engine of this process ----------------------------------------------------------------------

MIGRATION = ROOT / "clickhouse" / "migrations" / "0011_lead_stages.sql"


def test_the_lead_stages_rollup_is_backfilled_and_a_second_backfill_doubles_nothing(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today, now_ms = now.date(), int(now.timestamp() * 1000)
    events = generate(23, now_ms).events + _hand_events(now_ms - 35 * DAY_MS)
    sites = ["hand", "site_a"]  # the corners, and a generated site (all of them: through the gateway)
    store = Store(tmp_path / "data", referrer_channels=RULES)
    store.open()

    def rows(sql: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in store.query(sql, "JSONEachRow").decode().splitlines()]

    def check() -> None:
        _check_lifecycle(rows, events, sites, today)
        _check_influence(rows, events, sites)
        costs = {("hand", "hand_ch", today - timedelta(days=35)): 2500.0}
        for date_from, date_to in _periods(today):
            assert_rows_equal(rows(f"SELECT * FROM clicktrail.channel_roi(site = 'hand', date_from = '{date_from}',"
                                   f" date_to = '{date_to}')"),
                              reference.channel_roi(events, costs, "hand", date_from, date_to), ("channel",))
            for steps in HAND_FUNNELS:
                assert_rows_equal(rows(f"SELECT * FROM clicktrail.funnel(site = 'hand', steps = {_quote(steps)},"
                                       f" window_s = 3600, date_from = '{date_from}', date_to = '{date_to}')"),
                                  reference.funnel(events, "hand", steps, 3600, date_from, date_to), ("step",))

    try:
        store.query("INSERT INTO clicktrail.events FORMAT JSONEachRow\n"
                    + "\n".join(orjson.dumps(_stored(e, now_ms)).decode() for e in events), readonly=False)
        store.query(f"INSERT INTO clicktrail.channel_costs VALUES ('hand', 'hand_ch', '{today - timedelta(days=35)}',"
                    " 2500)", readonly=False)
        store.refresh_persons()  # as the loader does after each load
        # An install that stored these events before migration 0011: the migrator backfills lead_stages.
        store.query("DROP TABLE clicktrail.lead_stages_mv", readonly=False)
        store.query("DROP TABLE clicktrail.lead_stages", readonly=False)
        store.query("DELETE FROM clicktrail.schema_migrations WHERE version = 11", readonly=False)
        assert store.migrate() == [MIGRATION.stem]
        check()
        # The backfill again (a crash before the migration was recorded): every stage twice, unmerged.
        store.query("SYSTEM STOP MERGES clicktrail.lead_stages", readonly=False)
        (backfill,) = [m for st in split_statements(MIGRATION.read_text()) if (m := BACKFILL.match(st))]
        store.query(f"INSERT INTO {backfill['target']} {backfill['select']}", readonly=False)
        stages = sum(e["event"] == "lead_stage" for e in events)
        assert rows("SELECT count() AS n FROM clicktrail.lead_stages") == [{"n": 2 * stages}]
        check()
    finally:
        store.close()
