"""Benchmark: what the rollups cost the loader, and what they buy the analysts' views, measured in one run.

    python -m loadtests.bench_analytics [--events N] [--quick]

1. N synthetic events (default 10,000,000; ``--quick``: 500,000) for three B2B sites over the last 60 full days:
   webinars with thousands of viewers heartbeating every 10 s (cumulative watched_ms per view_id, live and
   replay), registrations, interactions, page views and page leaves arriving through many channel codes,
   campaigns and referrers, downloads, forms, sessions, identifies weeks after the visits, CRM lead stages.
   They are written day by day (one day in memory at a time) as spool segments: gateway.ingest.rows.Row encoded as
   the gateway encodes it, cut at the spool's segment size (32 MB).
2. The same segments are loaded by the gateway's own Loader (gateway.warehouse.loader, hence Store.insert_segments in
   batches of up to 128 MB) into two fresh stores, one after the other (chDB opens one data directory at a
   time): (b) migration 0001 only, the raw events table without any materialized view, then (a) every
   migration and view. Reported: rows per second of insert time for each and the ratio a/b (target >= 0.7).
3. On (a), once its background merges settle: every analyst view ClickHouse lists, for one site over one
   calendar month (a filter on the view's time column where it has one, on event_channels also the conversion
   events: a month of every event is a million rows; the parameters for attribution and channel_roi, whose
   costs fill_costs writes as an admin would import them); funnel, funnel_by_channel and the lifecycle views over
   every day of the data (60 days: the issue's "quarter" of data, as long as the data goes); stream_influence for
   the month's first webinar over 30 days; against a baseline written here that computes the same answer from
   the raw ``events`` table alone (the referrer rules' dictionary and the costs aside, which are configuration
   and input). Both results are compared row by row first; a
   difference stops the run (exit 1), as a fast view that answers something else is worth nothing. Each side
   is then timed three times (FORMAT Null: the engine's time, not Python's parsing) and the median kept.
   Target: the view at least 10x faster.

Prints the command, a table, then a JSON line. Missed targets are flagged, not failed: some views read raw
events themselves (attribution's conversions, stream_audience's later visits, the funnels' steps, which may
name any event or prop). Everything runs in this
process on a temporary directory under /tmp; with the default N it takes about a quarter of an hour on two
cores and needs about 2 x 7 GB of disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlencode

import orjson
from msgspec.structs import replace

import gateway.warehouse.store as store_module
from gateway.config import ServerConfig
from gateway.ingest.enrich import Agent, parse_user_agent, split_url
from gateway.ingest.rows import Row, encode
from gateway.ingest.spool import SEALED, Spool
from gateway.metrics import Metrics
from gateway.warehouse.loader import Loader
from gateway.warehouse.store import DATABASE, Store
from loadtests.traffic import (
    DAY_MS,
    FILES,
    HEARTBEAT_MS,
    HOUR_MS,
    KINDS,
    MINUTE_MS,
    PAGES,
    SECOND_MS,
    SITES,
    arrival,
    stage_props,
    stage_walk,
)

DEFAULT_EVENTS = 10_000_000
QUICK_EVENTS = 500_000
LOAD_RATIO_TARGET = 0.7
SPEEDUP_TARGET = 10.0
RUNS = 3
#: The site and the views measured; the other two sites are there so that every query has to filter.
SITE = "site_a"
#: Views the views' files mark "Internal": building blocks of the others, not answers of their own.
INTERNAL = frozenset({"live_view_persons", "stream_activity_persons", "attribution_credits", "content_hit_persons",
                      "funnel_persons", "funnel_steps", "lead_stage_persons", "lead_persons", "lifecycle_stages"})
CONVERSIONS = ("registration", "lead_stage:mql")
CONVERSION_EVENTS = "('registration', 'form_submit', 'download')"
MODELS = ("first_touch", "last_touch", "linear", "u_shaped", "time_decay")
#: Longest wait for the merges the load started; queries then read what a settled install holds.
SETTLE_S = 180

DAYS = 60

# --- the synthetic traffic ------------------------------------------------------------------------------------------

#: Channel codes (渠道码) printed on posters, posted in groups, handed to sales: many, as in real campaigns.
CODES = tuple([f"wechat_group_{i}" for i in range(1, 13)] + [f"poster_qr_{i}" for i in range(1, 9)]
              + [f"wecom_sales_{i}" for i in range(1, 16)] + [f"booth_expo_{i}" for i in range(1, 5)]
              + ["partner_acme", "partner_globex", "wechat_moments_2", "kol_zhang"])
SHARERS = tuple([f"emp_{i:03d}" for i in range(1, 25)] + [f"cust_{3300 + i}" for i in range(8)])
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN",
    "Mozilla/5.0 (Linux; Android 14; V2244A) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 "
    "Safari/537.36 Edg/122.0.0.0",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 "
    "Mobile/15E148 Safari/604.1",
)
#: Visits by UTC hour: Beijing's working day (UTC+8) and its evening.
HOURS = tuple(h for h, weight in enumerate((2, 5, 8, 9, 8, 6, 8, 8, 7, 5, 4, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1))
              for _ in range(weight))

#: Per site, for 10 million events in all: live viewers of each webinar, and people. Heartbeats: about 70% of events.
LIVE_VIEWERS_PER_10M = 1400
PEOPLE_PER_10M = 62_000


@dataclass
class _Device:
    """A browser: its ids, the touch fields the SDK stamps on its events, its User-Agent and (anonymized) IP."""

    anonymous_id: str
    agent: Agent
    user_agent: str
    ip: str
    user_id: str = ""
    stamp: dict[str, str] = field(default_factory=dict)


@dataclass
class _Person:
    user_id: str
    devices: list[_Device]


@dataclass
class _Stream:
    stream_id: str
    start: int
    minutes: int
    #: Whether the live player reports duration_s (a scheduled length); the replay player always does.
    live_duration: bool


class _Site:
    """One site's people and webinars, planned up front as visits per day, so days can be emitted in order."""

    def __init__(self, rng: random.Random, site_id: str, day0: int, events: int) -> None:
        self.rng, self.site_id, self.day0 = rng, site_id, day0
        self.origin = "https://" + SITES[site_id]
        self.rows: list[Row] = []
        self.plans: list[list[tuple[int, int, Callable[..., None], Any]]] = [[] for _ in range(DAYS)]
        self.seq = 0
        people = max(50, round(PEOPLE_PER_10M * events / 1e7))
        self.people = [self.person(i) for i in range(people)]
        for i, person in enumerate(self.people):
            self.plan_person(person, i)
        live = max(20, round(LIVE_VIEWERS_PER_10M * events / 1e7))
        for i in range(6):
            day = 3 + 9 * i + rng.randint(0, 4)
            stream = _Stream(f"webinar-{i + 1:02d}", day0 + day * DAY_MS + 6 * HOUR_MS, rng.choice((60, 75, 90)),
                             i != 1)
            self.plan_stream(stream, day, live)

    # -- ids and helpers -----------------------------------------------------------------------------------------

    def uid(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def device(self) -> _Device:
        ua = self.rng.choice(USER_AGENTS)
        ip = f"{self.rng.randint(36, 223)}.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.0"
        return _Device(self.uid(), parse_user_agent(ua), ua, ip)

    def person(self, i: int) -> _Person:
        devices = [self.device() for _ in range(1 + (self.rng.random() < 0.2))]
        return _Person(f"crm-{self.site_id[-1]}{100001 + i}", devices)

    def at(self, day: int) -> int:
        """A time on ``day`` (index in the period), in the sites' busy hours."""
        return self.day0 + day * DAY_MS + self.rng.choice(HOURS) * HOUR_MS + self.rng.randrange(HOUR_MS)

    def plan(self, t: int, visit: Callable[..., None], *args: Any) -> None:
        day = (t - self.day0) // DAY_MS
        if 0 <= day < DAYS:
            self.seq += 1
            self.plans[day].append((t, self.seq, visit, args))

    # -- planning ------------------------------------------------------------------------------------------------

    def plan_person(self, person: _Person, i: int) -> None:
        """Browsing visits over the period; an identify on the first visit (early), at a login weeks later
        (late), or from the CRM weeks later, linking the browser the user never logged in on (late_server);
        then lead stages and email touches for the identified."""
        rng = self.rng
        kind = ("early", "late", "late_server")[i] if i < 3 else rng.choices(
            ("anon", "early", "late", "late_server"), (45, 30, 15, 10))[0]
        first = rng.randrange(DAYS)
        self.plan(self.at(first), self.browse, person, kind == "early")
        for _ in range(min(6, int(rng.expovariate(1 / 1.5)))):
            self.plan(self.at(rng.randint(first, DAYS - 1)), self.browse, person, False)
        known = self.at(first)
        if kind in ("late", "late_server"):
            known = self.at(first + rng.randint(14, 35))
            if kind == "late":
                self.plan(known, self.login, person)
            else:
                self.plan(known, self.server, person, "identify", person.devices[0].anonymous_id,
                          {"traits": {"source": "crm_match"}}, {})
        if kind == "anon":
            return
        t = known + rng.randint(HOUR_MS, 2 * DAY_MS)
        for stage in stage_walk(rng):
            self.plan(t, self.server, person, "lead_stage", "", stage_props(rng, stage), {})
            t += rng.randint(DAY_MS, 7 * DAY_MS)
        for _ in range(rng.randint(0, 2)):
            fields = {"channel": rng.choice(("edm_0312", "edm_invite"))}
            if rng.random() < 0.3:
                fields["sharer"] = rng.choice(SHARERS)
            self.plan(known + rng.randint(0, 20 * DAY_MS), self.server, person, "email_open", "",
                      {"campaign": "newsletter"}, fields)

    def plan_stream(self, stream: _Stream, day: int, live: int) -> None:
        """Registrations in the ten days before; live viewers (most of them registrants, some walk-ins), then
        replays over the ten days after, mostly by registrants who missed it."""
        rng = self.rng
        registrants = rng.sample(self.people, round(live * 0.85 / 0.65))
        attendees = []
        for person in registrants:
            self.plan(self.at(day - rng.randint(1, 10)), self.register, person, stream)
            if rng.random() < 0.65:
                attendees.append(person)
            elif rng.random() < 0.4:
                self.plan(self.at(day + rng.randint(1, 10)), self.replay, person, stream)
        attendees += rng.sample(self.people, round(live * 0.15))
        for person in attendees:
            self.plan(stream.start - rng.randint(0, 5 * MINUTE_MS), self.live, person, stream)
            if rng.random() < 0.1:
                self.plan(self.at(day + rng.randint(1, 10)), self.replay, person, stream)
        for person in rng.sample(self.people, round(live * 0.1)):
            self.plan(self.at(day + rng.randint(1, 10)), self.replay, person, stream)

    def run_day(self, day: int) -> list[Row]:
        """The events of the visits planned to start on ``day`` (a visit may run past midnight)."""
        self.rows = []
        for t, _, visit, args in sorted(self.plans[day], key=lambda p: (p[0], p[1])):
            visit(t, *args)
        self.plans[day] = []
        return self.rows

    # -- visits --------------------------------------------------------------------------------------------------

    def _visit(self, t: int, person: _Person, device: _Device | None = None) -> _Visit:
        rng = self.rng
        device = device or (person.devices[0] if rng.random() < 0.75 else person.devices[-1])
        return _Visit(self, device, t)

    def arrival(self, purpose: str) -> tuple[dict[str, str], str]:
        """(URL parameters, referrer) of an arrival."""
        return arrival(self.rng, purpose, CODES, SHARERS)

    def browse(self, t: int, person: _Person, identify: bool) -> None:
        rng = self.rng
        v = self._visit(t, person, person.devices[0] if identify else None)
        v.land(rng.choice(list(PAGES)), self.arrival("browse"))
        pages = rng.choice((0, 0, 1, 1, 2, 3, 4))
        for _ in range(pages):
            if rng.random() < 0.3:
                v.download()
            v.go(rng.choice(list(PAGES)))
        if rng.random() < 0.3:
            v.download()
        if identify or rng.random() < 0.1:
            v.go("/contact")
            v.form("contact")
            if identify:
                v.identify(person.user_id)
        if pages or rng.random() < 0.6:  # a bounce may close the tab before its page_leave gets out
            v.read()

    def login(self, t: int, person: _Person) -> None:
        v = self._visit(t, person, person.devices[0])
        v.land("/login", ({}, ""))
        v.identify(person.user_id)
        v.go(self.rng.choice(list(PAGES)))
        v.read()

    def register(self, t: int, person: _Person, stream: _Stream) -> None:
        rng = self.rng
        v = self._visit(t, person)
        v.land(f"/live/{stream.stream_id}", self.arrival("register"))
        v.wait(20 * SECOND_MS, 3 * MINUTE_MS)
        if rng.random() < 0.5:
            v.form(f"register-{stream.stream_id}")
        v.wait(SECOND_MS, 5 * SECOND_MS)
        v.add("registration", orjson.dumps({"stream_id": stream.stream_id}).decode())
        if rng.random() < 0.4:
            v.go(rng.choice(list(PAGES)))
        v.read()

    def live(self, t: int, person: _Person, stream: _Stream) -> None:
        rng = self.rng
        v = self._visit(t, person)
        v.land(f"/live/{stream.stream_id}/watch", self.arrival("live"))
        v.t = max(v.t + SECOND_MS, stream.start + rng.randint(0, 10 * MINUTE_MS))
        left = stream.start + stream.minutes * MINUTE_MS - v.t
        if left > 2 * MINUTE_MS:
            full = rng.random() < 0.2
            v.watch(stream, "live", left - rng.randint(0, 30 * SECOND_MS) if full
                    else rng.randint(MINUTE_MS, left * 3 // 4))
        v.read()

    def replay(self, t: int, person: _Person, stream: _Stream) -> None:
        rng = self.rng
        v = self._visit(t, person)
        v.land(f"/live/{stream.stream_id}/replay", self.arrival("replay"))
        if rng.random() < 0.3:
            v.form("replay-gate")  # 留资查看回放
        length = stream.minutes * MINUTE_MS
        v.watch(stream, "replay", length if rng.random() < 0.15 else rng.randint(30 * SECOND_MS, length // 3))
        v.read()

    def server(self, t: int, person: _Person, name: str, anonymous_id: str, props: dict[str, Any],
               fields: dict[str, str]) -> None:
        """A backend event (CRM, email provider): user_id, no URL, no session; the CRM syncs at night."""
        received = (t // DAY_MS + 1) * DAY_MS + 2 * HOUR_MS if name != "email_open" else t + MINUTE_MS
        self.rows.append(Row(site_id=self.site_id, event_id=self.uid(), event=name, ts=t / 1000,
                             received_at=received / 1000, anonymous_id=anonymous_id, user_id=person.user_id,
                             props=orjson.dumps(props).decode(), device_type="other", **fields))


class _Visit:
    """One stay of a browser on a site: its events, as the JS SDK sends them and the gateway stores them."""

    def __init__(self, site: _Site, device: _Device, t: int) -> None:
        self.site, self.rng, self.device, self.t = site, site.rng, device, t
        self.session_id = site.uid()
        self.url = self.referrer = self.title = ""

    def wait(self, low_ms: int, high_ms: int) -> None:
        self.t += self.rng.randint(low_ms, high_ms)

    def row(self, name: str, props: str = "{}") -> Row:
        """The row as gateway.ingest.rows.build_row makes it: the event's stamped touch fields win, the URL's
        fill gaps."""
        d, url, referrer = self.device, split_url(self.url), split_url(self.referrer)
        stamp, params, agent = d.stamp, url.params, d.agent
        return Row(
            site_id=self.site.site_id, event_id=self.site.uid(), event=name, ts=self.t / 1000,
            received_at=(self.t + 700) / 1000, anonymous_id=d.anonymous_id, user_id=d.user_id,
            session_id=self.session_id,
            channel=stamp.get("channel") or params.get("channel", ""),
            utm_source=stamp.get("utm_source") or params.get("utm_source", ""),
            utm_medium=stamp.get("utm_medium") or params.get("utm_medium", ""),
            utm_campaign=stamp.get("utm_campaign") or params.get("utm_campaign", ""),
            utm_content=stamp.get("utm_content") or params.get("utm_content", ""),
            utm_term=stamp.get("utm_term") or params.get("utm_term", ""),
            sharer=stamp.get("sharer") or params.get("sharer", ""),
            url=self.url, url_host=url.host, url_path=url.path, url_query=url.query, referrer=self.referrer,
            referrer_host=referrer.host, title=self.title, props=props, browser=agent.browser,
            browser_version=agent.browser_version, os=agent.os, os_version=agent.os_version,
            device_type=agent.device_type, is_bot=agent.is_bot, ip=d.ip, user_agent=d.user_agent)

    def add(self, name: str, props: str = "{}") -> None:
        self.site.rows.append(self.row(name, props))

    def land(self, path: str, arrival: tuple[dict[str, str], str]) -> None:
        params, self.referrer = arrival
        self.url = self.site.origin + path + ("?" + urlencode(params) if params else "")
        self.title = PAGES.get(path, "直播") + " | " + SITES[self.site.site_id]
        if params:  # a touch: the SDK stamps its parameters on the browser's later events
            self.device.stamp = {("channel" if k == "ch" else k): v for k, v in params.items()}
        self.add("page_view")

    def read(self) -> None:
        """Time on the page, then page_leave."""
        rng = self.rng
        dwell = rng.randint(5 * SECOND_MS, 4 * MINUTE_MS)
        self.t += dwell
        scroll = rng.randint(90, 100) if rng.random() < 0.35 else rng.randint(5, 89)
        self.add("page_leave", f'{{"engaged_ms":{int(dwell * rng.uniform(0.3, 1))},"scroll_pct":{scroll}}}')

    def go(self, path: str) -> None:
        """Internal navigation: leave the page, open the next with this one as referrer."""
        self.read()
        self.referrer, self.url = self.url, self.site.origin + path
        self.title = PAGES.get(path, "") + " | " + SITES[self.site.site_id]
        self.wait(300, 2 * SECOND_MS)
        self.add("page_view")

    def download(self) -> None:
        path = split_url(self.url).path
        if path in FILES:
            self.wait(3 * SECOND_MS, MINUTE_MS)
            file_path, name = FILES[path]
            self.add("download", orjson.dumps({"file_url": self.site.origin + file_path, "file_name": name}).decode())

    def form(self, form_id: str) -> None:
        self.wait(20 * SECOND_MS, 3 * MINUTE_MS)
        self.add("form_submit", orjson.dumps({"form_id": form_id, "fields": {"company": None, "phone": None}}).decode())

    def identify(self, user_id: str) -> None:
        self.wait(200, 2 * SECOND_MS)
        self.device.user_id = user_id
        self.add("identify", '{"traits":{"industry":"finance"}}')

    def watch(self, stream: _Stream, mode: str, target_ms: int) -> None:
        """One view: live_join, a heartbeat per 10 s played (cumulative watched_ms; a few lost on the way),
        interactions from the chatty, live_leave. The hot loop of the generator: rows are copies of one."""
        rng, rows, uid = self.rng, self.site.rows, self.site.uid
        base = f'"stream_id":"{stream.stream_id}","view_id":"{uid()}","mode":"{mode}"'
        self.add("live_join", "{" + base + "}")
        beat = self.row("live_heartbeat")
        known = mode == "replay" or stream.live_duration
        duration = f',"duration_s":{stream.minutes * 60}' if known else ""
        losing, chatty = rng.random() < 0.3, rng.random() < 0.3
        random_, t, played = rng.random, self.t, 0
        while played < target_ms:
            step = min(HEARTBEAT_MS, target_ms - played)
            t += step + int(random_() * 40)
            played += step
            if losing and random_() < 0.05:
                continue
            position = f',"position_s":{played / 1000}' if mode == "replay" else ""
            rows.append(replace(beat, event_id=uid(), ts=t / 1000, received_at=(t + 400) / 1000,
                                props=f'{{{base},"watched_ms":{played}{position}{duration}}}'))
            if chatty and random_() < 0.03:
                kind = rng.choice(KINDS if mode == "live" else KINDS[:2])
                self.t = t + rng.randint(SECOND_MS, 8 * SECOND_MS)
                self.add("interaction", f'{{"kind":"{kind}","stream_id":"{stream.stream_id}"}}')
        self.t = t
        self.wait(200, 2 * SECOND_MS)
        self.add("live_leave", "{" + base + "}")


class _Segments:
    """Encoded rows cut into spool segments once they reach the spool's size, named as the spool names them."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.parts: list[bytes] = []
        self.size = 0
        self.count = 0

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= self.max_bytes:
            self.seal()

    def seal(self) -> None:
        if self.parts:
            (self.directory / f"{self.count:012d}{SEALED}").write_bytes(b"".join(self.parts))
            self.count += 1
            self.parts, self.size = [], 0


def generate(directory: Path, events: int, day0: int, now_ms: int, seed: int = 7) -> tuple[int, int]:
    """Write about ``events`` events as segments in time order, one day at a time; (rows, bytes) written."""
    rng = random.Random(seed)
    sites = [_Site(rng, site_id, day0, events) for site_id in SITES]
    segments = _Segments(directory, ServerConfig().segment_max_bytes)
    rows = size = 0
    for day in range(DAYS):
        today = [r for site in sites for r in site.run_day(day) if r.ts * 1000 <= now_ms]
        today.sort(key=lambda r: r.ts)
        for i in range(0, len(today), 5000):
            data = encode(today[i:i + 5000])
            segments.add(data)
            size += len(data)
        rows += len(today)
    segments.seal()
    return rows, size


# --- loading --------------------------------------------------------------------------------------------------------


#: The migrations of the raw table itself: its creation and the loader's dedup index.
EVENTS_MIGRATIONS = ("0001_events.sql", "0009_dedup_ts.sql")


class EventsOnlyStore(Store):
    """Store (b): the raw table alone has no referrer rules table to write the config's rules into, and no
    persons dictionary to reload."""

    def _write_referrer_channels(self) -> None:
        pass

    def refresh_persons(self) -> None:
        pass


@contextlib.contextmanager
def events_table_only(scratch: Path) -> Iterator[None]:
    """Point the migrator at the raw table's migrations and no views: the raw table (with the loader's dedup
    index), without a materialized view."""
    migrations, views = scratch / "migrations", scratch / "views"
    migrations.mkdir(parents=True)
    views.mkdir()
    for name in EVENTS_MIGRATIONS:
        shutil.copy(store_module.MIGRATIONS / name, migrations)
    saved = store_module.MIGRATIONS, store_module.VIEWS
    store_module.MIGRATIONS, store_module.VIEWS = migrations, views
    try:
        yield
    finally:
        store_module.MIGRATIONS, store_module.VIEWS = saved


@dataclass
class Load:
    rows: int
    insert_s: float
    wall_s: float
    inserts: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.insert_s


def print_loads(loads: list[tuple[str, Load]]) -> None:
    """The table of loads compared in one run (this benchmark's and bench_loader's)."""
    print(f"\n{'load (gateway Loader, insert time)':<44}{'rows/s':>12}{'inserts':>9}{'wall s':>9}")
    for name, result in loads:
        print(f"{name:<44}{result.rows_per_s:>12,.0f}{result.inserts:>9}{result.wall_s:>9.1f}")


def load(store: Store, segments: list[Path], spool_dir: Path, expected: int, duplicates: int = 0) -> Load:
    """Run the gateway's Loader over (hard links to) the segments until the spool is empty; the insert time is
    the loader's own measure (its metrics), as /metrics reports it. ``expected``: the rows events must gain;
    ``duplicates``: the segments' other rows, which the dedup must drop (the rate counts them all)."""
    before = int(store.query(f"SELECT count() FROM {DATABASE}.events", readonly=False))
    spool_dir.mkdir()
    for segment in segments:
        os.link(segment, spool_dir / segment.name)
    spool = Spool(spool_dir)
    spool.recover()
    metrics = Metrics()
    loader = Loader(spool, store, metrics, max_bytes=ServerConfig().load_max_bytes)
    started = time.perf_counter()
    loader.start()
    while spool.sealed():
        if metrics.loader_errors or metrics.quarantined_rows:
            loader.stop(10)
            raise SystemExit(f"the loader failed: {loader.part.error}; {metrics.quarantined_rows} rows set aside")
        time.sleep(0.05)
    wall = time.perf_counter() - started
    loader.stop(60)
    gained = int(store.query(f"SELECT count() FROM {DATABASE}.events", readonly=False)) - before
    if gained != expected or metrics.loaded_rows != expected + duplicates:
        raise SystemExit(f"wrote {expected} new rows and {duplicates} duplicates, the loader inserted "
                         f"{metrics.loaded_rows}, events gained {gained}")
    return Load(metrics.loaded_rows, metrics.insert_seconds_sum, wall, metrics.insert_count)


def fill_costs(store: Store, day0: int, seed: int = 7) -> None:
    """Daily costs of every channel code and a few channels of other kinds, for each site and day of the data, as
    an admin imports them (channel_roi reads them)."""
    rng = random.Random(seed)
    channels = (*CODES, "search", "wechat", "social", "baidu", "edm_replay", "sms_reminder")
    rows = [{"site_id": site_id, "channel": channel, "day": str(datetime.fromtimestamp(day0 / 1000, UTC).date()
                                                                 + timedelta(days=day)),
             "cost": round(rng.uniform(100, 5000), 2)}
            for site_id in SITES for channel in channels for day in range(DAYS)]
    store.query(f"INSERT INTO {DATABASE}.channel_costs FORMAT JSONEachRow\n"
                + "\n".join(orjson.dumps(r).decode() for r in rows), readonly=False)


def settle(store: Store) -> float:
    """Wait (up to SETTLE_S) for the merges the load started: queries should meet the parts a running
    install has, not the load's backlog. Seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < SETTLE_S:
        if store.query("SELECT count() FROM system.merges", readonly=False).strip() == b"0":
            break
        time.sleep(1)
    return time.perf_counter() - started


# --- the views and their baselines ----------------------------------------------------------------------------------

# The baselines' shared parts, as CTEs over clicktrail.events of one site ($site). A person is resolved as the
# views resolve it: the row's user_id, else the user_id of its anonymous id's earliest identify, else the
# anonymous id.

IDS = """ids AS (
    SELECT anonymous_id, argMin(user_id, (ts, user_id)) AS person_id, min(ts) AS identified_at
    FROM clicktrail.events
    WHERE site_id = '$site' AND event = 'identify' AND anonymous_id != '' AND user_id != ''
    GROUP BY anonymous_id
)"""

# Every touch of the site (within $touch_time) with its person and channel.
TOUCHES = """touches AS (
    SELECT if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id,
           e.ts AS ts, e.event_id AS event_id, e.touch_sharer AS sharer,
           if(e.direct != '', e.direct, arrayFirst(c -> c != '', arrayConcat(
               arrayMap(d -> dictGetOrDefault('clicktrail.referrer_channels_dict', 'channel', ('$site', d), ''),
                        e.domains),
               arrayMap(d -> dictGetOrDefault('clicktrail.referrer_channels_dict', 'channel', ('', d), ''), e.domains),
               [e.referrer_host]))) AS channel
    FROM (
        SELECT anonymous_id, user_id, ts, event_id, referrer_host,
               if(url = '', if(channel != '', channel, utm_source), if(url_ch != '', url_ch, url_utm_source)) AS direct,
               if(url = '', sharer, decodeURLFormComponent(extractURLParameter(url, 'sharer'))) AS touch_sharer,
               arrayMap(k -> arrayStringConcat(arraySlice(splitByChar('.', referrer_host), k), '.'),
                        arrayEnumerate(splitByChar('.', referrer_host))) AS domains
        FROM (
            SELECT *, decodeURLFormComponent(extractURLParameter(url, 'ch')) AS url_ch,
                   decodeURLFormComponent(extractURLParameter(url, 'utm_source')) AS url_utm_source
            FROM clicktrail.events
            WHERE site_id = '$site' $touch_time
        )
        WHERE (url = '' AND (channel != '' OR utm_source != ''))
           OR (event = 'page_view' AND (url_ch != '' OR url_utm_source != ''
                                        OR (referrer_host != '' AND referrer_host != url_host)))
    ) AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
)"""

# Every viewing (view_id) of the site's streams, its heartbeats folded, with its person.
VIEWS = """views AS (
    SELECT v.stream_id AS stream_id, v.view_id AS view_id, v.mode AS mode,
           if(v.user_id != '', v.user_id, if(i.person_id != '', i.person_id, v.anonymous_id)) AS person_id,
           v.viewing AS viewing, v.watched_ms AS watched_ms, v.duration_s AS duration_s,
           v.first_ts AS first_ts, v.last_ts AS last_ts, v.first_view_ts AS first_view_ts
    FROM (
        SELECT JSONExtractString(props, 'stream_id') AS stream_id, JSONExtractString(props, 'view_id') AS view_id,
               max(JSONExtractString(props, 'mode')) AS mode, min(anonymous_id) AS anonymous_id,
               max(user_id) AS user_id, max(event != 'live_leave') AS viewing,
               max(JSONExtractUInt(props, 'watched_ms')) AS watched_ms,
               max(JSONExtractFloat(props, 'duration_s')) AS duration_s, min(ts) AS first_ts, max(ts) AS last_ts,
               minIfOrNull(ts, event != 'live_leave') AS first_view_ts
        FROM clicktrail.events
        WHERE site_id = '$site' AND event IN ('live_join', 'live_heartbeat', 'live_leave')
        GROUP BY stream_id, view_id
    ) AS v
    LEFT JOIN ids AS i ON i.anonymous_id = v.anonymous_id
)"""

# Registrations and stream interactions, one row per event, with its person.
ACTS = """acts AS (
    SELECT JSONExtractString(e.props, 'stream_id') AS stream_id, e.event AS event,
           JSONExtractString(e.props, 'kind') AS kind, e.ts AS ts,
           if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site'
      AND (e.event = 'registration' OR (e.event = 'interaction' AND JSONExtractString(e.props, 'stream_id') != ''))
)"""

# Heartbeats of the live mode by minute, distinct persons ($minute_time: a bound on ts).
MINUTES = """minutes AS (
    SELECT JSONExtractString(e.props, 'stream_id') AS stream_id, toStartOfMinute(e.ts) AS minute,
           uniqExact(if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id))) AS viewers
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site' AND e.event = 'live_heartbeat' AND JSONExtractString(e.props, 'mode') = 'live'
      $minute_time
    GROUP BY stream_id, minute
)"""

# Sessions of the site with their entry, person and entry channel, those starting in the month.
SESSIONS = """sessions AS (
    SELECT '$site' AS site_id, s.anonymous_id AS anonymous_id, s.session_id AS session_id, s.person_id AS person_id,
           s.start_ts AS start, s.end_ts AS `end`,
           (toUnixTimestamp64Milli(s.end_ts) - toUnixTimestamp64Milli(s.start_ts)) / 1000 AS duration_s,
           s.views AS pageviews, s.entry_path AS entry_path,
           if(t.ts >= s.entry_ts - INTERVAL 90 DAY AND t.channel != '', t.channel, '(direct)') AS entry_channel,
           s.entry_utm_term AS entry_utm_term, toDate(s.start_ts) AS day, s.views = 1 AND NOT s.engaged AS bounce
    FROM (
        SELECT r.anonymous_id AS anonymous_id, r.session_id AS session_id, r.start_ts AS start_ts,
               r.end_ts AS end_ts, r.views AS views, r.engaged AS engaged,
               if(r.views > 0, r.entry.1, r.first_event.1) AS entry_ts,
               if(r.views > 0, r.entry.3, '') AS entry_path,
               if(r.views > 0, r.entry.4, '') AS entry_utm_term,
               if(r.views > 0, r.entry.5, r.first_event.3) AS entry_user_id,
               if(entry_user_id != '', entry_user_id, if(i.person_id != '', i.person_id, r.anonymous_id)) AS person_id
        FROM (
            SELECT anonymous_id, session_id, min(ts) AS start_ts, max(ts) AS end_ts,
                   countIf(event = 'page_view') AS views, max(event NOT IN ('page_view', 'page_leave')) AS engaged,
                   argMinIf((ts, event_id, url_path, utm_term, user_id), (ts, event_id), event = 'page_view') AS entry,
                   argMin((ts, event_id, user_id), (ts, event_id)) AS first_event
            FROM clicktrail.events
            WHERE site_id = '$site' AND session_id != ''
            GROUP BY anonymous_id, session_id
            HAVING start_ts >= '$t0' AND start_ts < '$t1'
        ) AS r
        LEFT JOIN ids AS i ON i.anonymous_id = r.anonymous_id
    ) AS s
    ASOF LEFT JOIN (SELECT person_id, ts, channel FROM touches) AS t
        ON t.person_id = s.person_id AND t.ts <= s.entry_ts
)"""

# Every lead_stage of the site with its person, rank in the lifecycle and amount.
STAGES = """stages AS (
    SELECT if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id,
           e.ts AS ts, e.event_id AS event_id, JSONExtractString(e.props, 'stage') AS stage,
           indexOf(['lead', 'mql', 'sal', 'sql', 'opportunity', 'won'], stage) AS rank,
           JSONExtractFloat(e.props, 'amount') AS amount
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site' AND e.event = 'lead_stage'
)"""

# One row per person with a lead_stage or a form_submit: when they became a lead, entered the lifecycle and reached
# each stage (NULL: never), their latest stage and first won.
LEADS = """leads AS (
    SELECT person_id, min(ts) AS lead_at, minIfOrNull(ts, is_stage) AS entered_at,
           [entered_at, minIfOrNull(ts, rank >= 2), minIfOrNull(ts, rank >= 3), minIfOrNull(ts, rank >= 4),
            minIfOrNull(ts, rank >= 5), minIfOrNull(ts, rank >= 6)] AS reached,
           argMaxIf(stage, (ts, event_id), is_stage) AS latest_stage, minIfOrNull(ts, stage = 'won') AS first_won_at
    FROM (
        SELECT person_id, ts, event_id, stage, rank, 1 AS is_stage FROM stages
        UNION ALL
        SELECT if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)), e.ts, e.event_id,
               '', 0, 0
        FROM clicktrail.events AS e
        LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
        WHERE e.site_id = '$site' AND e.event = 'form_submit'
    )
    GROUP BY person_id
)"""

# Each person's first touch ever ($touch_time must be empty).
FIRST_TOUCHES = """first_touches AS (
    SELECT person_id, argMin(channel, (ts, event_id)) AS channel, argMin(sharer, (ts, event_id)) AS sharer,
           min(ts) AS first_ts
    FROM touches
    GROUP BY person_id
)"""

# The funnel FUNNEL_STEPS over the data's days [$q0, $q1] with a window of $window_s: per person at step 1, the times
# of their first way through as far as they got.
CHAINS = """chains AS (
    SELECT person_id, arrayFirst(c -> length(c) = arrayMax(arrayMap(x -> length(x), cs)), cs) AS chain
    FROM (
        SELECT person_id,
               arrayMap(i -> arrayFold(
                            (acc, e) -> if(length(acc) < 4 AND e.2[length(acc) + 1] AND e.1 > acc[-1]
                                           AND e.1 <= acc[1] + $window_s * 1000, arrayPushBack(acc, e.1), acc),
                            arraySlice(evs, i + 1), [evs[i].1]),
                        arrayFilter(i -> evs[i].2[1], arrayEnumerate(evs))) AS cs
        FROM (
            SELECT person_id, arraySort(groupArray((ms, matched))) AS evs
            FROM (
                SELECT if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id,
                       toUnixTimestamp64Milli(e.ts) AS ms,
                       [e.event = 'page_view' AND toDate(e.ts) <= '$q1', e.event = 'registration',
                        e.event = 'live_join' AND JSONType(e.props, 'mode') = 'String'
                            AND JSONExtractString(e.props, 'mode') = 'live',
                        e.event = 'form_submit'] AS matched
                FROM clicktrail.events AS e
                LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
                WHERE e.site_id = '$site' AND e.event IN ('page_view', 'registration', 'live_join', 'form_submit')
                  AND e.ts >= '$q0 00:00:00' AND e.ts < toDateTime64('$q1', 3, 'UTC') + INTERVAL 1 DAY
                                                       + INTERVAL $window_s SECOND
            )
            WHERE has(matched, 1)
            GROUP BY person_id
        )
    )
    WHERE length(cs) > 0
)"""

FRAGMENTS = {"ids": IDS, "touches": TOUCHES, "views": VIEWS, "acts": ACTS, "minutes": MINUTES, "sessions": SESSIONS,
             "stages": STAGES, "leads": LEADS, "first_touches": FIRST_TOUCHES, "chains": CHAINS}

RAW: dict[str, str] = {
    "identities": """
SELECT site_id, anonymous_id, argMin(user_id, (ts, user_id)) AS person_id, min(ts) AS identified_at
FROM clicktrail.events
WHERE site_id = '$site' AND event = 'identify' AND anonymous_id != '' AND user_id != ''
GROUP BY site_id, anonymous_id
HAVING identified_at >= '$t0' AND identified_at < '$t1'""",
    "live_stream_stats": """
WITH $ids, $views, $acts, $minutes,
people AS (
    SELECT stream_id, person_id, max(registered) AS registered, max(live) AS live, max(replay) AS replay,
           max(interacted) AS interacted, sum(watch_ms) AS watch_ms, sum(live_ms) AS live_ms,
           sum(replay_ms) AS replay_ms, max(completed) AS completed, max(known_duration) AS known_duration
    FROM (
        SELECT stream_id, person_id, 0 AS registered, mode = 'live' AS live, mode = 'replay' AS replay,
               0 AS interacted, watched_ms AS watch_ms, if(mode = 'live', watched_ms, 0) AS live_ms,
               if(mode = 'replay', watched_ms, 0) AS replay_ms,
               duration_s > 0 AND least(1, watched_ms / (duration_s * 1000)) >= 0.9 AS completed,
               duration_s > 0 AS known_duration
        FROM views
        WHERE viewing
        UNION ALL
        SELECT stream_id, person_id, event = 'registration', 0, 0, event = 'interaction', 0, 0, 0, 0, 0 FROM acts
    )
    GROUP BY stream_id, person_id
),
bounds AS (
    SELECT stream_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts
    FROM (SELECT stream_id, first_ts, last_ts FROM views UNION ALL SELECT stream_id, ts, ts FROM acts)
    GROUP BY stream_id
),
peaks AS (SELECT stream_id, max(viewers) AS peak_concurrency FROM minutes GROUP BY stream_id),
totals AS (
    SELECT stream_id,
           countIf(registered) AS registrants, countIf(live OR replay) AS viewers, countIf(live) AS live_viewers,
           countIf(replay) AS replay_viewers, countIf(registered AND live) AS attendees,
           countIf(registered AND NOT live) AS no_shows,
           countIf(registered AND NOT live AND replay) AS no_show_replay_viewers,
           sum(watch_ms) AS watch_ms_total, sum(live_ms) AS live_watch_ms_total,
           sum(replay_ms) AS replay_watch_ms_total, countIf(completed) AS completers,
           countIf(known_duration) AS with_duration, countIf(interacted AND (live OR replay)) AS interactors
    FROM people
    GROUP BY stream_id
)
SELECT '$site' AS site_id, t.stream_id AS stream_id, registrants, viewers, live_viewers, replay_viewers, attendees,
       if(registrants = 0, 0, attendees / registrants) AS attendance_rate, no_shows, no_show_replay_viewers,
       watch_ms_total, if(viewers = 0, 0, watch_ms_total / viewers) AS avg_watch_ms,
       live_watch_ms_total, replay_watch_ms_total, p.peak_concurrency AS peak_concurrency,
       if(with_duration = 0, 0, completers / with_duration) AS completion_rate,
       interactors, if(viewers = 0, 0, interactors / viewers) AS interaction_rate,
       b.first_ts AS first_ts, b.last_ts AS last_ts
FROM totals AS t
LEFT JOIN peaks AS p ON p.stream_id = t.stream_id
LEFT JOIN bounds AS b ON b.stream_id = t.stream_id
WHERE b.first_ts >= '$t0' AND b.first_ts < '$t1'""",
    "live_concurrency": """
WITH $ids, $minutes
SELECT '$site' AS site_id, stream_id, minute, viewers FROM minutes""",
    "live_retention": """
SELECT '$site' AS site_id, stream_id, mode, minute, views, views / total AS share
FROM (
    SELECT stream_id, mode, minute, count() AS views, any(total) AS total
    FROM (
        SELECT stream_id, mode, watched_ms, count() OVER (PARTITION BY stream_id, mode) AS total
        FROM (
            SELECT JSONExtractString(props, 'stream_id') AS stream_id, JSONExtractString(props, 'view_id') AS view_id,
                   max(JSONExtractString(props, 'mode')) AS mode,
                   max(JSONExtractUInt(props, 'watched_ms')) AS watched_ms, max(event != 'live_leave') AS viewing
            FROM clicktrail.events
            WHERE site_id = '$site' AND event IN ('live_join', 'live_heartbeat', 'live_leave')
            GROUP BY stream_id, view_id
        )
        WHERE viewing
    )
    ARRAY JOIN range(toUInt64(intDiv(watched_ms, 60000) + 1)) AS minute
    GROUP BY stream_id, mode, minute
)""",
    "live_interactions": """
WITH $ids, $views, $acts,
viewers AS (SELECT DISTINCT stream_id, person_id FROM views WHERE viewing)
SELECT '$site' AS site_id, a.stream_id AS stream_id, a.kind AS kind, count() AS interactions,
       uniqExactIf(a.person_id, (a.stream_id, a.person_id) IN (SELECT stream_id, person_id FROM viewers))
           AS interactors,
       if(any(n.viewers) = 0, 0, interactors / any(n.viewers)) AS interaction_rate
FROM acts AS a
LEFT JOIN (SELECT stream_id, count() AS viewers FROM viewers GROUP BY stream_id) AS n ON n.stream_id = a.stream_id
WHERE a.event = 'interaction'
GROUP BY stream_id, kind""",
    "stream_audience": """
WITH $ids, $views, $acts, $touches,
audience AS (
    SELECT stream_id, person_id,
           minIf(ts, event = 'registration') AS first_registration,
           countIf(event = 'registration') > 0 AS registered,
           countIf(event = 'interaction') AS interactions,
           sumIf(watched_ms, mode = 'live') AS live_watch_ms,
           sumIf(watched_ms, mode = 'replay') AS replay_watch_ms,
           min(first_view_ts) AS first_view
    FROM (
        SELECT stream_id, person_id, event, ts, '' AS mode, toUInt64(0) AS watched_ms,
               CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS first_view_ts
        FROM acts
        UNION ALL
        SELECT stream_id, person_id, '', first_ts, mode, watched_ms, first_view_ts FROM views WHERE viewing
    )
    GROUP BY stream_id, person_id
    HAVING registered OR first_view IS NOT NULL
),
registration_channels AS (
    SELECT a.stream_id AS stream_id, a.person_id AS person_id,
           if(t.event_id != '' AND t.ts >= a.first_registration - INTERVAL 90 DAY, t.channel, '(direct)') AS channel
    FROM (SELECT * FROM audience WHERE registered) AS a
    ASOF LEFT JOIN touches AS t ON t.person_id = a.person_id AND t.ts <= a.first_registration
),
first_touches AS (SELECT person_id, argMin(channel, (ts, event_id)) AS channel FROM touches GROUP BY person_id),
later AS (
    SELECT e.event AS event, e.ts AS ts,
           if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site' AND e.event IN ('page_view', 'download', 'form_submit')
),
after AS (
    SELECT a.stream_id AS stream_id, a.person_id AS person_id,
           countIf(l.event = 'page_view' AND l.ts > a.t0 AND l.ts <= a.t0 + INTERVAL 14 DAY) AS pages_after,
           countIf(l.event = 'download' AND l.ts > a.t0 AND l.ts <= a.t0 + INTERVAL 14 DAY) AS downloads_after,
           countIf(l.event = 'form_submit' AND l.ts > a.t0 AND l.ts <= a.t0 + INTERVAL 14 DAY) AS forms_after
    FROM (SELECT stream_id, person_id, ifNull(first_view, first_registration) AS t0 FROM audience) AS a
    LEFT JOIN later AS l ON l.person_id = a.person_id
    GROUP BY stream_id, person_id
)
SELECT '$site' AS site_id, a.stream_id AS stream_id, a.person_id AS person_id,
       if(a.registered, a.first_registration, NULL) AS registered_at,
       if(a.registered, r.channel, NULL) AS registration_channel,
       if(f.channel != '', f.channel, '(direct)') AS first_touch_channel,
       a.live_watch_ms AS live_watch_ms, a.replay_watch_ms AS replay_watch_ms, a.interactions AS interactions,
       x.pages_after AS pages_after, x.downloads_after AS downloads_after, x.forms_after AS forms_after
FROM audience AS a
LEFT JOIN registration_channels AS r ON r.stream_id = a.stream_id AND r.person_id = a.person_id
LEFT JOIN first_touches AS f ON f.person_id = a.person_id
LEFT JOIN after AS x ON x.stream_id = a.stream_id AND x.person_id = a.person_id""",
    "touch_channels": """
WITH $ids, $touches
SELECT '$site' AS site_id, person_id, ts, event_id, sharer, channel FROM touches""",
    "event_channels": """
WITH $ids, $touches
SELECT '$site' AS site_id, e.event_id AS event_id, e.event AS event, e.ts AS ts, e.person_id AS person_id,
       if(t.event_id != '' AND t.ts >= e.ts - INTERVAL 90 DAY, t.channel, '(direct)') AS channel,
       if(t.event_id != '' AND t.ts >= e.ts - INTERVAL 90 DAY, t.sharer, '') AS sharer
FROM (
    SELECT e.event_id AS event_id, e.event AS event, e.ts AS ts,
           if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site' AND $event_channels_filter
) AS e
ASOF LEFT JOIN touches AS t ON t.person_id = e.person_id AND t.ts <= e.ts""",
    "sessions": """
WITH $ids, $touches, $sessions
SELECT * FROM sessions""",
    "channel_sessions": """
WITH $ids, $touches, $sessions
SELECT site_id, day, channel, utm_term, n AS sessions, bounced AS bounces, bounced / n AS bounce_rate,
       pages / n AS pages_per_session, duration / n AS avg_duration_s
FROM (
    SELECT site_id, day, entry_channel AS channel, entry_utm_term AS utm_term, count() AS n,
           countIf(bounce) AS bounced, sum(pageviews) AS pages, sum(duration_s) AS duration
    FROM sessions
    GROUP BY site_id, day, channel, utm_term
)""",
    "content_engagement": """
WITH $ids
SELECT '$site' AS site_id, url_path, n_views AS views, n_readers AS readers,
       if(n_leaves = 0, 0., engaged / n_leaves) AS avg_engaged_ms,
       if(n_leaves = 0, 0., read_through / n_leaves) AS read_through_rate
FROM (
    SELECT e.url_path AS url_path, countIf(e.event = 'page_view') AS n_views,
           uniqExactIf(if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)),
                       e.event = 'page_view') AS n_readers,
           countIf(e.event = 'page_leave') AS n_leaves,
           sumIf(JSONExtractFloat(e.props, 'engaged_ms'), e.event = 'page_leave') AS engaged,
           countIf(e.event = 'page_leave' AND JSONExtractFloat(e.props, 'scroll_pct') >= 90) AS read_through
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site' AND e.event IN ('page_view', 'page_leave')
    GROUP BY url_path
)""",
    "downloads_by_file": """
WITH $ids
SELECT '$site' AS site_id, JSONExtractString(e.props, 'file_url') AS file_url, count() AS downloads,
       uniqExact(if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id))) AS persons
FROM clicktrail.events AS e
LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
WHERE e.site_id = '$site' AND e.event = 'download'
GROUP BY file_url""",
    "sharer_stats": """
WITH $ids, $touches,
recruits AS (SELECT person_id, argMin(sharer, (ts, event_id)) AS first_sharer FROM touches GROUP BY person_id),
converted AS (
    SELECT if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id,
           max(e.event = 'registration') AS registered, max(e.event = 'form_submit') AS submitted
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site' AND e.event IN ('registration', 'form_submit')
    GROUP BY person_id
)
SELECT '$site' AS site_id, sharer, n_views AS views, n_readers AS readers,
       if(n_leaves = 0, 0., engaged / n_leaves) AS avg_engaged_ms, n_registered AS registrations,
       n_submitted AS leads
FROM (
    SELECT sharer, sum(v) AS n_views, uniqExactIf(person_id, v > 0) AS n_readers, sum(l) AS n_leaves,
           sum(ms) AS engaged, sum(reg) AS n_registered, sum(sub) AS n_submitted
    FROM (
        SELECT e.sharer AS sharer,
               if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id,
               e.event = 'page_view' AS v, e.event = 'page_leave' AS l,
               if(e.event = 'page_leave', JSONExtractFloat(e.props, 'engaged_ms'), 0.) AS ms, 0 AS reg, 0 AS sub
        FROM clicktrail.events AS e
        LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
        WHERE e.site_id = '$site' AND e.event IN ('page_view', 'page_leave') AND e.sharer != ''
        UNION ALL
        SELECT r.first_sharer, r.person_id, 0, 0, 0., c.registered, c.submitted
        FROM recruits AS r
        LEFT JOIN converted AS c ON c.person_id = r.person_id
        WHERE r.first_sharer != ''
    )
    GROUP BY sharer
)""",
}

RAW["first_touch_channels"] = """
WITH $ids, $touches, $first_touches
SELECT '$site' AS site_id, person_id, channel, sharer, first_ts FROM first_touches"""

# --- Analytics II: funnels, the lifecycle, ROI and influence (parameterized views) ---------------------------------

FUNNEL_STEPS = "['page_view', 'registration', 'live_join[mode=live]', 'form_submit']"
FUNNEL_WINDOW_S = 14 * 86400
INFLUENCE_DAYS = 30

# funnel and funnel_by_channel: $persons gives each chain its channel ('' for funnel), $channel the column.
FUNNEL = """
WITH $ids, $touches, $first_touches, $chains
SELECT $channel step, $funnel_steps[step] AS name, countIf(length(chain) >= step) AS persons,
       if(countIf(length(chain) >= greatest(step - 1, 1)) = 0, 0.,
          persons / countIf(length(chain) >= greatest(step - 1, 1))) AS conversion_from_previous,
       persons / count() AS conversion_from_first,
       if(step = 1 OR persons = 0, 0.,
          quantileExactInclusiveIf(0.5)((chain[step] - chain[step - 1]) / 1000, length(chain) >= step))
           AS median_s_from_previous
FROM ($persons)
ARRAY JOIN range(1, 5) AS step
GROUP BY channel, step"""

FUNNEL_PERSONS = {
    "funnel": "SELECT chain, '' AS channel FROM chains",
    "funnel_by_channel": "SELECT c.chain AS chain, if(f.channel = '', '(direct)', f.channel) AS channel "
                         "FROM chains AS c LEFT JOIN first_touches AS f ON f.person_id = c.person_id",
}

# lifecycle_funnel and lifecycle_by_channel, for the cohort of [$q0, $q1]: $persons as for funnels.
LIFECYCLE = """
WITH $ids, $touches, $first_touches, $stages, $leads,
     ['lead', 'mql', 'sal', 'sql', 'opportunity', 'won'] AS stage_names, [0, 1, 0, 2, 4, 5] AS reference_from,
     [0., 0.15, 0., 0.5, 0.41, 0.37] AS reference_rates
SELECT $channel stage_names[step] AS stage, countIf(reached[step] IS NOT NULL) AS persons,
       if(countIf(reached[greatest(step - 1, 1)] IS NOT NULL) = 0, 0.,
          persons / countIf(reached[greatest(step - 1, 1)] IS NOT NULL)) AS conversion_from_previous,
       if(reference_from[step] = 0, NULL, reference_rates[step]) AS reference_rate,
       if(reference_from[step] = 0, NULL, if(countIf(reached[reference_from[step]] IS NOT NULL) = 0, 0.,
          persons / countIf(reached[reference_from[step]] IS NOT NULL))) AS reference_conversion,
       if(step = 1 OR persons = 0, 0., quantileExactInclusiveIf(0.5)(
           (toUnixTimestamp64Milli(reached[step]) - toUnixTimestamp64Milli(reached[step - 1])) / 86400000,
           reached[step] IS NOT NULL)) AS median_days_from_previous,
       countIf(latest_stage = 'lost' AND arrayCount(t -> t IS NOT NULL, reached) = step) AS lost
FROM ($persons)
ARRAY JOIN range(1, 7) AS step
GROUP BY channel, step"""

LIFECYCLE_PERSONS = {
    "lifecycle_funnel": "SELECT reached, latest_stage, '' AS channel FROM leads WHERE entered_at IS NOT NULL "
                        "AND toDate(entered_at) BETWEEN '$q0' AND '$q1'",
    "lifecycle_by_channel": "SELECT l.reached AS reached, l.latest_stage AS latest_stage, "
                            "if(f.channel = '', '(direct)', f.channel) AS channel FROM leads AS l "
                            "LEFT JOIN first_touches AS f ON f.person_id = l.person_id WHERE l.entered_at IS NOT NULL "
                            "AND toDate(l.entered_at) BETWEEN '$q0' AND '$q1'",
}

PIPELINE_RAW = {
    "lifecycle_recycling": """
WITH $ids, $stages, ['lead', 'mql', 'sal', 'sql', 'opportunity', 'won'] AS stage_names
SELECT stage_names[from_rank] AS from_stage, count() AS nurtured, countIf(returned_at IS NOT NULL) AS returned,
       returned / nurtured AS return_rate,
       if(returned = 0, 0., quantileExactInclusiveIf(0.5)(
           (toUnixTimestamp64Milli(returned_at) - toUnixTimestamp64Milli(nurtured_at)) / 86400000,
           returned_at IS NOT NULL)) AS median_days_to_return
FROM (
    SELECT n.person_id AS person_id, n.nurtured_at AS nurtured_at,
           greatest(1, maxIf(s.rank, s.ts < n.nurtured_at)) AS from_rank,
           minIfOrNull(s.ts, s.rank >= 2 AND s.ts > n.nurtured_at) AS returned_at
    FROM (
        SELECT person_id, min(ts) AS nurtured_at FROM stages
        WHERE stage = 'nurture' AND toDate(ts) BETWEEN '$q0' AND '$q1'
        GROUP BY person_id
    ) AS n
    INNER JOIN stages AS s ON s.person_id = n.person_id
    GROUP BY person_id, nurtured_at
)
GROUP BY from_rank""",
    "channel_roi": """
WITH $ids, $touches, $first_touches, $stages, $leads
SELECT channel, sum(c) AS cost, sum(n) AS new_leads, if(new_leads = 0, 0., cost / new_leads) AS cpl,
       sum(o) AS opportunities, sum(r) AS won_revenue, if(cost = 0, 0., (won_revenue - cost) / cost) AS roi
FROM (
    SELECT channel, cost AS c, 0 AS n, 0 AS o, 0. AS r
    FROM clicktrail.channel_costs FINAL
    WHERE site_id = '$site' AND day BETWEEN '$d0' AND '$d1'
    UNION ALL
    SELECT if(f.channel = '', '(direct)', f.channel), 0, p.n, p.o, p.r
    FROM (
        SELECT person_id, toDate(lead_at) BETWEEN '$d0' AND '$d1' AS n,
               ifNull(toDate(reached[5]) BETWEEN '$d0' AND '$d1', 0) AS o, 0. AS r, 0 AS won
        FROM leads
        UNION ALL
        SELECT person_id, 0, 0, amount, 1 FROM stages WHERE stage = 'won' AND toDate(ts) BETWEEN '$d0' AND '$d1'
    ) AS p
    LEFT JOIN first_touches AS f ON f.person_id = p.person_id
    WHERE p.n OR p.o OR p.won
)
GROUP BY channel""",
    "stream_influence": """
WITH $ids, $views, $stages, $leads,
viewers AS (
    SELECT v.person_id AS person_id, v.t0 AS t0,
           multiIf(l.first_won_at < v.t0, 'customer', l.lead_at < v.t0, 'existing_lead', 'new') AS category
    FROM (SELECT person_id, min(first_view_ts) AS t0 FROM views WHERE stream_id = '$stream' AND viewing
          GROUP BY person_id) AS v
    LEFT JOIN (SELECT person_id, first_won_at, toNullable(lead_at) AS lead_at FROM leads) AS l
        ON l.person_id = v.person_id
),
outcomes AS (
    SELECT v.person_id AS person_id, 1 AS opportunity, sumIf(s.amount, s.stage = 'won') AS revenue
    FROM viewers AS v
    INNER JOIN (SELECT * FROM stages WHERE stage IN ('opportunity', 'won')) AS s ON s.person_id = v.person_id
    WHERE s.ts > v.t0 AND s.ts <= v.t0 + INTERVAL $window_days DAY
    GROUP BY person_id
)
SELECT row AS category, countIf(category_of = row) AS viewers,
       countIf(category_of = row AND opportunity = 1) AS opportunities,
       if(viewers = 0, 0., opportunities / viewers) AS opportunity_rate,
       sumIf(revenue, category_of = row) AS won_revenue
FROM (
    SELECT v.category AS category_of, o.opportunity AS opportunity, o.revenue AS revenue
    FROM viewers AS v
    LEFT JOIN outcomes AS o ON o.person_id = v.person_id
)
ARRAY JOIN ['new', 'existing_lead', 'customer'] AS row
GROUP BY row""",
}

#: The parameterized views of Analytics II, each measured once.
PIPELINE_VIEWS = frozenset({*FUNNEL_PERSONS, *LIFECYCLE_PERSONS, *PIPELINE_RAW})


def pipeline_cases(views: set[str], month: date, days: tuple[date, date], stream: str) -> list[Case]:
    """The funnels and the lifecycle over every day of the data (``days``: the bench's quarter, 60 days of it), ROI
    over ``month``, the influence of ``stream`` over 30 days; for SITE."""
    end = (month + timedelta(days=32)).replace(day=1)
    values = {"site": SITE, "q0": str(days[0]), "q1": str(days[1]), "d0": str(month),
              "d1": str(end - timedelta(days=1)), "touch_time": "", "window_s": str(FUNNEL_WINDOW_S),
              "funnel_steps": FUNNEL_STEPS, "stream": stream, "window_days": str(INFLUENCE_DAYS)}
    funnel = f"steps = {FUNNEL_STEPS}, window_s = {FUNNEL_WINDOW_S}, date_from = '$q0', date_to = '$q1'"
    params = {"funnel": funnel, "funnel_by_channel": funnel, "lifecycle_funnel": "date_from = '$q0', date_to = '$q1'",
              "lifecycle_by_channel": "date_from = '$q0', date_to = '$q1'",
              "lifecycle_recycling": "date_from = '$q0', date_to = '$q1'",
              "channel_roi": "date_from = '$d0', date_to = '$d1'",
              "stream_influence": f"stream = '$stream', window_days = {INFLUENCE_DAYS}"}
    raw = {**{view: Template(FUNNEL).safe_substitute(persons=persons, channel="channel," if "channel" in view else "")
              for view, persons in FUNNEL_PERSONS.items()},
           **{view: Template(LIFECYCLE).safe_substitute(persons=persons,
                                                        channel="channel," if "channel" in view else "")
              for view, persons in LIFECYCLE_PERSONS.items()},
           **PIPELINE_RAW}
    out = []
    for view in sorted(views & raw.keys()):
        sql = f"SELECT * FROM {DATABASE}.{view}(site = '$site', {params[view]})"
        out.append(Case(view, _fill(sql, values), _fill(raw[view], values)))
    return out


# attribution and attribution_by_sharer: $conversion is the filter on the conversion events, $credit a touch's
# credit (touch k of n; decay holds each touch's 2^(-age / 7 days)), $by the column credited.
ATTRIBUTION = """
WITH $ids, $touches,
conversions AS (
    SELECT e.event_id AS conversion_id, e.ts AS ts,
           if(e.user_id != '', e.user_id, if(i.person_id != '', i.person_id, e.anonymous_id)) AS person_id
    FROM clicktrail.events AS e
    LEFT JOIN ids AS i ON i.anonymous_id = e.anonymous_id
    WHERE e.site_id = '$site' AND $conversion AND toDate(e.ts) BETWEEN '$d0' AND '$d1'
),
paths AS (
    SELECT c.conversion_id AS conversion_id, any(c.ts) AS ts,
           arraySort(x -> (x.1, x.4), groupArrayIf((t.ts, t.channel, t.sharer, t.event_id),
               t.ts >= c.ts - INTERVAL 90 DAY AND t.ts <= c.ts)) AS path
    FROM conversions AS c
    LEFT JOIN touches AS t ON t.person_id = c.person_id
    GROUP BY conversion_id
)
SELECT $by, sum(credit) AS conversions
FROM (
    SELECT length(path) AS n,
           arrayMap(x -> pow(2, -dateDiff('millisecond', x.1, ts) / 604800000), path) AS decay,
           if(n = 0, [1.], arrayMap(k -> $credit, range(1, n + 1))) AS credits,
           if(n = 0, ['(direct)'], arrayMap(x -> x.2, path)) AS channels,
           if(n = 0, ['(none)'], arrayMap(x -> if(x.3 = '', '(none)', x.3), path)) AS sharers
    FROM paths
)
ARRAY JOIN channels AS channel, sharers AS sharer, credits AS credit
GROUP BY $by
HAVING conversions > 0"""

CREDIT = {
    "first_touch": "toFloat64(k = 1)",
    "last_touch": "toFloat64(k = n)",
    "linear": "1 / n",
    "u_shaped": "multiIf(n = 1, 1, n = 2, 0.5, k = 1 OR k = n, 0.4, 0.2 / (n - 2))",
    "time_decay": "decay[k] / arraySum(decay)",
}

#: The time filter on each view, over [$t0, $t1) (or the dates [$d0, $d1]); views without one: the site only.
VIEW_FILTER = {
    "identities": "identified_at >= '$t0' AND identified_at < '$t1'",
    "live_stream_stats": "first_ts >= '$t0' AND first_ts < '$t1'",
    "live_concurrency": "minute >= '$t0' AND minute < '$t1'",
    "touch_channels": "ts >= '$t0' AND ts < '$t1'",
    # Every event of a month is over a million rows, heartbeats included; analysts ask it of conversions.
    "event_channels": "$event_channels_filter",
    "sessions": "start >= '$t0' AND start < '$t1'",
    "channel_sessions": "day BETWEEN '$d0' AND '$d1'",
}


@dataclass(frozen=True)
class Case:
    label: str
    view_sql: str
    raw_sql: str


def _fill(template: str, values: dict[str, str]) -> str:
    """The shared CTEs inlined, then the values (the CTEs hold placeholders too)."""
    return Template(Template(template).safe_substitute(FRAGMENTS)).substitute(values)


def cases(views: set[str], month: date) -> list[Case]:
    """The measured queries: each analyst view present, for SITE over ``month``."""
    end = (month + timedelta(days=32)).replace(day=1)
    t0, t1 = f"{month} 00:00:00", f"{end} 00:00:00"
    values = {"site": SITE, "t0": t0, "t1": t1, "d0": str(month), "d1": str(end - timedelta(days=1)),
              "touch_time": "", "minute_time": "",
              "event_channels_filter": f"ts >= '{t0}' AND ts < '{t1}' AND event IN {CONVERSION_EVENTS}"}
    # A path reaches 90 days before its conversion: the touches the baseline needs lie in [d0 - 90 days, d1].
    window = f"AND ts >= '{month - timedelta(days=90)} 00:00:00' AND ts < '{t1}'"
    # A filter on a row's own time may bound the baseline's scan; one on a session's or a stream's start may not.
    bounds = {"touch_channels": {"touch_time": f"AND ts >= '{t0}' AND ts < '{t1}'"},
              "live_concurrency": {"minute_time": f"AND e.ts >= '{t0}' AND e.ts < '{t1}'"},
              "event_channels": {"touch_time": window}}
    out = []
    for view in sorted(views & RAW.keys()):
        where = f"site_id = '{SITE}'" + (f" AND {VIEW_FILTER[view]}" if view in VIEW_FILTER else "")
        out.append(Case(view, _fill(f"SELECT * FROM {DATABASE}.{view} WHERE {where}", values),
                        _fill(RAW[view], {**values, **bounds.get(view, {})})))
    for view, by in (("attribution", "channel"), ("attribution_by_sharer", "sharer")):
        if view not in views:
            continue
        for conversion in CONVERSIONS:
            event, _, stage = conversion.partition(":")
            where = f"e.event = '{event}'" + (f" AND JSONExtractString(e.props, 'stage') = '{stage}'" if stage else "")
            for model in MODELS:
                params = (f"site = '{SITE}', conversion = '{conversion}', model = '{model}', "
                          f"date_from = '{values['d0']}', date_to = '{values['d1']}'")
                parts = {"touch_time": window, "conversion": where, "credit": CREDIT[model], "by": by}
                out.append(Case(f"{view}({conversion}, {model})", f"SELECT * FROM {DATABASE}.{view}({params})",
                                _fill(ATTRIBUTION, {**values, **parts})))
    return out


def fetch(conn: Any, sql: str) -> list[list[Any]]:
    return [orjson.loads(line) for line in conn.query(sql, "JSONCompactEachRow").splitlines()]


def _sort_key(row: list[Any]) -> bytes:
    return orjson.dumps([round(v, 6) if isinstance(v, float) else v for v in row])


def _same(a: Any, b: Any) -> bool:
    """Equal, numbers within float rounding: sums of credits or engaged_ms add up in another order."""
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def differences(view: list[list[Any]], raw: list[list[Any]]) -> list[str]:
    if len(view) != len(raw):
        return [f"{len(view)} rows from the view, {len(raw)} from raw events"]
    out = []
    for a, b in zip(sorted(view, key=_sort_key), sorted(raw, key=_sort_key), strict=True):
        if len(a) != len(b) or not all(_same(x, y) for x, y in zip(a, b, strict=True)):
            out.append(f"view {a}\n   raw  {b}")
    return out


def median_ms(conn: Any, sql: str) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        conn.query(sql, "Null")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@dataclass
class Measured:
    case: Case
    rows: int
    view_ms: float
    raw_ms: float

    @property
    def speedup(self) -> float:
        return self.raw_ms / self.view_ms


def measure(store: Store, month: date, days: tuple[date, date]) -> tuple[list[Measured], list[str]]:
    """Every case, checked then timed; and the analyst views found that have no baseline here. ``days``: the first
    and last day of the data."""
    found = {line.decode() for line in store.query(
        f"SELECT name FROM system.tables WHERE database = '{DATABASE}' AND engine = 'View'", readonly=False).split()}
    views = found - INTERNAL
    # The month's first webinar, for stream_influence.
    stream = store.query(f"SELECT stream_id FROM {DATABASE}.live_stream_stats WHERE site_id = '{SITE}' AND"
                         f" toStartOfMonth(first_ts) = '{month}' ORDER BY first_ts LIMIT 1", readonly=False).decode()
    conn = store.connect(readonly=True)
    results = []
    try:
        for case in cases(views, month) + pipeline_cases(views, month, days, stream.strip()):
            view_rows, raw_rows = fetch(conn, case.view_sql), fetch(conn, case.raw_sql)
            if not view_rows:
                raise SystemExit(f"{case.label}: no rows for {SITE} in {month:%Y-%m}; the data misses what it counts")
            if diff := differences(view_rows, raw_rows):
                raise SystemExit(f"{case.label}: the view and the raw baseline differ ({len(diff)} rows):\n  "
                                 + "\n  ".join(diff[:5]) + f"\nview: {case.view_sql}\nraw: {case.raw_sql}")
            results.append(Measured(case, len(view_rows), median_ms(conn, case.view_sql),
                                    median_ms(conn, case.raw_sql)))
            print(f"  {case.label}: {results[-1].speedup:.1f}x", file=sys.stderr, flush=True)
    finally:
        conn.close()
    return results, sorted(views - RAW.keys() - PIPELINE_VIEWS - {"attribution", "attribution_by_sharer"})


# --- the run --------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events to generate (about)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    args = parser.parse_args()
    events = QUICK_EVENTS if args.quick else args.events
    print("command: python -m loadtests.bench_analytics " + " ".join(sys.argv[1:]))

    now_ms = int(time.time() * 1000)
    day0 = (now_ms // DAY_MS - DAYS) * DAY_MS  # the last 60 full days
    middle = datetime.fromtimestamp((day0 + DAYS // 2 * DAY_MS) / 1000, UTC).date()
    month = middle.replace(day=1)  # the whole month around the middle of the period
    root = Path(tempfile.mkdtemp(prefix="bench-analytics-", dir="/tmp"))
    try:
        source = root / "segments"
        source.mkdir()
        started = time.perf_counter()
        rows, size = generate(source, events, day0, now_ms)
        segments = sorted(source.glob("*" + SEALED))
        generated_s = time.perf_counter() - started
        print(f"generated {rows:,} events, {size / 2**20:,.0f} MiB in {len(segments)} segments, "
              f"{generated_s:.0f} s", file=sys.stderr, flush=True)

        with events_table_only(root / "events-only"):
            raw_store = EventsOnlyStore(root / "store-b")
            raw_store.open()
        try:
            load_b = load(raw_store, segments, root / "spool-b", rows)
        finally:
            raw_store.close()
        print(f"loaded (b): {load_b.rows_per_s:,.0f} rows/s", file=sys.stderr, flush=True)

        store = Store(root / "store-a", query_timeout_s=3600)
        store.open()
        try:
            load_a = load(store, segments, root / "spool-a", rows)
            print(f"loaded (a): {load_a.rows_per_s:,.0f} rows/s", file=sys.stderr, flush=True)
            fill_costs(store, day0)
            settled_s = settle(store)
            first_day = datetime.fromtimestamp(day0 / 1000, UTC).date()
            measured, unmeasured = measure(store, month, (first_day, first_day + timedelta(days=DAYS - 1)))
        finally:
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ratio = load_a.rows_per_s / load_b.rows_per_s
    print(f"\n{rows:,} events ({size / 2**20:,.0f} MiB, {len(segments)} segments) over {DAYS} days; "
          f"views for {SITE} over {month:%Y-%m}; medians of {RUNS} runs")
    print_loads([("(b) events table only", load_b), ("(a) with rollups and views", load_a)])
    flag = "" if ratio >= LOAD_RATIO_TARGET else "  BELOW TARGET"
    print(f"{'ratio a/b':<44}{ratio:>12.2f}   target >= {LOAD_RATIO_TARGET}{flag}")
    print(f"\n{'view':<52}{'rows':>8}{'view ms':>10}{'raw ms':>10}{'speedup':>9}")
    for m in measured:
        flag = "" if m.speedup >= SPEEDUP_TARGET else "  < 10x"
        print(f"{m.case.label:<52}{m.rows:>8}{m.view_ms:>10.1f}{m.raw_ms:>10.1f}{m.speedup:>8.1f}x{flag}")
    if unmeasured:
        print(f"views without a baseline here (not measured): {', '.join(unmeasured)}")
    short = [m.case.label for m in measured if m.speedup < SPEEDUP_TARGET]
    print(json.dumps({
        "events": rows, "bytes": size, "segments": len(segments), "generate_s": round(generated_s, 1),
        "load_rows_per_s_events_only": round(load_b.rows_per_s),
        "load_rows_per_s_with_rollups": round(load_a.rows_per_s),
        "load_ratio": round(ratio, 3), "settle_s": round(settled_s, 1), "site": SITE, "month": f"{month:%Y-%m}",
        "views": {m.case.label: {"rows": m.rows, "view_ms": round(m.view_ms, 1), "raw_ms": round(m.raw_ms, 1),
                                 "speedup": round(m.speedup, 2)} for m in measured},
        "below_speedup_target": short, "unmeasured": unmeasured,
    }, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
