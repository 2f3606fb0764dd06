"""The analytics reference on small cases worked out by hand, one per definition and corner; and the generator's
promises (determinism, every feature present, events the gateway accepts and stores as they are).

The hand cases are the definitions' documentation: each expected value is derived in the comments beside it, so
a reader (or the SQL's author) can check a reading of a definition against them without running anything.
"""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import orjson
import pytest

from gateway.ingest.contract import decode_event
from gateway.ingest.enrich import URL_FIELDS, split_url
from tests.analytics import reference as r
from tests.analytics.generate import TOUCH_FIELDS, WIRE_FIELDS, Dataset, generate

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOST = "https://www.example.cn"
NOW = 1_780_000_000_000
ALL_YEAR = (date(2025, 1, 1), date(2026, 12, 31))

_ids = itertools.count()


def ev(name: str, ts: int, anon: str = "", user: str = "", *, site: str = "s", url: str = "", referrer: str = "",
       session: str = "", props: dict[str, Any] | None = None, **fields: str) -> dict[str, Any]:
    """A stored event; event ids follow creation order (zero-padded, so they sort the same way as strings)."""
    event = {"event": name, "event_id": f"e{next(_ids):05d}", "anonymous_id": anon, "user_id": user,
             "session_id": session, "ts": ts, **{f: "" for f in TOUCH_FIELDS}, "url": url, "referrer": referrer,
             "title": "", "props": props or {}, "site_id": site}
    event.update(fields)
    return event


def pv(ts: int, anon: str = "", user: str = "", path: str = "/", referrer: str = "", **fields: Any) -> dict[str, Any]:
    return ev("page_view", ts, anon, user, url=HOST + path, referrer=referrer, **fields)


# --- persons ------------------------------------------------------------------------------------------------------


def test_an_identify_weeks_later_links_the_anonymous_visits_before_and_after_it() -> None:
    visit = pv(T0, "a1", path="/?ch=poster_qr_3", channel="poster_qr_3")
    form = ev("form_submit", T0 + HOUR, "a1", url=HOST + "/contact", channel="poster_qr_3",
              props={"form_id": "contact"})
    identify = ev("identify", T0 + 21 * DAY, "a1", "u1")  # e.g. the backend matched the lead three weeks later
    later = pv(T0 + 30 * DAY, "a1", path="/pricing", channel="poster_qr_3")  # the browser itself stays anonymous
    mql = ev("lead_stage", T0 + 25 * DAY, user="u1", props={"stage": "mql"})  # from the CRM: user_id only
    events = [visit, form, identify, later, mql]
    links = r.identity_map(events)
    assert [r.person_of(e, links) for e in events] == ["u1"] * 5
    assert r.identities(events) == [
        {"site_id": "s", "anonymous_id": "a1", "person_id": "u1", "identified_at": T0 + 21 * DAY}]
    assert r.touches(events) == [("s", "u1", T0, "poster_qr_3", "")]
    # The MQL is credited to the poster through the link; before the identify came, the same data had the poster
    # touch a1's and the MQL direct.
    assert r.attribution(events, "s", "lead_stage:mql", "last_touch", *ALL_YEAR) == {"poster_qr_3": 1.0}
    without = [visit, form, later, mql]
    assert r.touches(without) == [("s", "a1", T0, "poster_qr_3", "")]
    assert r.attribution(without, "s", "lead_stage:mql", "last_touch", *ALL_YEAR) == {"(direct)": 1.0}


def test_the_earliest_identify_of_an_anonymous_id_wins_and_an_own_user_id_beats_any_link() -> None:
    visit = pv(T0, "a2")
    login = ev("identify", T0 + 5 * DAY, "a2", "u2")
    earlier = ev("identify", T0 + 2 * DAY, "a2", "u3")  # arrives after the other, but happened before it
    own = pv(T0 + 6 * DAY, "a2", "u2")
    tie_9, tie_10 = ev("identify", T0, "a3", "u9"), ev("identify", T0, "a3", "u10")
    no_anon = ev("identify", T0, "", "u4")  # an identify links only with both ids
    links = r.identity_map([visit, login, earlier, own, tie_9, tie_10, no_anon])
    # a3: same ts, so the smallest user_id: "u10" < "u9" as strings.
    assert links == {("s", "a2"): (T0 + 2 * DAY, "u3"), ("s", "a3"): (T0, "u10")}
    assert r.person_of(visit, links) == "u3"
    assert r.person_of(own, links) == "u2"
    assert r.person_of(login, links) == "u2"  # an identify is an event of its own user_id
    # Links are per site: the same anonymous id on another site is its own person.
    assert r.person_of(pv(T0, "a2", site="other"), links) == "a2"


# --- touches and channels -----------------------------------------------------------------------------------------


def test_stamped_fields_and_events_other_than_page_view_with_a_url_are_not_touches() -> None:
    landing = pv(T0, "a", path="/wp?ch=wechat_group_7&sharer=emp_042", channel="wechat_group_7", sharer="emp_042")
    assert (r.channel_of_touch(landing), r.sharer_of_touch(landing)) == ("wechat_group_7", "emp_042")
    stamped_internal = pv(T0 + MIN, "a", path="/pricing", referrer=HOST + "/wp?ch=wechat_group_7",
                          channel="wechat_group_7", sharer="emp_042")
    stamped_direct = pv(T0 + DAY, "a", path="/", channel="wechat_group_7")
    leave_on_landing = ev("page_leave", T0 + 2 * MIN, "a", url=landing["url"], referrer="https://www.baidu.com/",
                          channel="wechat_group_7", props={"engaged_ms": 1, "scroll_pct": 1})
    assert [r.channel_of_touch(e) for e in (stamped_internal, stamped_direct, leave_on_landing)] == ["", "", ""]
    # The URL wins over the fields: a new ch with the old stamp still in the event is the new channel.
    assert r.channel_of_touch(pv(T0, "a", path="/?ch=poster_qr_3", channel="wechat_group_7")) == "poster_qr_3"
    # An empty ch= is no ch; ch beats utm_source.
    assert r.channel_of_touch(pv(T0, "a", path="/?ch=&utm_source=baidu")) == "baidu"
    assert r.channel_of_touch(pv(T0, "a", path="/?utm_source=baidu&ch=booth_expo_5")) == "booth_expo_5"
    # Without a URL (server side, pixels): the channel field, else utm_source; the sharer field.
    email = ev("email_open", T0, user="u", channel="edm_invite", utm_source="edm", sharer="emp_007")
    sms = ev("sms_click", T0, user="u", utm_source="sms", utm_medium="reminder")
    crm = ev("lead_stage", T0, user="u", props={"stage": "lead"})
    assert [r.channel_of_touch(e) for e in (email, sms, crm)] == ["edm_invite", "sms", ""]
    assert r.sharer_of_touch(email) == "emp_007"


@pytest.mark.parametrize(("referrer", "channel"), [
    ("https://www.baidu.com/link?url=x", "search"),
    ("https://m.sogou.com/web?query=crm", "search"),
    ("https://weixin.sogou.com/weixin?query=x", "search"),  # Sogou's WeChat search is a search engine
    ("https://www.so.com/s?q=x", "search"),
    ("https://m.sm.cn/s?q=x", "search"),
    ("https://www.bing.com/search?q=x", "search"),
    ("https://cn.bing.com/search?q=x", "search"),
    ("https://www.google.com/", "search"),
    ("https://www.google.com.hk/", "search"),
    ("https://www.google.de/", "www.google.de"),  # not in the table: no google.<tld> wildcard
    ("https://mp.weixin.qq.com/s/abc", "wechat"),
    ("https://weixin.qq.com/", "wechat"),
    ("https://qq.com/", "wechat"),
    ("https://weibo.com/u/1", "social"),
    ("https://m.weibo.cn/status/1", "social"),
    ("https://www.zhihu.com/question/1", "social"),
    ("https://www.douyin.com/video/1", "social"),
    ("https://www.linkedin.com/feed/", "social"),
    ("https://partner.example.org/events", "partner.example.org"),
    ("https://News.Example.NET:8443/a", "news.example.net"),  # lower-case, no port
    ("https://xso.com/", "xso.com"),  # not a subdomain of so.com
    ("https://example.cn/", "example.cn"),  # another host than www.example.cn, though the same company
    (HOST + "/pricing", ""),  # internal navigation
    ("", ""),  # direct
])
def test_the_channel_of_a_referrer(referrer: str, channel: str) -> None:
    assert r.channel_of_touch(pv(T0, "a", path="/", referrer=referrer)) == channel


def test_site_rules_come_before_the_table_but_after_the_url() -> None:
    rules = {"partner.example.org": "partner_acme", "weixin.qq.com": "wechat_official"}
    assert r.channel_of_touch(pv(T0, "a", referrer="https://partner.example.org/x"), rules) == "partner_acme"
    assert r.channel_of_touch(pv(T0, "a", referrer="https://mp.weixin.qq.com/s/1"), rules) == "wechat_official"
    assert r.channel_of_touch(pv(T0, "a", referrer="https://qq.com/"), rules) == "wechat"
    assert r.channel_of_touch(pv(T0, "a", path="/?ch=x", referrer="https://partner.example.org/"), rules) == "x"
    # In the views, the rules are per site.
    events = [pv(T0, "a", referrer="https://partner.example.org/"),
              pv(T0, "a", site="t", referrer="https://partner.example.org/")]
    assert [t.channel for t in r.touches(events, {"s": rules})] == ["partner_acme", "partner.example.org"]


def test_the_last_touch_within_90_days() -> None:
    before = pv(T0 - 1, "p", path="/x")
    a = pv(T0, "p", path="/?ch=a", channel="a")
    b = pv(T0 + 10 * DAY, "p", referrer="https://www.baidu.com/s")
    between = ev("download", T0 + 5 * DAY, "p", url=HOST + "/wp", channel="a", props={"file_url": "f"})
    stamped = pv(T0 + 11 * DAY, "p", path="/pricing", referrer=HOST + "/", channel="a")  # the stamp says a
    late = pv(T0 + 95 * DAY, "p", path="/pricing")  # a is 95 days old, b 85
    q_touch = pv(T0, "q", path="/?ch=c", channel="c")
    q_at_90 = pv(T0 + 90 * DAY, "q", path="/y")  # the bound is included
    q_after_90 = pv(T0 + 90 * DAY + 1, "q", path="/y")
    events = [before, a, b, between, stamped, late, q_touch, q_at_90, q_after_90]
    channels = r.last_touch_channels(events)
    assert [channels["s", e["event_id"]] for e in events] == [
        "(direct)", "a", "search", "a", "search", "search", "c", "c", "(direct)"]


# --- attribution --------------------------------------------------------------------------------------------------

# Four sites, one path each; conversions are form_submits.
#   one:    a (day 0) -> conversion day 7
#   two:    a (day 0, shared by emp_1), b (day 7) -> conversion day 14
#   four:   a (day 0), b (day 7), c (day 14), b (day 21) -> conversion day 21, at the same ms as the last touch
#   direct: one conversion without any touch, one whose only touch is 91 days old
# time_decay: weight 2^-(age / 7 days); two: ages 14, 7 days -> 1/4, 1/2 -> a 1/3, b 2/3;
# four: ages 21, 14, 7, 0 days -> 1/8, 1/4, 1/2, 1 (sum 15/8) -> a 1/15, b (2 + 8)/15, c 4/15.
# u_shaped on four: a 0.4, the two between 0.1 each (c, and b's first touch), b's last touch 0.4 -> b 0.5.
ATTRIBUTION = {
    "one": {m: {"a": 1.0} for m in r.MODELS},
    "two": {"first_touch": {"a": 1.0}, "last_touch": {"b": 1.0}, "linear": {"a": 0.5, "b": 0.5},
            "u_shaped": {"a": 0.5, "b": 0.5}, "time_decay": {"a": 1 / 3, "b": 2 / 3}},
    "four": {"first_touch": {"a": 1.0}, "last_touch": {"b": 1.0}, "linear": {"a": 0.25, "b": 0.5, "c": 0.25},
             "u_shaped": {"a": 0.4, "b": 0.5, "c": 0.1}, "time_decay": {"a": 1 / 15, "b": 10 / 15, "c": 4 / 15}},
    "direct": {m: {"(direct)": 2.0} for m in r.MODELS},
}


def _paths() -> list[dict[str, Any]]:
    def touch(site: str, day: int, ch: str, sharer: str = "") -> dict[str, Any]:
        query = f"?ch={ch}" + (f"&sharer={sharer}" if sharer else "")
        return pv(T0 + day * DAY, "p", site=site, path="/" + query, channel=ch, sharer=sharer)

    def conversion(site: str, day: int) -> dict[str, Any]:
        return ev("form_submit", T0 + day * DAY, "p", site=site, url=HOST + "/contact", props={"form_id": "c"})

    return [
        touch("one", 0, "a"), conversion("one", 7),
        touch("two", 0, "a", "emp_1"), touch("two", 7, "b"), conversion("two", 14),
        touch("four", 0, "a"), touch("four", 7, "b"), touch("four", 14, "c"), touch("four", 21, "b"),
        conversion("four", 21),
        conversion("direct", 0), touch("direct", 9, "old"), conversion("direct", 100),
    ]


@pytest.mark.parametrize("model", r.MODELS)
@pytest.mark.parametrize("site", list(ATTRIBUTION))
def test_attribution_models(site: str, model: str) -> None:
    result = r.attribution(_paths(), site, "form_submit", model, *ALL_YEAR)
    assert result == pytest.approx(ATTRIBUTION[site][model])
    assert sum(result.values()) == pytest.approx(2.0 if site == "direct" else 1.0)


def test_attribution_by_sharer() -> None:
    events = _paths()
    assert r.attribution_by_sharer(events, "two", "form_submit", "linear", *ALL_YEAR) == {"emp_1": 0.5, "(none)": 0.5}
    assert r.attribution_by_sharer(events, "two", "form_submit", "last_touch", *ALL_YEAR) == {"(none)": 1.0}
    assert r.attribution_by_sharer(events, "direct", "form_submit", "linear", *ALL_YEAR) == {"(none)": 2.0}


def test_every_conversion_counts_and_only_those_in_the_dates_and_stage() -> None:
    touch = pv(T0, "p", path="/?ch=a", channel="a")
    twice = [ev("lead_stage", T0 + 7 * DAY, user="u", props={"stage": "mql"}) for _ in range(2)]
    sql = ev("lead_stage", T0 + 7 * DAY, user="u", props={"stage": "sql"})
    last_ms = ev("lead_stage", T0 + 8 * DAY - 1, user="u", props={"stage": "mql"})  # 2026-01-08T23:59:59.999Z
    identify = ev("identify", T0, "p", "u")
    events = [touch, identify, *twice, sql, last_ms]
    assert r.attribution(events, "s", "lead_stage:mql", "first_touch", date(2026, 1, 8), date(2026, 1, 8)) == {
        "a": 3.0}
    assert r.attribution(events, "s", "lead_stage", "first_touch", date(2026, 1, 8), date(2026, 1, 8)) == {"a": 4.0}
    assert r.attribution(events, "s", "lead_stage:mql", "first_touch", date(2026, 1, 1), date(2026, 1, 7)) == {}
    with pytest.raises(ValueError, match="unknown attribution model"):
        r.attribution(events, "s", "lead_stage", "position", *ALL_YEAR)


# --- live streams -------------------------------------------------------------------------------------------------

S = T0 + 10 * HOUR  # the stream starts on a minute


def view(anon: str, user: str, view_id: str, mode: str, join: int, beats: int, duration: float | None = None
         ) -> list[dict[str, Any]]:
    """live_join at ``join``, heartbeat k (k = 1..beats) 10 k s later with watched_ms 10 000 k, live_leave 10 s
    after the last."""
    base = {"stream_id": "w1", "view_id": view_id, "mode": mode}
    events = [ev("live_join", join, anon, user, props=dict(base))]
    for k in range(1, beats + 1):
        props: dict[str, Any] = {**base, "watched_ms": 10_000 * k}
        if duration:
            props["duration_s"] = duration
        events.append(ev("live_heartbeat", join + 10 * SEC * k, anon, user, props=props))
    events.append(ev("live_leave", join + 10 * SEC * (beats + 1), anon, user, props=dict(base)))
    return events


def _stream() -> list[dict[str, Any]]:
    """Three viewers of stream w1 and what they did around it:

    A (anon-a): came by a poster, registered the day before, watched live from S+2s: 13 heartbeats to 130 s at
    S+12s .. S+132s, duration 150 s; the 3rd heartbeat was lost, the 5th arrived twice, the 4th after the leave.
    B (ub): registered two days before without a touch, watched the replay the next day: 14 heartbeats to 140 s,
    duration 150 s; an email touch five days after the stream.
    C (anon-c): came from Zhihu a minute after the start without registering, watched live from S+65s: 9
    heartbeats to 90 s at S+75s .. S+155s, no duration.
    X (anon-x) clicked "add to calendar" without ever watching; Z (anon-z) left a view whose other events were lost.
    """
    a = view("anon-a", "", "va", "live", S + 2 * SEC, 13, duration=150)
    lost = next(e for e in a if e["props"].get("watched_ms") == 30_000)
    fourth = next(e for e in a if e["props"].get("watched_ms") == 40_000)
    fifth = next(e for e in a if e["props"].get("watched_ms") == 50_000)
    a = [e for e in a if e is not lost and e is not fourth] + [fourth, dict(fifth)]
    return [
        pv(S - DAY - MIN, "anon-a", path="/live/w1?ch=poster_qr_3", channel="poster_qr_3"),
        ev("registration", S - DAY, "anon-a", props={"stream_id": "w1"}),
        *a,
        ev("interaction", S + 50 * SEC, "anon-a", props={"kind": "like", "stream_id": "w1"}),
        ev("download", S + HOUR, "anon-a", url=HOST + "/wp", props={"file_url": HOST + "/wp.pdf"}),
        pv(S + 3 * DAY, "anon-a", path="/pricing"),
        pv(S + 2 * SEC + 14 * DAY + 1, "anon-a", path="/pricing"),  # 1 ms after A's 14 days
        ev("registration", S - 2 * DAY, "anon-b", "ub", props={"stream_id": "w1"}),
        ev("form_submit", S + DAY, "anon-b", "ub", props={"form_id": "replay-gate"}),  # at t0: not after it
        *view("anon-b", "ub", "vb", "replay", S + DAY, 14, duration=150),
        ev("form_submit", S + 15 * DAY, "anon-b", "ub", props={"form_id": "contact"}),  # t0 + 14 days: counted
        ev("email_open", S + 5 * DAY, user="ub", channel="edm_invite"),
        pv(S + MIN, "anon-c", path="/live/w1/watch", referrer="https://www.zhihu.com/question/1"),
        *view("anon-c", "", "vc", "live", S + 65 * SEC, 9),
        ev("interaction", S + 80 * SEC, "anon-c", props={"kind": "comment", "stream_id": "w1"}),
        ev("interaction", S + 100 * SEC, "anon-c", props={"kind": "comment", "stream_id": "w1"}),
        ev("interaction", S - DAY + MIN, "anon-x", props={"kind": "cta", "stream_id": "w1"}),
        ev("live_leave", S + 200 * SEC, "anon-z", props={"stream_id": "w1", "view_id": "vz", "mode": "live"}),
    ]


def test_live_stream_stats_on_three_viewers() -> None:
    assert r.live_stream_stats(_stream()) == [{
        "site_id": "s", "stream_id": "w1",
        "registrants": 2,  # A, B
        "viewers": 3,  # A, B, C (Z's view has no join or heartbeat)
        "live_viewers": 2,  # A, C
        "replay_viewers": 1,  # B
        "attendees": 1,  # A
        "attendance_rate": 0.5,
        "no_shows": 1,  # B
        "no_show_replay_viewers": 1,  # B
        "watch_ms_total": 360_000,  # 130 000 (the lost and repeated heartbeats change nothing) + 140 000 + 90 000
        "avg_watch_ms": 120_000.0,
        "live_watch_ms_total": 220_000,
        "replay_watch_ms_total": 140_000,
        "peak_concurrency": 2,  # minute 0: A; minutes 1 and 2: A and C
        "completion_rate": 0.5,  # known durations: A 130/150 = 0.87, B 140/150 = 0.93 >= 0.9; C unknown
        "interactors": 2,  # A, C (X is no viewer)
        "interaction_rate": 2 / 3,
        "first_ts": S - 2 * DAY,  # B's registration
        "last_ts": S + DAY + 150 * SEC,  # B's live_leave
    }]
    assert r.live_concurrency(_stream()) == [
        {"site_id": "s", "stream_id": "w1", "minute": S, "viewers": 1},
        {"site_id": "s", "stream_id": "w1", "minute": S + MIN, "viewers": 2},
        {"site_id": "s", "stream_id": "w1", "minute": S + 2 * MIN, "viewers": 2},
    ]
    assert r.live_views(_stream()) == [
        {"site_id": "s", "stream_id": "w1", "view_id": "va", "person_id": "anon-a", "mode": "live",
         "watch_ms": 130_000, "duration_s": 150, "completion": 130_000 / 150_000},
        {"site_id": "s", "stream_id": "w1", "view_id": "vb", "person_id": "ub", "mode": "replay",
         "watch_ms": 140_000, "duration_s": 150, "completion": 140_000 / 150_000},
        {"site_id": "s", "stream_id": "w1", "view_id": "vc", "person_id": "anon-c", "mode": "live",
         "watch_ms": 90_000, "duration_s": None, "completion": None},
    ]
    rate = 1 / 3  # one interactor of three viewers
    assert r.live_interactions(_stream()) == [
        {"site_id": "s", "stream_id": "w1", "kind": "comment", "interactions": 2, "interactors": 1,
         "interaction_rate": rate},
        {"site_id": "s", "stream_id": "w1", "kind": "cta", "interactions": 1, "interactors": 0,
         "interaction_rate": 0.0},
        {"site_id": "s", "stream_id": "w1", "kind": "like", "interactions": 1, "interactors": 1,
         "interaction_rate": rate},
    ]


def test_live_retention() -> None:
    # live: A 130 s and C 90 s; the longest has 2 whole minutes, so m = 0, 1, 2. replay: B 140 s.
    row = {"site_id": "s", "stream_id": "w1"}
    assert r.live_retention(_stream()) == [
        {**row, "mode": "live", "minute": 0, "views": 2, "share": 1.0},
        {**row, "mode": "live", "minute": 1, "views": 2, "share": 1.0},
        {**row, "mode": "live", "minute": 2, "views": 1, "share": 0.5},
        {**row, "mode": "replay", "minute": 0, "views": 1, "share": 1.0},
        {**row, "mode": "replay", "minute": 1, "views": 1, "share": 1.0},
        {**row, "mode": "replay", "minute": 2, "views": 1, "share": 1.0},
    ]
    # Exactly 60 s is a whole minute; a view without heartbeat counts at minute 0 only.
    edges = [*view("x", "", "v1", "live", S, 6)[:-1], *view("y", "", "v2", "live", S, 5)[:-1],
             ev("live_heartbeat", S + 59 * SEC, "y", props={"stream_id": "w1", "view_id": "v2", "mode": "live",
                                                            "watched_ms": 59_999}),
             view("z", "", "v3", "live", S, 0)[0]]
    assert [(e["minute"], e["views"], e["share"]) for e in r.live_retention(edges)] == [(0, 3, 1.0), (1, 1, 1 / 3)]


def test_stream_audience() -> None:
    row = {"site_id": "s", "stream_id": "w1"}
    assert r.stream_audience(_stream()) == [
        # t0 = the join at S+2s; after it the download and the page at S+3d; the page at t0 + 14 days + 1 ms is
        # out, and so is the landing before t0.
        {**row, "person_id": "anon-a", "registered_at": S - DAY, "registration_channel": "poster_qr_3",
         "first_touch_channel": "poster_qr_3", "live_watch_ms": 130_000, "replay_watch_ms": 0, "interactions": 1,
         "pages_after": 1, "downloads_after": 1, "forms_after": 0},
        # Not registered; the Zhihu page view came before t0 = S+65s.
        {**row, "person_id": "anon-c", "registered_at": None, "registration_channel": None,
         "first_touch_channel": "social", "live_watch_ms": 90_000, "replay_watch_ms": 0, "interactions": 2,
         "pages_after": 0, "downloads_after": 0, "forms_after": 0},
        # Registered without any touch; the first touch ever came later (the email); t0 = the replay's join.
        {**row, "person_id": "ub", "registered_at": S - 2 * DAY, "registration_channel": "(direct)",
         "first_touch_channel": "edm_invite", "live_watch_ms": 0, "replay_watch_ms": 140_000, "interactions": 0,
         "pages_after": 0, "downloads_after": 0, "forms_after": 1},
    ]


# --- sessions -----------------------------------------------------------------------------------------------------


def test_sessions_bounces_and_channel_sessions() -> None:
    def in_session(session: str, e: dict[str, Any]) -> dict[str, Any]:
        return {**e, "session_id": session}

    leave = {"engaged_ms": 20_000, "scroll_pct": 50}
    stamp = {"utm_source": "baidu", "utm_term": "crm"}
    events = [
        # s1: a landing from a Baidu ad, then its page_leave: a bounce.
        in_session("s1", pv(T0, "r", path="/blog?utm_source=baidu&utm_term=crm",
                            referrer="https://www.baidu.com/s", **stamp)),
        in_session("s1", ev("page_leave", T0 + 30 * SEC, "r", url=HOST + "/blog", props=leave, **stamp)),
        # s2: back directly two hours later, the stamp still on: two pages and a form, entry channel still baidu
        # (the last touch) and utm_term the first page's (stamped) field.
        in_session("s2", pv(T0 + 2 * HOUR, "r", path="/pricing", **stamp)),
        in_session("s2", pv(T0 + 2 * HOUR + MIN, "r", path="/contact", referrer=HOST + "/pricing", **stamp)),
        in_session("s2", ev("form_submit", T0 + 2 * HOUR + 2 * MIN, "r", url=HOST + "/contact",
                            props={"form_id": "contact"}, **stamp)),
        # s3: a page left open without input for over 30 minutes: only its page_leave.
        in_session("s3", ev("page_leave", T0 + 5 * HOUR, "r", url=HOST + "/contact", props=leave, **stamp)),
        # s4: the next day from a WeChat group: one page and a download, not a bounce.
        in_session("s4", pv(T0 + DAY, "r", path="/?ch=wechat_group_7", channel="wechat_group_7")),
        in_session("s4", ev("download", T0 + DAY + 20 * SEC, "r", url=HOST + "/?ch=wechat_group_7",
                            channel="wechat_group_7", props={"file_url": HOST + "/wp.pdf"})),
        # s5: a lone page view (the tab closed before its page_leave got out): a bounce.
        in_session("s5", pv(T0 + 3 * DAY, "r", path="/blog", channel="wechat_group_7")),
        ev("email_open", T0 + 3 * HOUR, user="u", channel="edm_invite"),  # no session
    ]
    row = {"site_id": "s", "anonymous_id": "r"}
    assert r.sessions(events) == [
        {**row, "session_id": "s1", "day": date(2026, 1, 1), "start": T0, "end": T0 + 30 * SEC, "duration_s": 30.0,
         "pageviews": 1, "entry_path": "/blog", "entry_channel": "baidu", "entry_utm_term": "crm", "bounce": True},
        {**row, "session_id": "s2", "day": date(2026, 1, 1), "start": T0 + 2 * HOUR, "end": T0 + 2 * HOUR + 2 * MIN,
         "duration_s": 120.0, "pageviews": 2, "entry_path": "/pricing", "entry_channel": "baidu",
         "entry_utm_term": "crm", "bounce": False},
        {**row, "session_id": "s3", "day": date(2026, 1, 1), "start": T0 + 5 * HOUR, "end": T0 + 5 * HOUR,
         "duration_s": 0.0, "pageviews": 0, "entry_path": "", "entry_channel": "baidu", "entry_utm_term": "",
         "bounce": False},
        {**row, "session_id": "s4", "day": date(2026, 1, 2), "start": T0 + DAY, "end": T0 + DAY + 20 * SEC,
         "duration_s": 20.0, "pageviews": 1, "entry_path": "/", "entry_channel": "wechat_group_7",
         "entry_utm_term": "", "bounce": False},
        {**row, "session_id": "s5", "day": date(2026, 1, 4), "start": T0 + 3 * DAY, "end": T0 + 3 * DAY,
         "duration_s": 0.0, "pageviews": 1, "entry_path": "/blog", "entry_channel": "wechat_group_7",
         "entry_utm_term": "", "bounce": True},
    ]
    site = {"site_id": "s"}
    assert r.channel_sessions(events) == [
        {**site, "day": date(2026, 1, 1), "channel": "baidu", "utm_term": "", "sessions": 1, "bounces": 0,
         "bounce_rate": 0.0, "pages_per_session": 0.0, "avg_duration_s": 0.0},
        # s1 and s2: (30 + 120) / 2 s, (1 + 2) / 2 pages
        {**site, "day": date(2026, 1, 1), "channel": "baidu", "utm_term": "crm", "sessions": 2, "bounces": 1,
         "bounce_rate": 0.5, "pages_per_session": 1.5, "avg_duration_s": 75.0},
        {**site, "day": date(2026, 1, 2), "channel": "wechat_group_7", "utm_term": "", "sessions": 1, "bounces": 0,
         "bounce_rate": 0.0, "pages_per_session": 1.0, "avg_duration_s": 20.0},
        {**site, "day": date(2026, 1, 4), "channel": "wechat_group_7", "utm_term": "", "sessions": 1, "bounces": 1,
         "bounce_rate": 1.0, "pages_per_session": 1.0, "avg_duration_s": 0.0},
    ]


# --- content ------------------------------------------------------------------------------------------------------


def test_content_downloads_and_sharers() -> None:
    def leave(ts: int, anon: str, path: str, engaged: int, scroll: float, **fields: str) -> dict[str, Any]:
        return ev("page_leave", ts, anon, url=HOST + path, props={"engaged_ms": engaged, "scroll_pct": scroll},
                  **fields)

    def download(ts: int, anon: str, file: str) -> dict[str, Any]:
        return ev("download", ts, anon, url=HOST + "/wp", props={"file_url": HOST + file})

    events = [
        # p1: first touch shared by emp_1, registers; a later touch shared by emp_2 does not make emp_2 its sharer.
        pv(T0, "p1", path="/wp?ch=x&sharer=emp_1#top", channel="x", sharer="emp_1"),
        leave(T0 + MIN, "p1", "/wp?ch=x&sharer=emp_1#top", 1000, 90, channel="x", sharer="emp_1"),
        pv(T0 + 2 * MIN, "p1", path="/wp", referrer=HOST + "/", channel="x", sharer="emp_1"),
        leave(T0 + 3 * MIN, "p1", "/wp", 2000, 89.9, channel="x", sharer="emp_1"),
        ev("registration", T0 + 4 * MIN, "p1", props={"stream_id": "w1"}),
        pv(T0 + DAY, "p1", path="/?ch=y&sharer=emp_2", channel="y", sharer="emp_2"),
        # p2: first touch shared by emp_2, leaves a lead.
        pv(T0, "p2", path="/wp?ch=y&sharer=emp_2", channel="y", sharer="emp_2"),
        ev("form_submit", T0 + MIN, "p2", url=HOST + "/contact", props={"form_id": "contact"}),
        # u3: first touched by an email its sharer emp_3 sent; registers.
        ev("email_open", T0, user="u3", channel="edm_invite", sharer="emp_3"),
        ev("registration", T0 + HOUR, user="u3", props={"stream_id": "w1"}),
        leave(T0, "p3", "/pricing", 500, 100),  # a page_leave without its page_view
        download(T0, "p1", "/wp.pdf"), download(T0 + 1, "p1", "/wp.pdf"), download(T0, "p2", "/wp.pdf"),
        download(T0, "p2", "/case.docx"),
    ]
    assert r.content_engagement(events) == [
        {"site_id": "s", "url_path": "/", "views": 1, "readers": 1, "avg_engaged_ms": 0.0, "read_through_rate": 0.0},
        {"site_id": "s", "url_path": "/pricing", "views": 0, "readers": 0, "avg_engaged_ms": 500.0,
         "read_through_rate": 1.0},
        # 3 views by p1 (twice) and p2; scroll 90 is read through, 89.9 is not.
        {"site_id": "s", "url_path": "/wp", "views": 3, "readers": 2, "avg_engaged_ms": 1500.0,
         "read_through_rate": 0.5},
    ]
    assert r.downloads_by_file(events) == [
        {"site_id": "s", "file_url": HOST + "/case.docx", "downloads": 1, "persons": 1},
        {"site_id": "s", "file_url": HOST + "/wp.pdf", "downloads": 3, "persons": 2},
    ]
    assert r.sharer_stats(events) == [
        {"site_id": "s", "sharer": "emp_1", "views": 2, "readers": 1, "avg_engaged_ms": 1500.0, "registrations": 1,
         "leads": 0},
        {"site_id": "s", "sharer": "emp_2", "views": 2, "readers": 2, "avg_engaged_ms": 0.0, "registrations": 0,
         "leads": 1},
        {"site_id": "s", "sharer": "emp_3", "views": 0, "readers": 0, "avg_engaged_ms": 0.0, "registrations": 1,
         "leads": 0},
    ]


def test_duplicate_events_count_once() -> None:
    events = _stream()
    assert r.live_stream_stats(events + [dict(e) for e in events]) == r.live_stream_stats(events)


# --- the generator ------------------------------------------------------------------------------------------------


def _delivered(data: Dataset) -> list[dict[str, Any]]:
    return [{**e, "site_id": site} for site, batch in data.deliveries for e in batch]


def test_the_generator_is_deterministic() -> None:
    first, again, other = generate(7, NOW), generate(7, NOW), generate(8, NOW)
    assert first.events == again.events
    assert first.deliveries == again.deliveries
    assert first.events != other.events
    assert 1500 < len(first.events) < 8000  # a few thousand at scale 1
    assert len(generate(7, NOW, scale=3).events) > 2 * len(first.events)


@pytest.fixture(scope="module", params=[0, 5, 7])
def data(request: pytest.FixtureRequest) -> Dataset:
    return generate(request.param, NOW)


def test_deliveries_carry_each_stored_event_as_the_gateway_will_store_it(data: Dataset) -> None:
    stored = {(e["site_id"], e["event_id"]): e for e in data.events}
    assert len(stored) == len(data.events)
    assert {e["site_id"] for e in data.events} in ({"site_a", "site_b"}, {"site_a", "site_b", "site_c"})
    assert all(0 < len(batch) <= 100 for _, batch in data.deliveries)
    delivered = _delivered(data)
    assert {(e["site_id"], e["event_id"]) for e in delivered} == set(stored)
    for e in delivered:
        assert e == stored[e["site_id"], e["event_id"]]  # retries are identical
        assert list(e) == [*WIRE_FIELDS, "site_id"]
        assert NOW - 60 * DAY <= e["ts"] <= NOW - MIN
    for _, batch in data.deliveries:
        for wire in batch:
            decoded = decode_event(orjson.dumps(wire))  # the contract accepts it ...
            assert orjson.loads(decoded.props) == wire["props"]
            # ... and the gateway's URL fill changes nothing: a field is empty only when the URL lacks it too.
            params = split_url(wire["url"]).params
            assert all(wire[f] or not params.get(f) for f in URL_FIELDS.values())


def test_the_generator_exercises_every_feature(data: Dataset) -> None:
    events = data.events
    delivered = _delivered(data)
    position = {}  # (site, event_id) -> index of its first delivery
    for i, e in enumerate(delivered):
        position.setdefault((e["site_id"], e["event_id"]), i)

    def pos(e: dict[str, Any]) -> int:
        return position[e["site_id"], e["event_id"]]

    by_anon: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in events:
        by_anon.setdefault((e["site_id"], e["anonymous_id"]), []).append(e)
    identifies = [e for e in events if e["event"] == "identify" and e["anonymous_id"]]
    # An identify weeks after anonymous visits it links, in ts and in delivery order.
    assert any(a["ts"] <= i["ts"] - 14 * DAY and pos(a) < pos(i)
               for i in identifies for a in by_anon[i["site_id"], i["anonymous_id"]] if not a["user_id"])
    # Two identifies of one anonymous id for different users; never two at the same ts.
    users: dict[tuple[str, str], set[str]] = {}
    times: dict[tuple[str, str], list[int]] = {}
    for i in identifies:
        users.setdefault((i["site_id"], i["anonymous_id"]), set()).add(i["user_id"])
        times.setdefault((i["site_id"], i["anonymous_id"]), []).append(i["ts"])
    assert any(len(u) > 1 for u in users.values())
    assert all(len(t) == len(set(t)) for t in times.values())
    # Browser events with their own user_id; server events with only one.
    assert any(e["url"] and e["user_id"] for e in events)
    assert any(not e["anonymous_id"] and e["event"] == "lead_stage" for e in events)
    # Retries, and a batch flushed days after the site's newer events were delivered.
    assert len(delivered) > len(position)
    newest: dict[str, int] = {}
    days_late = False
    for site, batch in data.deliveries:
        days_late |= max(e["ts"] for e in batch) < newest.get(site, 0) - 2 * DAY
        newest[site] = max(newest.get(site, 0), *(e["ts"] for e in batch))
    assert days_late
    # Views: consistent ids and mode; a heartbeat delivered after its view's live_leave; lost heartbeats.
    views: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in events:
        if e["event"].startswith("live_"):
            views.setdefault((e["site_id"], e["props"]["view_id"]), []).append(e)
    for view_events in views.values():
        assert len({(e["anonymous_id"], e["user_id"], e["props"]["stream_id"], e["props"]["mode"])
                    for e in view_events}) == 1
    assert any(pos(b) > pos(leave) and b["ts"] < leave["ts"] for group in views.values()
               for leave in group if leave["event"] == "live_leave"
               for b in group if b["event"] == "live_heartbeat")
    watched = [[e["props"]["watched_ms"] for e in group if e["event"] == "live_heartbeat"] for group in views.values()]
    assert any(later - earlier >= 2 * 10_000 for w in watched for earlier, later in itertools.pairwise(w))
    # Every referrer class and the other kinds of touch.
    channels = {t.channel for t in r.touches(events)}
    assert {"search", "wechat", "social", "partner.example.org", "news.example.net", "sms"} <= channels
    assert channels & {"edm_0312", "edm_invite"}
    assert any(e["event"] == "page_view" and e["channel"] and not r.channel_of_touch(e) for e in events)
    assert any("utm_source=" in e["url"] for e in events)
    assert any("sharer=" in e["url"] and "ch=" in e["url"] for e in events)
    # Streams: registrants who never watched, no-shows who watched the replay, known and unknown durations.
    stats = r.live_stream_stats(events)
    assert any(s["no_shows"] > s["no_show_replay_viewers"] for s in stats)
    assert any(s["no_show_replay_viewers"] for s in stats)
    assert any(s["peak_concurrency"] >= 2 for s in stats)
    durations = [v["duration_s"] for v in r.live_views(events)]
    assert None in durations and any(durations)
    assert {k["kind"] for k in r.live_interactions(events)} == {"cta", "lottery", "survey", "comment", "like"}
    assert any(k["interactions"] > k["interactors"] for k in r.live_interactions(events))
    # Sessions: renewed after 30 idle minutes and only then; bounces; sessions without page_view.
    for (_, anon), group in by_anon.items():
        for before, after in itertools.pairwise(e for e in group if e["session_id"]):
            assert (before["session_id"] != after["session_id"]) == (after["ts"] - before["ts"] >= 30 * MIN), anon
    sessions = r.sessions(events)
    assert any(s["bounce"] for s in sessions)
    assert any(s["pageviews"] == 0 for s in sessions)
    # Funnel and content.
    assert {"lead", "mql", "sql"} <= {e["props"]["stage"] for e in events if e["event"] == "lead_stage"}
    assert any(e["props"].get("amount") for e in events if e["event"] == "lead_stage")
    assert any(e["event"] == "page_leave" and e["props"]["scroll_pct"] >= 90 for e in events)
    assert r.downloads_by_file(events) and any(e["event"] == "form_submit" for e in events)
    # The reference reads the deliveries, duplicates and all, as the stored events.
    assert r.live_stream_stats(delivered) == stats
    assert r.sessions(delivered) == sessions
