"""The analytics definitions in plain Python: the oracle the ClickHouse rollups and views are compared against.

It is written from the definitions alone, without looking at the SQL, and kept slow and obvious (sets, sorts,
loops), so that a disagreement between the two points at a bug or at a definition read two ways, never at a shared
mistake. Where a definition left a choice open, the choice is written down here, numbered, and the SQL must make
the same one.

Input: events as the gateway stores them, as dicts with the wire fields (``event, event_id, anonymous_id, user_id,
session_id, ts`` (int ms), ``channel, utm_source, utm_medium, utm_campaign, utm_content, utm_term, sharer, url,
referrer, title``, absent strings ``""``), ``props`` (a dict) and ``site_id``.

Choices:

1. Exactly once. Events are deduplicated by (site_id, event_id), the first copy kept, as the table stores them; so
   the flattened deliveries of a data set give the same answers as its events.
2. Order. Whenever a definition says first, earliest, latest or last, events are ordered by (ts, event_id): equal
   times are broken by the event_id as a string (the generator never makes such ties).
3. URLs. A URL's host is ``urlsplit(url).hostname`` lower-cased, without port ("" when it does not parse): the
   stored ``url_host`` and ``referrer_host``. Its path is ``urlsplit(url).path`` (the stored ``url_path``; no query,
   no fragment). A URL parameter is the first non-empty value of that name in the query, percent-decoded as
   ``parse_qsl`` does (what ``gateway.ingest.enrich.split_url`` reads); the fragment is not searched.
4. Persons. Links are per site and exact: an anonymous id links to one user_id (its earliest identify's), an
   identify with an empty anonymous_id or user_id links nothing, and two user_ids are never merged (no chains).
   ``identities`` has a row per linked anonymous id only; an unlinked one is its own person.
5. Touches. A page_view with a non-empty url is a touch when its URL has a ``ch`` or ``utm_source`` parameter, or
   when its referrer's host is non-empty and differs from its URL's host (hosts compared exactly: a referrer on
   ``example.com`` is external to ``www.example.com``). An event whose url is ``""`` (of any name, page_view too) is
   a touch when its ``channel`` or ``utm_source`` field is non-empty. No other event is a touch: a page_leave or a
   download on a landing URL with ``?ch=`` is not, nor are the channel fields the SDK stamps on later events.
6. Referrer classes: see ``REFERRER_CLASSES``. A host matches a domain when it equals it or ends in ``.`` + it; the
   longest matching domain wins. A site's rules (``{domain: channel}``, lower-case) are matched the same way and
   are tried before the table; they replace only the referrer step (a ``ch`` or ``utm_source`` in the URL still
   wins over them). An external host matching neither is its own channel (``partner.example.org``).
7. Lookback. A touch counts for an event at ts t when its ts is in [t - 90 days, t], both ends included
   (90 days = 7 776 000 000 ms); an event that is itself a touch is its own last touch.
8. Attribution. The result maps a channel (or sharer) to its credit summed over the conversions; a channel
   appears only with a credit > 0 (first_touch gives the later touches of a path nothing). ``conversion`` is an
   event name, or ``<event>:<stage>`` for the events of that name whose props.stage is <stage>
   (``lead_stage:mql``). Dates are UTC days, both included.
9. Views. A view is a (site_id, stream_id, view_id) with at least one live_join or live_heartbeat (one known only
   by its live_leave is not a view, as its person is no viewer). Its person and mode are those of its earliest such
   event. Its watch time is the largest props.watched_ms of its heartbeats (0 without one); its duration is the
   largest props.duration_s > 0 of its heartbeats (unknown without one); its completion is
   min(1, watch_ms / (duration_s * 1000)) in float64, compared with >= 0.9. Viewers, live_viewers and
   replay_viewers are the persons of the stream's views, of its live-mode views, of its replay-mode views.
   Concurrency counts live_heartbeat events by their own props.mode.
10. Streams. A stream is every (site_id, stream_id) whose stream_id is a non-empty string in the props of a
    registration, live_join, live_heartbeat, live_leave or interaction; first_ts and last_ts span those events.
    An interaction by someone who is not a viewer of its stream counts among the stream's interactions (events)
    but not among its interactors.
11. Stream audience. The first view event is the person's earliest live_join or live_heartbeat of the stream
    (either mode); pages_after, downloads_after and forms_after count the person's page_view, download and
    form_submit events anywhere in the site with t0 < ts <= t0 + 14 days. first_touch_channel is the person's first
    touch ever (no lookback, before or after the registration).
12. Sessions. Grouped by (site_id, anonymous_id, session_id) over events with a non-empty session_id. A session
    without a page_view has entry_path ``""``, entry_utm_term ``""`` and as entry channel the last-touch channel of
    its first event; it is never a bounce. ``day`` is a ``datetime.date`` (UTC).
13. Sharers. sharer_stats has a row for every non-empty sharer field on a page_view or page_leave, and every
    non-empty sharer of a person's first touch. Its registrations and leads count persons whose first touch carried
    the sharer and who have a registration (a form_submit) at any time, even before that touch.
14. Empty. A mean over nothing, and a rate whose denominator is 0, are 0.0. Times are int ms; durations in seconds
    are floats.
15. Funnel steps. A step is an event name, ``<event>:<stage>`` (the event with props.stage = <stage>), or
    ``<event>[<key>=<value>]`` (the event whose props.<key> is the string <value>; a number or a missing prop never
    matches). A chain is events e1..ek of steps 1..k with strictly increasing ts (one event never fills two steps),
    e1's UTC day in [date_from, date_to], ek.ts - e1.ts <= window; later steps may fall after date_to. A person's
    furthest step is their longest chain (0: no e1 in the period, and no row). Their step times are those of the
    first longest chain: the earliest e1 from which that length is reachable, then each step's earliest event after
    the previous step's (the greedy choice, which reaches furthest). The median of an even count is the mean of the
    two middle values; a step nobody reached, and step 1, have a median of 0.0.
16. Channel of a person (the by-channel splits, ROI): the channel of their first touch ever in the site, by
    (ts, event_id), without lookback; (direct) without a touch (as stream_audience's first_touch_channel).
17. Lifecycle. Ranks: lead 1, mql 2, sal 3, sql 4, opportunity 5, won 6; lost and nurture have none. A person's
    entry is their first lead_stage of any stage; the cohort is the persons whose entry's UTC day lies in
    [date_from, date_to]. Everyone in it reached Leads, at the entry; stage k > 1 is reached at their first
    lead_stage of rank >= k (a skipped stage is passed with the later one), at any time up to now. Days between
    stages are ms / 86 400 000. lost counts the persons whose latest lead_stage (by (ts, event_id)) is ``lost``, at
    their furthest stage. The reference rates sit on the stage their span ends at, measured from: mql from lead
    (0.15), sql from mql (0.5), opportunity from sql (0.41), won from opportunity (0.37); lead and sal have none.
18. Recycling. Per person with a ``nurture`` in [date_from, date_to]: t = their first such nurture; from_stage the
    highest rank among their lead_stages with ts < t (lead without one); returned when they have a lead_stage of
    rank >= 2 (mql or later) with ts > t, after the days to the first of those. Rows per from_stage with someone.
19. ROI. A person's lead time is their first lead_stage or first form_submit, whichever is earlier; their
    opportunity time the first lead_stage of rank >= 5. In the period (UTC days, both included): cost (the sum of
    the site's channel_costs rows of the channel whose day lies in it, each (site, channel, day) with the last
    imported cost), new_leads, opportunities (persons), won_revenue (props.amount of every ``won`` in it; absent or
    null: 0). A channel has a row when it has a cost row, a new lead, an opportunity or a won in the period.
20. Influence. A viewer of a stream is a person with a live_join or live_heartbeat of it (either mode); t0 their
    first one. Category: customer with a ``won`` at ts < t0, else existing_lead with any lead_stage or form_submit at
    ts < t0, else new. An opportunity is a lead_stage ``opportunity`` or ``won`` with t0 < ts <= t0 + window days;
    won_revenue sums the amounts of the ``won`` ones. Every category has a row once the stream has a viewer.

Rows come sorted by their key columns. The functions that need channels take ``rules``, the referrer rules of each
site (``{site_id: {domain: channel}}``; none by default).
"""

from __future__ import annotations

import re
import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

Event = dict[str, Any]
Row = dict[str, Any]
#: Referrer rules per site: {site_id: {domain: channel}}.
SiteRules = Mapping[str, Mapping[str, str]]

MINUTE_MS = 60_000
DAY_MS = 86_400_000
LOOKBACK_MS = 90 * DAY_MS
#: The half-life of time_decay attribution.
HALF_LIFE_MS = 7 * DAY_MS
#: The window after a stream's first view (or registration) in which stream_audience counts later activity.
AFTER_MS = 14 * DAY_MS
COMPLETE = 0.9
READ_THROUGH_PCT = 90
DIRECT = "(direct)"
NO_SHARER = "(none)"
MODELS = ("first_touch", "last_touch", "linear", "u_shaped", "time_decay")
STREAM_EVENTS = frozenset({"registration", "live_join", "live_heartbeat", "live_leave", "interaction"})
NO_RULES: Mapping[str, str] = MappingProxyType({})
NO_SITE_RULES: SiteRules = MappingProxyType({})
_EPOCH = date(1970, 1, 1)

REFERRER_CLASSES: dict[str, str] = {
    "baidu.com": "search",
    "sogou.com": "search",
    "so.com": "search",
    "sm.cn": "search",
    "bing.com": "search",
    "google.com": "search",
    "google.com.hk": "search",
    "google.cn": "search",
    "qq.com": "wechat",
    "weibo.com": "social",
    "weibo.cn": "social",
    "zhihu.com": "social",
    "douyin.com": "social",
    "linkedin.com": "social",
}
"""Referrer domain -> channel of a touch that arrived from it without a ``ch`` or ``utm_source``.

A referrer host matches a domain when it equals it or ends in ``.`` + the domain (``m.sogou.com``, ``cn.bing.com``;
``xso.com`` is not ``so.com``). Google is matched by the domains listed, not by a ``google.<any tld>`` wildcard:
an exact list is what SQL can match the same way, and google.com.hk and google.cn are the ones Chinese visitors
arrive from. ``qq.com`` covers all of WeChat's web hosts (``weixin.qq.com``, ``mp.weixin.qq.com``) and QQ's own,
which are counted as WeChat too. The SQL must hold the same table."""


class Link(NamedTuple):
    """The earliest identify of an anonymous id; ordered as the choice between two identifies: earliest, then the
    smallest user_id."""

    identified_at: int
    user_id: str


class Touch(NamedTuple):
    site_id: str
    person_id: str
    ts: int
    channel: str
    sharer: str


# --- URLs, persons, touches -------------------------------------------------------------------------------------


def host_of(url: str) -> str:
    """The URL's host, lower-case, without port: the stored url_host / referrer_host."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def path_of(url: str) -> str:
    """The URL's path: the stored url_path."""
    try:
        return urlsplit(url).path
    except ValueError:
        return ""


def url_param(url: str, name: str) -> str:
    """The first non-empty value of a query parameter, decoded; ``""`` without one."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return ""
    return next((value for key, value in parse_qsl(query) if key == name and value), "")


def _match(host: str, table: Mapping[str, str]) -> str:
    """The value of the longest domain in ``table`` that ``host`` equals or is a subdomain of; ``""`` for none."""
    best = ""
    for domain in table:
        if (host == domain or host.endswith("." + domain)) and len(domain) > len(best):
            best = domain
    return table[best] if best else ""


def referrer_channel(host: str, rules: Mapping[str, str] = NO_RULES) -> str:
    """The channel of an arrival from an external ``host``: the site's rule, else its class, else the host."""
    return _match(host, rules) or _match(host, REFERRER_CLASSES) or host


def channel_of_touch(event: Event, rules: Mapping[str, str] = NO_RULES) -> str:
    """The channel of the touch ``event`` is, or ``""`` when it is no touch (a touch's channel is never empty, so
    this is also the test of what a touch is: choice 5)."""
    url = event["url"]
    if not url:
        return event["channel"] or event["utm_source"]
    if event["event"] != "page_view":
        return ""
    found = url_param(url, "ch") or url_param(url, "utm_source")
    if found:
        return found
    referrer = host_of(event["referrer"])
    if referrer and referrer != host_of(url):
        return referrer_channel(referrer, rules)
    return ""


def sharer_of_touch(event: Event) -> str:
    """Who shared the link a touch arrived by: the URL's ``sharer`` parameter, the field for a touch without URL."""
    return url_param(event["url"], "sharer") if event["url"] else event["sharer"]


def identity_map(events: Iterable[Event]) -> dict[tuple[str, str], Link]:
    """(site_id, anonymous_id) -> its earliest identify, for every anonymous id an identify linked."""
    links: dict[tuple[str, str], Link] = {}
    for e in _unique(events):
        if e["event"] == "identify" and e["anonymous_id"] and e["user_id"]:
            key = (e["site_id"], e["anonymous_id"])
            link = Link(e["ts"], e["user_id"])
            if key not in links or link < links[key]:
                links[key] = link
    return links


def person_of(event: Event, identity: Mapping[tuple[str, str], Link]) -> str:
    """OneID: the event's user_id, else the user its anonymous id was linked to, else its anonymous id."""
    if event["user_id"]:
        return event["user_id"]
    link = identity.get((event["site_id"], event["anonymous_id"]))
    return link.user_id if link else event["anonymous_id"]


def _order(event: Event) -> tuple[int, str]:
    return event["ts"], event["event_id"]


def _unique(events: Iterable[Event]) -> list[Event]:
    """The events once per (site_id, event_id), the first copy kept, ordered by (ts, event_id) (choices 1, 2)."""
    seen: dict[tuple[str, str], Event] = {}
    for e in events:
        seen.setdefault((e["site_id"], e["event_id"]), e)
    return sorted(seen.values(), key=_order)


def _day(ts: int) -> date:
    return _EPOCH + timedelta(days=ts // DAY_MS)


def _rate(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


class _Index:
    """What every view needs, worked out once per call: the unique events in order, each one's person, and each
    person's touches in order."""

    def __init__(self, events: Iterable[Event], rules: SiteRules = NO_SITE_RULES) -> None:
        self.events = _unique(events)
        self.links = identity_map(self.events)
        self._persons = {(e["site_id"], e["event_id"]): person_of(e, self.links) for e in self.events}
        self.touches: dict[tuple[str, str], list[Touch]] = defaultdict(list)
        for e in self.events:  # in order, so each person's touches are too
            channel = channel_of_touch(e, rules.get(e["site_id"], NO_RULES))
            if channel:
                person = self.person(e)
                self.touches[e["site_id"], person].append(
                    Touch(e["site_id"], person, e["ts"], channel, sharer_of_touch(e)))
        self._times = {key: [t.ts for t in path] for key, path in self.touches.items()}

    def person(self, event: Event) -> str:
        return self._persons[event["site_id"], event["event_id"]]

    def path(self, event: Event) -> list[Touch]:
        """The touches of the event's person in its lookback window (choice 7), oldest first."""
        key = (event["site_id"], self.person(event))
        times = self._times.get(key, [])
        ts = event["ts"]
        return self.touches.get(key, [])[bisect_left(times, ts - LOOKBACK_MS):bisect_right(times, ts)]

    def channel(self, event: Event) -> str:
        """The event's last-touch channel."""
        path = self.path(event)
        return path[-1].channel if path else DIRECT

    def first_touch(self, site_id: str, person: str) -> Touch | None:
        path = self.touches.get((site_id, person))
        return path[0] if path else None


def identities(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, anonymous_id, person_id, identified_at) for every linked anonymous id."""
    return [{"site_id": site, "anonymous_id": anonymous_id, "person_id": link.user_id,
             "identified_at": link.identified_at}
            for (site, anonymous_id), link in sorted(identity_map(events).items())]


def touches(events: Iterable[Event], rules: SiteRules = NO_SITE_RULES) -> list[Touch]:
    """Every touch as (site_id, person_id, ts, channel, sharer), by site and person, oldest first."""
    index = _Index(events, rules)
    return [t for key in sorted(index.touches) for t in index.touches[key]]


def last_touch_channels(events: Iterable[Event], rules: SiteRules = NO_SITE_RULES) -> dict[tuple[str, str], str]:
    """(site_id, event_id) -> the event's channel: its person's latest touch within 90 days, else (direct)."""
    index = _Index(events, rules)
    return {(e["site_id"], e["event_id"]): index.channel(e) for e in index.events}


# --- attribution ------------------------------------------------------------------------------------------------


def _known(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown attribution model {model!r}, expected one of {MODELS}")


def credits(model: str, ages_ms: list[int]) -> list[float]:
    """Each touch's share of one conversion, for touches oldest first, given their ages (conversion ts - touch ts)."""
    _known(model)
    n = len(ages_ms)
    if model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if model == "linear":
        return [1 / n] * n
    if model == "u_shaped":
        if n <= 2:
            return [1 / n] * n
        return [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]
    weights = [2 ** (-age / HALF_LIFE_MS) for age in ages_ms]  # time_decay
    return [w / sum(weights) for w in weights]


def _conversions(index: _Index, site_id: str, conversion: str, date_from: date, date_to: date) -> list[Event]:
    name, _, stage = conversion.partition(":")
    start = (date_from - _EPOCH).days * DAY_MS
    end = (date_to - _EPOCH).days * DAY_MS + DAY_MS
    return [e for e in index.events
            if e["site_id"] == site_id and e["event"] == name and start <= e["ts"] < end
            and (not stage or e["props"].get("stage") == stage)]


def _attribute(index: _Index, site_id: str, conversion: str, model: str, date_from: date, date_to: date,
               key: str) -> dict[str, float]:
    _known(model)  # also when there is no conversion to attribute
    result: dict[str, float] = defaultdict(float)
    for conv in _conversions(index, site_id, conversion, date_from, date_to):
        path = index.path(conv)
        if not path:
            result[DIRECT if key == "channel" else NO_SHARER] += 1.0
            continue
        for touch, credit in zip(path, credits(model, [conv["ts"] - t.ts for t in path]), strict=True):
            if credit:
                result[getattr(touch, key) or NO_SHARER] += credit
    return dict(result)


def attribution(events: Iterable[Event], site_id: str, conversion: str, model: str, date_from: date, date_to: date,
                rules: SiteRules = NO_SITE_RULES) -> dict[str, float]:
    """{channel: credit} over the site's conversions in [date_from, date_to]; (direct) for those without a touch."""
    return _attribute(_Index(events, rules), site_id, conversion, model, date_from, date_to, "channel")


def attribution_by_sharer(events: Iterable[Event], site_id: str, conversion: str, model: str, date_from: date,
                          date_to: date) -> dict[str, float]:
    """{sharer: credit}, as ``attribution`` by the touches' sharers; (none) for a touch without one, and for a
    conversion without a touch."""
    return _attribute(_Index(events), site_id, conversion, model, date_from, date_to, "sharer")


# --- live streams -----------------------------------------------------------------------------------------------


@dataclass
class _View:
    site_id: str
    stream_id: str
    view_id: str
    person_id: str
    mode: str
    watch_ms: int = 0
    duration_s: float | None = None

    @property
    def completion(self) -> float | None:
        if self.duration_s is None:
            return None
        return min(1.0, self.watch_ms / (self.duration_s * 1000))


@dataclass
class _Stream:
    """One stream's events, gathered in (ts, event_id) order."""

    views: list[_View] = field(default_factory=list)
    #: person -> their first registration
    registered: dict[str, Event] = field(default_factory=dict)
    #: person -> ts of their first live_join or live_heartbeat
    first_view: dict[str, int] = field(default_factory=dict)
    #: (person, kind) of each interaction
    interactions: list[tuple[str, str]] = field(default_factory=list)
    #: UTC minute -> persons with a live-mode heartbeat in it
    minutes: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    first_ts: int = 0
    last_ts: int = 0

    def viewers(self, mode: str = "") -> set[str]:
        return {v.person_id for v in self.views if not mode or v.mode == mode}

    def watch_ms(self, mode: str = "", person: str = "") -> int:
        return sum(v.watch_ms for v in self.views
                   if (not mode or v.mode == mode) and (not person or v.person_id == person))


def _stream_id(event: Event) -> str:
    stream_id = event["props"].get("stream_id") if event["event"] in STREAM_EVENTS else None
    return stream_id if isinstance(stream_id, str) else ""


def _streams(index: _Index) -> dict[tuple[str, str], _Stream]:
    streams: dict[tuple[str, str], _Stream] = {}
    views: dict[tuple[str, str, str], _View] = {}
    for e in index.events:
        stream_id = _stream_id(e)
        if not stream_id:
            continue
        key = (e["site_id"], stream_id)
        if key not in streams:
            streams[key] = _Stream(first_ts=e["ts"])
        stream = streams[key]
        stream.last_ts = e["ts"]
        person, name, props = index.person(e), e["event"], e["props"]
        if name == "registration":
            stream.registered.setdefault(person, e)
        elif name == "interaction":
            stream.interactions.append((person, props["kind"]))
        elif name in ("live_join", "live_heartbeat"):
            stream.first_view.setdefault(person, e["ts"])
            view_key = (*key, props["view_id"])
            if view_key not in views:
                views[view_key] = _View(*view_key, person, props["mode"])
                stream.views.append(views[view_key])
            view = views[view_key]
            if name == "live_heartbeat":
                view.watch_ms = max(view.watch_ms, props["watched_ms"])
                duration = props.get("duration_s")
                if duration is not None and duration > 0:
                    view.duration_s = max(view.duration_s or 0, duration)
                if props["mode"] == "live":
                    stream.minutes[e["ts"] // MINUTE_MS * MINUTE_MS].add(person)
    return streams


def live_views(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, stream_id, view_id, person_id, mode, watch_ms, duration_s, completion); duration_s and
    completion are None when unknown."""
    rows = [{"site_id": v.site_id, "stream_id": v.stream_id, "view_id": v.view_id, "person_id": v.person_id,
             "mode": v.mode, "watch_ms": v.watch_ms, "duration_s": v.duration_s, "completion": v.completion}
            for stream in _streams(_Index(events)).values() for v in stream.views]
    return sorted(rows, key=lambda r: (r["site_id"], r["stream_id"], r["view_id"]))


def live_stream_stats(events: Iterable[Event]) -> list[Row]:
    """One row per (site_id, stream_id): registration, attendance, watch time, concurrency, completion and
    interaction figures."""
    rows = []
    for (site_id, stream_id), s in sorted(_streams(_Index(events)).items()):
        registrants = set(s.registered)
        viewers, live, replay = s.viewers(), s.viewers("live"), s.viewers("replay")
        no_shows = registrants - live
        known = {v.person_id for v in s.views if v.completion is not None}
        complete = {v.person_id for v in s.views if v.completion is not None and v.completion >= COMPLETE}
        interactors = {person for person, _ in s.interactions} & viewers
        rows.append({
            "site_id": site_id,
            "stream_id": stream_id,
            "registrants": len(registrants),
            "viewers": len(viewers),
            "live_viewers": len(live),
            "replay_viewers": len(replay),
            "attendees": len(registrants & live),
            "attendance_rate": _rate(len(registrants & live), len(registrants)),
            "no_shows": len(no_shows),
            "no_show_replay_viewers": len(no_shows & replay),
            "watch_ms_total": s.watch_ms(),
            "avg_watch_ms": _rate(s.watch_ms(), len(viewers)),
            "live_watch_ms_total": s.watch_ms("live"),
            "replay_watch_ms_total": s.watch_ms("replay"),
            "peak_concurrency": max((len(persons) for persons in s.minutes.values()), default=0),
            "completion_rate": _rate(len(complete), len(known)),
            "interactors": len(interactors),
            "interaction_rate": _rate(len(interactors), len(viewers)),
            "first_ts": s.first_ts,
            "last_ts": s.last_ts,
        })
    return rows


def live_concurrency(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, stream_id, minute, viewers): distinct persons with a live-mode heartbeat in each UTC minute
    (ms of its start) that has one."""
    return [{"site_id": site_id, "stream_id": stream_id, "minute": minute, "viewers": len(persons)}
            for (site_id, stream_id), s in sorted(_streams(_Index(events)).items())
            for minute, persons in sorted(s.minutes.items())]


def live_retention(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, stream_id, mode, minute, views, share): how many of a mode's views lasted at least m minutes,
    for m from 0 to the longest one's whole minutes."""
    rows = []
    for (site_id, stream_id), s in sorted(_streams(_Index(events)).items()):
        for mode in ("live", "replay"):
            watched = [v.watch_ms for v in s.views if v.mode == mode]
            if not watched:
                continue
            for minute in range(max(watched) // MINUTE_MS + 1):
                views = sum(w >= minute * MINUTE_MS for w in watched)
                rows.append({"site_id": site_id, "stream_id": stream_id, "mode": mode, "minute": minute,
                             "views": views, "share": views / len(watched)})
    return rows


def live_interactions(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, stream_id, kind, interactions, interactors, interaction_rate) per kind of interaction."""
    rows = []
    for (site_id, stream_id), s in sorted(_streams(_Index(events)).items()):
        viewers = s.viewers()
        for kind in sorted({kind for _, kind in s.interactions}):
            persons = [person for person, k in s.interactions if k == kind]
            interactors = len(set(persons) & viewers)
            rows.append({"site_id": site_id, "stream_id": stream_id, "kind": kind, "interactions": len(persons),
                         "interactors": interactors, "interaction_rate": _rate(interactors, len(viewers))})
    return rows


def stream_audience(events: Iterable[Event], rules: SiteRules = NO_SITE_RULES) -> list[Row]:
    """One row per (site_id, stream_id, person_id) for the stream's registrants and viewers: how they came, what
    they watched, and what they did in the 14 days after (choice 11)."""
    index = _Index(events, rules)
    later: dict[tuple[str, str, str], list[int]] = defaultdict(list)  # (site, person, event) -> times, in order
    for e in index.events:
        if e["event"] in ("page_view", "download", "form_submit"):
            later[e["site_id"], index.person(e), e["event"]].append(e["ts"])

    def after(site_id: str, person: str, name: str, t0: int) -> int:
        times = later.get((site_id, person, name), [])
        return bisect_right(times, t0 + AFTER_MS) - bisect_right(times, t0)

    rows = []
    for (site_id, stream_id), s in sorted(_streams(index).items()):
        for person in sorted(set(s.registered) | s.viewers()):
            registration = s.registered.get(person)
            first = index.first_touch(site_id, person)
            t0 = s.first_view[person] if person in s.first_view else registration["ts"]
            rows.append({
                "site_id": site_id,
                "stream_id": stream_id,
                "person_id": person,
                "registered_at": registration["ts"] if registration else None,
                "registration_channel": index.channel(registration) if registration else None,
                "first_touch_channel": first.channel if first else DIRECT,
                "live_watch_ms": s.watch_ms("live", person),
                "replay_watch_ms": s.watch_ms("replay", person),
                "interactions": sum(p == person for p, _ in s.interactions),
                "pages_after": after(site_id, person, "page_view", t0),
                "downloads_after": after(site_id, person, "download", t0),
                "forms_after": after(site_id, person, "form_submit", t0),
            })
    return rows


# --- sessions -----------------------------------------------------------------------------------------------------


def sessions(events: Iterable[Event], rules: SiteRules = NO_SITE_RULES) -> list[Row]:
    """One row per (site_id, anonymous_id, session_id): day, start, end, duration_s, pageviews, entry_path,
    entry_channel, entry_utm_term, bounce (choice 12)."""
    index = _Index(events, rules)
    groups: dict[tuple[str, str, str], list[Event]] = defaultdict(list)
    for e in index.events:
        if e["session_id"]:
            groups[e["site_id"], e["anonymous_id"], e["session_id"]].append(e)
    rows = []
    for (site_id, anonymous_id, session_id), group in sorted(groups.items()):
        views = [e for e in group if e["event"] == "page_view"]
        entry = views[0] if views else group[0]
        start, end = group[0]["ts"], group[-1]["ts"]
        rows.append({
            "site_id": site_id,
            "anonymous_id": anonymous_id,
            "session_id": session_id,
            "day": _day(start),
            "start": start,
            "end": end,
            "duration_s": (end - start) / 1000,
            "pageviews": len(views),
            "entry_path": path_of(entry["url"]) if views else "",
            "entry_channel": index.channel(entry),
            "entry_utm_term": entry["utm_term"] if views else "",
            "bounce": len(views) == 1 and all(e["event"] in ("page_view", "page_leave") for e in group),
        })
    return rows


def channel_sessions(events: Iterable[Event], rules: SiteRules = NO_SITE_RULES) -> list[Row]:
    """Rows (site_id, day, channel, utm_term, sessions, bounces, bounce_rate, pages_per_session, avg_duration_s):
    sessions grouped by day and their entry channel and utm_term."""
    groups: dict[tuple[str, date, str, str], list[Row]] = defaultdict(list)
    for s in sessions(events, rules):
        groups[s["site_id"], s["day"], s["entry_channel"], s["entry_utm_term"]].append(s)
    rows = []
    for (site_id, day, channel, utm_term), group in sorted(groups.items()):
        bounces = sum(s["bounce"] for s in group)
        rows.append({
            "site_id": site_id,
            "day": day,
            "channel": channel,
            "utm_term": utm_term,
            "sessions": len(group),
            "bounces": bounces,
            "bounce_rate": bounces / len(group),
            "pages_per_session": sum(s["pageviews"] for s in group) / len(group),
            "avg_duration_s": sum(s["duration_s"] for s in group) / len(group),
        })
    return rows


# --- content ------------------------------------------------------------------------------------------------------


def _leave_stats(leaves: list[Event]) -> tuple[float, float]:
    """(mean engaged_ms, share read through) of page_leave events."""
    engaged = _rate(sum(e["props"]["engaged_ms"] for e in leaves), len(leaves))
    read = _rate(sum(e["props"]["scroll_pct"] >= READ_THROUGH_PCT for e in leaves), len(leaves))
    return engaged, read


def content_engagement(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, url_path, views, readers, avg_engaged_ms, read_through_rate) per path with a page_view or a
    page_leave."""
    index = _Index(events)
    pages: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in index.events:
        if e["event"] in ("page_view", "page_leave"):
            pages[e["site_id"], path_of(e["url"])].append(e)
    rows = []
    for (site_id, url_path), group in sorted(pages.items()):
        views = [e for e in group if e["event"] == "page_view"]
        engaged, read = _leave_stats([e for e in group if e["event"] == "page_leave"])
        rows.append({"site_id": site_id, "url_path": url_path, "views": len(views),
                     "readers": len({index.person(e) for e in views}), "avg_engaged_ms": engaged,
                     "read_through_rate": read})
    return rows


def downloads_by_file(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, file_url, downloads, persons)."""
    index = _Index(events)
    files: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in index.events:
        if e["event"] == "download":
            files[e["site_id"], e["props"]["file_url"]].append(index.person(e))
    return [{"site_id": site_id, "file_url": file_url, "downloads": len(persons), "persons": len(set(persons))}
            for (site_id, file_url), persons in sorted(files.items())]


def sharer_stats(events: Iterable[Event]) -> list[Row]:
    """Rows (site_id, sharer, views, readers, avg_engaged_ms, registrations, leads) (choice 13)."""
    index = _Index(events)
    views: dict[tuple[str, str], list[str]] = defaultdict(list)
    leaves: dict[tuple[str, str], list[Event]] = defaultdict(list)
    did: dict[tuple[str, str], set[str]] = defaultdict(set)  # (site, person) -> registration / form_submit
    for e in index.events:
        if e["event"] == "page_view" and e["sharer"]:
            views[e["site_id"], e["sharer"]].append(index.person(e))
        elif e["event"] == "page_leave" and e["sharer"]:
            leaves[e["site_id"], e["sharer"]].append(e)
        elif e["event"] in ("registration", "form_submit"):
            did[e["site_id"], index.person(e)].add(e["event"])
    recruits: dict[tuple[str, str], list[str]] = defaultdict(list)  # (site, sharer) -> persons first touched by it
    for (site_id, person), path in index.touches.items():
        if path[0].sharer:
            recruits[site_id, path[0].sharer].append(person)
    rows = []
    for site_id, sharer in sorted(views.keys() | leaves.keys() | recruits.keys()):
        persons = recruits.get((site_id, sharer), [])
        rows.append({
            "site_id": site_id,
            "sharer": sharer,
            "views": len(views.get((site_id, sharer), [])),
            "readers": len(set(views.get((site_id, sharer), []))),
            "avg_engaged_ms": _leave_stats(leaves.get((site_id, sharer), []))[0],
            "registrations": sum("registration" in did.get((site_id, p), ()) for p in persons),
            "leads": sum("form_submit" in did.get((site_id, p), ()) for p in persons),
        })
    return rows


# --- funnels ------------------------------------------------------------------------------------------------------


class Step(NamedTuple):
    """A funnel step (choice 15): an event name, and a string prop it must have (key None: no condition)."""

    name: str
    key: str | None
    value: str

    @classmethod
    def parse(cls, text: str) -> Step:
        condition = re.fullmatch(r"([^\[:]+)\[([^=\]]+)=(.*)\]", text)
        if condition:
            return cls(condition[1], condition[2], condition[3])
        name, colon, stage = text.partition(":")
        return cls(name, "stage", stage) if colon else cls(text, None, "")

    def matches(self, event: Event) -> bool:
        return event["event"] == self.name and (self.key is None or event["props"].get(self.key) == self.value)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _in_days(ts: int, date_from: date, date_to: date) -> bool:
    return date_from <= _day(ts) <= date_to


def _first_touch_channel(index: _Index, site_id: str, person: str) -> str:
    touch = index.first_touch(site_id, person)
    return touch.channel if touch else DIRECT


def funnel_chains(events: Iterable[Event], site_id: str, steps: list[str], window_s: int, date_from: date,
                  date_to: date) -> dict[str, list[int]]:
    """person -> the times of their first longest chain through the funnel, for every person with a first step in the
    period (choice 15)."""
    return _funnel_chains(_Index(events), site_id, steps, window_s, date_from, date_to)


def _funnel_chains(index: _Index, site_id: str, steps: list[str], window_s: int, date_from: date,
                   date_to: date) -> dict[str, list[int]]:
    parsed = [Step.parse(s) for s in steps]
    mine: dict[str, list[Event]] = defaultdict(list)  # person -> their events of any step, in order
    for e in index.events:
        if e["site_id"] == site_id and any(step.matches(e) for step in parsed):
            mine[index.person(e)].append(e)
    chains = {}
    for person, evs in mine.items():
        best: list[int] | None = None
        for first in evs:
            if not (parsed[0].matches(first) and _in_days(first["ts"], date_from, date_to)):
                continue
            chain = [first["ts"]]
            for e in evs:
                if (len(chain) < len(parsed) and parsed[len(chain)].matches(e) and e["ts"] > chain[-1]
                        and e["ts"] - chain[0] <= window_s * 1000):
                    chain.append(e["ts"])
            if best is None or len(chain) > len(best):
                best = chain
        if best is not None:
            chains[person] = best
    return chains


def funnel(events: Iterable[Event], site_id: str, steps: list[str], window_s: int, date_from: date, date_to: date,
           rules: SiteRules = NO_SITE_RULES, by_channel: bool = False) -> list[Row]:
    """Rows (step, name, persons, conversion_from_previous, conversion_from_first, median_s_from_previous), with
    ``channel`` first when ``by_channel`` (the person's first-touch channel, choice 16); none when nobody entered."""
    index = _Index(events, rules)
    groups: dict[str, list[list[int]]] = defaultdict(list)
    for person, chain in _funnel_chains(index, site_id, steps, window_s, date_from, date_to).items():
        groups[_first_touch_channel(index, site_id, person) if by_channel else ""].append(chain)
    rows = []
    for channel, chains in sorted(groups.items()):
        for k, name in enumerate(steps, 1):
            reached = [c for c in chains if len(c) >= k]
            previous = sum(len(c) >= max(k - 1, 1) for c in chains)
            gaps = [(c[k - 1] - c[k - 2]) / 1000 for c in reached] if k > 1 else []
            rows.append({**({"channel": channel} if by_channel else {}), "step": k, "name": name,
                         "persons": len(reached), "conversion_from_previous": _rate(len(reached), previous),
                         "conversion_from_first": _rate(len(reached), len(chains)),
                         "median_s_from_previous": _median(gaps)})
    return rows


# --- the lead lifecycle, ROI, influence ---------------------------------------------------------------------------

LIFECYCLE = ("lead", "mql", "sal", "sql", "opportunity", "won")
#: stage -> (the stage its industry reference conversion is measured from, the rate) (choice 17)
REFERENCES = {"mql": ("lead", 0.15), "sql": ("mql", 0.5), "opportunity": ("sql", 0.41), "won": ("opportunity", 0.37)}
CATEGORIES = ("new", "existing_lead", "customer")


def rank(stage: str) -> int:
    """A stage's place in the lifecycle, 1 to 6; 0 for lost and nurture."""
    return LIFECYCLE.index(stage) + 1 if stage in LIFECYCLE else 0


@dataclass
class Lead:
    """A person's lead_stage events (in (ts, event_id) order) and first form_submit."""

    stages: list[Event] = field(default_factory=list)
    first_form: int | None = None

    @property
    def entered(self) -> int | None:
        return self.stages[0]["ts"] if self.stages else None

    @property
    def lead_at(self) -> int:
        return min(t for t in (self.entered, self.first_form) if t is not None)

    def reached(self, stage: int) -> int | None:
        """When the person reached the lifecycle's stage number ``stage`` (1 to 6), None if they never did."""
        if stage == 1:
            return self.entered
        return next((e["ts"] for e in self.stages if rank(e["props"]["stage"]) >= stage), None)

    @property
    def furthest(self) -> int:
        return max((k for k in range(1, len(LIFECYCLE) + 1) if self.reached(k) is not None), default=0)

    def stage_times(self, *stages: str) -> list[int]:
        return [e["ts"] for e in self.stages if e["props"]["stage"] in stages]


def leads(events: Iterable[Event], site_id: str) -> dict[str, Lead]:
    """person -> their Lead, for every person of the site with a lead_stage or a form_submit."""
    return _leads(_Index(events), site_id)


def _leads(index: _Index, site_id: str) -> dict[str, Lead]:
    people: dict[str, Lead] = defaultdict(Lead)
    for e in index.events:  # in order
        if e["site_id"] != site_id:
            continue
        if e["event"] == "lead_stage":
            people[index.person(e)].stages.append(e)
        elif e["event"] == "form_submit":
            lead = people[index.person(e)]
            lead.first_form = e["ts"] if lead.first_form is None else lead.first_form
    return dict(people)


def lifecycle(events: Iterable[Event], site_id: str, date_from: date, date_to: date,
              rules: SiteRules = NO_SITE_RULES, by_channel: bool = False) -> list[Row]:
    """Rows (stage, persons, conversion_from_previous, reference_rate, reference_conversion,
    median_days_from_previous, lost) for the cohort, with ``channel`` first when ``by_channel`` (choice 17)."""
    index = _Index(events, rules)
    groups: dict[str, list[Lead]] = defaultdict(list)
    for person, lead in _leads(index, site_id).items():
        if lead.entered is not None and _in_days(lead.entered, date_from, date_to):
            groups[_first_touch_channel(index, site_id, person) if by_channel else ""].append(lead)
    rows = []
    for channel, cohort in sorted(groups.items()):
        for k, stage in enumerate(LIFECYCLE, 1):
            reached = [lead for lead in cohort if lead.reached(k) is not None]
            previous = sum(lead.reached(max(k - 1, 1)) is not None for lead in cohort)
            reference_rate = reference_conversion = None
            if stage in REFERENCES:
                base_stage, reference_rate = REFERENCES[stage]
                base = sum(lead.reached(rank(base_stage)) is not None for lead in cohort)
                reference_conversion = _rate(len(reached), base)
            spans = [(lead.reached(k - 1), lead.reached(k)) for lead in reached] if k > 1 else []
            days = [(b - a) / DAY_MS for a, b in spans if a is not None and b is not None]
            rows.append({**({"channel": channel} if by_channel else {}), "stage": stage, "persons": len(reached),
                         "conversion_from_previous": _rate(len(reached), previous), "reference_rate": reference_rate,
                         "reference_conversion": reference_conversion, "median_days_from_previous": _median(days),
                         "lost": sum(lead.stages[-1]["props"]["stage"] == "lost" and lead.furthest == k
                                     for lead in cohort)})
    return rows


def lifecycle_recycling(events: Iterable[Event], site_id: str, date_from: date, date_to: date) -> list[Row]:
    """Rows (from_stage, nurtured, returned, return_rate, median_days_to_return), by stage order (choice 18)."""
    by_stage: dict[int, list[int | None]] = defaultdict(list)  # from rank -> each person's days to return, or None
    for lead in leads(events, site_id).values():
        nurtures = [t for t in lead.stage_times("nurture") if _in_days(t, date_from, date_to)]
        if not nurtures:
            continue
        sent = nurtures[0]
        before = max((rank(e["props"]["stage"]) for e in lead.stages if e["ts"] < sent), default=0)
        back = [e["ts"] for e in lead.stages if rank(e["props"]["stage"]) >= 2 and e["ts"] > sent]
        by_stage[max(before, 1)].append((back[0] - sent) if back else None)
    rows = []
    for k, returns in sorted(by_stage.items()):
        days = [t / DAY_MS for t in returns if t is not None]
        rows.append({"from_stage": LIFECYCLE[k - 1], "nurtured": len(returns), "returned": len(days),
                     "return_rate": len(days) / len(returns), "median_days_to_return": _median(days)})
    return rows


def effective_costs(imports: Iterable[Iterable[Row]]) -> dict[tuple[str, str, date], float]:
    """(site_id, channel, day) -> cost, from imports of rows (site_id, channel, day as ISO text, cost) in the order
    they were made: a later import of a key replaces its cost."""
    return {(r["site_id"], r["channel"], date.fromisoformat(r["day"])): float(r["cost"])
            for rows in imports for r in rows}


def _amount(event: Event) -> float:
    return float(event["props"].get("amount") or 0)


def channel_roi(events: Iterable[Event], costs: Mapping[tuple[str, str, date], float], site_id: str,
                date_from: date, date_to: date, rules: SiteRules = NO_SITE_RULES) -> list[Row]:
    """Rows (channel, cost, new_leads, cpl, opportunities, won_revenue, roi) per first-touch channel (choice 19)."""
    index = _Index(events, rules)
    spent: dict[str, float] = defaultdict(float)
    for (site, channel, day), cost in costs.items():
        if site == site_id and date_from <= day <= date_to:
            spent[channel] += cost
    new_leads: dict[str, int] = defaultdict(int)
    opportunities: dict[str, int] = defaultdict(int)
    revenue: dict[str, float] = defaultdict(float)
    won: set[str] = set()
    for person, lead in _leads(index, site_id).items():
        channel = _first_touch_channel(index, site_id, person)
        new_leads[channel] += _in_days(lead.lead_at, date_from, date_to)
        opportunity = lead.reached(rank("opportunity"))
        opportunities[channel] += opportunity is not None and _in_days(opportunity, date_from, date_to)
        for e in lead.stages:
            if e["props"]["stage"] == "won" and _in_days(e["ts"], date_from, date_to):
                revenue[channel] += _amount(e)
                won.add(channel)
    channels = spent.keys() | won | {c for c, n in new_leads.items() if n} | {c for c, n in opportunities.items() if n}
    rows = []
    for channel in sorted(channels):
        cost, n = spent.get(channel, 0.0), new_leads.get(channel, 0)
        rows.append({"channel": channel, "cost": cost, "new_leads": n, "cpl": _rate(cost, n),
                     "opportunities": opportunities.get(channel, 0), "won_revenue": revenue.get(channel, 0.0),
                     "roi": _rate(revenue.get(channel, 0.0) - cost, cost)})
    return rows


def stream_influence(events: Iterable[Event], site_id: str, stream_id: str, window_days: int) -> list[Row]:
    """Rows (category, viewers, opportunities, opportunity_rate, won_revenue) in CATEGORIES order (choice 20)."""
    index = _Index(events)
    first_view: dict[str, int] = {}
    for e in index.events:
        if (e["site_id"] == site_id and e["event"] in ("live_join", "live_heartbeat")
                and e["props"].get("stream_id") == stream_id):
            first_view.setdefault(index.person(e), e["ts"])
    people = _leads(index, site_id)
    counts = {c: [0, 0, 0.0] for c in CATEGORIES}  # viewers, opportunities, revenue
    for person, t0 in first_view.items():
        lead = people.get(person, Lead())
        if any(t < t0 for t in lead.stage_times("won")):
            category = "customer"
        elif any(e["ts"] < t0 for e in lead.stages) or (lead.first_form is not None and lead.first_form < t0):
            category = "existing_lead"
        else:
            category = "new"
        after = [e for e in lead.stages if e["props"]["stage"] in ("opportunity", "won")
                 and t0 < e["ts"] <= t0 + window_days * DAY_MS]
        counts[category][0] += 1
        counts[category][1] += bool(after)
        counts[category][2] += sum(_amount(e) for e in after if e["props"]["stage"] == "won")
    if not first_view:
        return []
    return [{"category": c, "viewers": int(v), "opportunities": int(o), "opportunity_rate": _rate(o, v),
             "won_revenue": float(r)} for c, (v, o, r) in counts.items()]
