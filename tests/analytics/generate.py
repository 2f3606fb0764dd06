"""Seeded synthetic traffic for the analytics tests: B2B sites with webinars, readers, leads and a CRM, as the SDKs
send it, delivered with the network's habits.

Why synthetic and seeded: the ClickHouse views must agree with ``reference.py`` on data that reaches every corner of
the definitions (identifies weeks late, stamped channels, lost and repeated heartbeats, renewed sessions, every
referrer class), and a seed that fails must replay exactly. The browser side follows sdk_js: the last touch's URL
parameters are stamped on every later event, the first touch's go into ``$first_*`` props, a session renews after
30 idle minutes, and watched_ms is the cumulative playing time of a view. Server-side events (CRM stages, email
opens, backend identifies) carry a user_id and no URL or session. The CRM moves known persons through the lifecycle
(lead, mql, sal, sql, opportunity, won) with skips, losses, recycling through nurture and back, reasons and deal
amounts, synced nightly, a few stages weeks late (a backfill). ``Dataset.costs`` holds the channel costs a test
imports, in two imports (the second corrects some days of the first).

``Dataset.events`` holds each stored event once; ``Dataset.deliveries`` is what a test sends, in order: the same
events in batches, some twice (retries), reordered (a shuffled network, heartbeats flushed after the stream ended,
an outbox flushed days later, CRM stages weeks late), with ts always the event's own time. Every ts lies in
[now - 60 days, now - 1 minute] and is unique within its site, so no definition ever meets a tie in time.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from loadtests.traffic import (
    CODES,
    DAY_MS,
    FILES,
    HEARTBEAT_MS,
    HOUR_MS,
    KINDS,
    MINUTE_MS,
    PAGES,
    REFERRERS,
    SECOND_MS,
    SHARERS,
    SITES,
    arrival,
    stage_props,
    stage_walk,
)

Event = dict[str, Any]

SESSION_IDLE_MS = 30 * MINUTE_MS
BROWSER_BATCH = 15  # sdk_js sends the oldest 15 events of its outbox at a time
SERVER_BATCH = 100

WIRE_FIELDS = ("event", "event_id", "anonymous_id", "user_id", "session_id", "ts", "channel", "utm_source",
               "utm_medium", "utm_campaign", "utm_content", "utm_term", "sharer", "url", "referrer", "title", "props")
#: The fields the SDK stamps from the last touch's URL (``channel`` from ``ch``), as sdk_js's TOUCH.
TOUCH_FIELDS = ("channel", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "sharer")
#: The arrival of a sharer's recruit (see _Site.person).
RECRUITED = ({"ch": "wecom_sales_12", "sharer": "emp_042"}, "")
#: The white paper offered behind a form (留资下载) half of the time.
GATED = "/whitepaper/security-2025"

#: Paths every site's CRM takes once, whatever the seed: the first known persons whose stages all fall before now.
CRM_SCRIPTS = (
    ("lead", "mql", "nurture", "mql", "sal", "sql", "opportunity", "won"),  # recycled, back as an MQL, then won
    ("lead", "sql", "lost"),  # skips MQL and SAL, then lost
    ("mql", "nurture"),  # enters as an MQL, goes back to marketing for good
)
#: Channels a site pays for, as the views name them: channel codes, referrer classes, a utm_source, the e-mail and
#: SMS providers, and an offline channel no touch ever names (a cost without leads).
COST_CHANNELS = (*CODES, "search", "wechat", "baidu", "edm_replay", "sms_reminder", "kol_offline")

@dataclass
class Dataset:
    """What a test stores (``events``) and how it sends it (``deliveries``)."""

    #: The unique events as stored: the wire fields plus site_id, ordered by site and ts.
    events: list[Event]
    #: What a test sends, in order: (site_id, batch of at most 100 wire events).
    deliveries: list[tuple[str, list[Event]]]
    #: Channel costs, as imports in the order a test makes them, each rows (site_id, channel, day as ISO text, cost).
    costs: list[list[dict[str, Any]]] = field(default_factory=list)


def generate(seed: int, now_ms: int, scale: int = 1) -> Dataset:
    """A data set for 2-3 sites, the same for the same arguments; ``scale`` multiplies the people."""
    rng = random.Random(seed)
    events: list[Event] = []
    batches: list[_Batch] = []
    for site_id in list(SITES)[:rng.choice((2, 3))]:
        site = _Site(rng, site_id, now_ms)
        site.simulate(16 * scale)
        events += sorted(site.events, key=lambda e: e["ts"])
        batches += site.batches
    # A network that reorders: batches sent within two minutes of each other may arrive in either order.
    order = sorted(batches, key=lambda b: (b.send_ms + rng.randint(-2 * MINUTE_MS, 2 * MINUTE_MS), b.seq))
    sites = sorted({e["site_id"] for e in events})
    return Dataset(events, [(b.site_id, b.events) for b in order], _costs(rng, sites, now_ms))


def _costs(rng: random.Random, sites: list[str], now_ms: int) -> list[list[dict[str, Any]]]:
    """Two imports of daily channel costs over the 60 days before ``now_ms``: most channels paid on some days; then a
    corrected invoice for a tenth of those days (one of them to 0) and a few days more."""
    today = date(1970, 1, 1) + timedelta(days=now_ms // DAY_MS)
    first = [{"site_id": site_id, "channel": channel, "day": str(today - timedelta(days=d)),
              "cost": round(rng.uniform(50, 3000), 2)}
             for site_id in sites for channel in COST_CHANNELS if rng.random() < 0.7
             for d in range(1, 61) if rng.random() < 0.4]
    corrected = [{**row, "cost": round(rng.uniform(50, 3000), 2)} for row in rng.sample(first, len(first) // 10)]
    corrected[0]["cost"] = 0.0
    added = [{"site_id": site_id, "channel": "kol_offline", "day": str(today - timedelta(days=d)),
              "cost": round(rng.uniform(50, 3000), 2)} for site_id in sites for d in (61, 62)]
    return [first, corrected + added]


@dataclass
class _Batch:
    site_id: str
    send_ms: int
    seq: int
    events: list[Event]


@dataclass
class _Stream:
    stream_id: str
    start: int
    minutes: int
    #: Whether the player reports duration_s in live mode (a scheduled length) and in replay (the recording's).
    live_duration: bool
    replay_duration: bool

    @property
    def end(self) -> int:
        return self.start + self.minutes * MINUTE_MS


@dataclass
class _Device:
    """A browser: sdk_js's cookie state, and events it will resend with its next batch."""

    anonymous_id: str
    session_id: str = ""
    last_ms: int = 0
    user_id: str = ""
    stamp: dict[str, str] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)
    resend: list[Event] = field(default_factory=list)
    #: (planned start, sequence, what the visit does)
    plans: list[tuple[int, int, Callable[[_Visit], None]]] = field(default_factory=list)


@dataclass
class _Person:
    user_id: str
    #: anon (never identified), early (at the first visit), late (a login weeks later), late_server (the
    #: backend identifies the browser weeks later; the browser itself stays anonymous)
    kind: str
    devices: list[_Device]
    #: When the company first knew the user_id; server-side events only come after.
    known_at: int = 0


class _Visit:
    """One stay of a browser on the site: its events in time order, before the SDK stamps its state on them."""

    def __init__(self, site: _Site, t: int) -> None:
        self.site, self.rng, self.t = site, site.rng, t
        self.url = self.referrer = self.title = ""
        self.raws: list[Event] = []

    def wait(self, low_ms: int, high_ms: int) -> None:
        self.t += self.rng.randint(low_ms, high_ms)

    def add(self, name: str, props: dict[str, Any] | None = None, at: int | None = None, **extra: Any) -> None:
        self.raws.append({"event": name, "ts": self.t if at is None else at, "url": self.url,
                          "referrer": self.referrer, "title": self.title, "props": props or {}, **extra})

    def land(self, path: str, arrival: tuple[dict[str, str], str]) -> None:
        params, referrer = arrival
        self.url = self.site.url(path) + ("?" + urlencode(params) if params else "")
        self.referrer, self.title = referrer, self.site.title(path)
        touch = {("channel" if k == "ch" else k): v for k, v in params.items()}
        self.add("page_view", touch=touch)

    def go(self, path: str) -> None:
        """Internal navigation: leave the page, open the next with this one as referrer."""
        self.read()
        self.referrer, self.url, self.title = self.url, self.site.url(path), self.site.title(path)
        if self.rng.random() < 0.1:
            self.url += "#section-2"
        self.wait(300, 2 * SECOND_MS)
        self.add("page_view")

    def read(self, idle: bool = False) -> None:
        """Time on the page, then page_leave. ``idle``: left open without input for over 30 minutes before it was
        closed, so the page_leave opens a session of its own."""
        dwell = self.rng.randint(5 * SECOND_MS, 4 * MINUTE_MS)
        self.t += dwell + (self.rng.randint(31, 50) * MINUTE_MS if idle else 0)
        scroll = self.rng.randint(90, 100) if self.rng.random() < 0.35 else self.rng.randint(5, 89)
        self.add("page_leave", {"engaged_ms": int(dwell * self.rng.uniform(0.3, 1)), "scroll_pct": scroll})

    def download(self) -> None:
        path = self.site.path_of(self.url)
        if path == GATED and self.rng.random() < 0.5:
            self.form("whitepaper-gate")
        if path in FILES:
            self.wait(3 * SECOND_MS, MINUTE_MS)
            file_path, name = FILES[path]
            self.add("download", {"file_url": self.site.url(file_path), "file_name": name})

    def form(self, form_id: str) -> None:
        self.wait(20 * SECOND_MS, 3 * MINUTE_MS)
        self.add("form_submit", {"form_id": form_id, "fields": {"company": None, "phone": None}})

    def identify(self, user_id: str) -> None:
        self.wait(200, 2 * SECOND_MS)
        traits = {"industry": self.rng.choice(("finance", "manufacturing", "healthcare"))}
        self.add("identify", {"traits": traits}, identify_as=user_id)

    def watch(self, stream: _Stream, mode: str, target_ms: int) -> None:
        """One view: live_join, a heartbeat per 10 s played (some lost on the way), pauses, interactions,
        live_leave."""
        rng = self.rng
        base = {"stream_id": stream.stream_id, "view_id": self.site.uid(), "mode": mode}
        self.add("live_join", dict(base))
        losing = rng.random() < 0.4
        chatty = rng.random() < 0.35
        first = True
        played = 0
        while played < target_ms:
            step = min(HEARTBEAT_MS, target_ms - played)
            self.t += step + rng.randint(0, 40)
            played += step
            props: dict[str, Any] = {**base, "watched_ms": played}
            if mode == "replay":
                props["position_s"] = played / 1000
            if mode == "live":
                known = stream.live_duration
            else:  # a replay player knows the recording's length once its metadata loaded, not always at once
                known = stream.replay_duration and not (first and rng.random() < 0.5)
            if known:
                props["duration_s"] = stream.minutes * 60
            self.add("live_heartbeat", props, lost=losing and rng.random() < 0.15)
            first = False
            if chatty and played + HEARTBEAT_MS < target_ms and rng.random() < 0.1:
                if mode == "live" and self.site.kinds:  # each kind once first, whatever the seed
                    kind = self.site.kinds.pop(0)
                else:
                    kind = rng.choice(KINDS if mode == "live" else ("comment", "like", "cta"))
                self.add("interaction", {"kind": kind, "stream_id": stream.stream_id},
                         at=self.t + rng.randint(SECOND_MS, 8 * SECOND_MS))
            if mode == "replay" and rng.random() < 0.03:
                self.wait(20 * SECOND_MS, 3 * MINUTE_MS)  # paused: no heartbeats
        self.wait(200, 2 * SECOND_MS)
        self.add("live_leave", dict(base))


class _Site:
    """One site's people, their browsers and the company's backend, simulated in time order per browser."""

    def __init__(self, rng: random.Random, site_id: str, now_ms: int) -> None:
        self.rng, self.site_id = rng, site_id
        self.origin = "https://" + SITES[site_id]
        self.first_ms = now_ms - 59 * DAY_MS
        self.last_ms = now_ms - MINUTE_MS
        self.used: set[int] = set()
        self.seen: set[str] = set()
        self.unused = [url for urls in REFERRERS.values() for url in urls]
        self.kinds = list(KINDS)
        self.seq = 0
        self.events: list[Event] = []
        self.batches: list[_Batch] = []
        self.crm: list[Event] = []
        self.scripted: set[tuple[str, ...]] = set()  # CRM_SCRIPTS done
        self.webhooks: list[Event] = []
        self.streams = []
        for i in range(rng.randint(2, 4)):
            # Webinars start at 14:00 Beijing time (06:00 UTC); the first always reports durations, the second never.
            day = (now_ms - rng.randint(4, 45) * DAY_MS) // DAY_MS * DAY_MS
            self.streams.append(_Stream(f"webinar-{i + 1}", day + 6 * HOUR_MS, rng.randint(12, 25),
                                        i == 0 or (i > 1 and rng.random() < 0.4),
                                        i == 0 or (i > 1 and rng.random() < 0.8)))

    # -- small helpers ------------------------------------------------------------------------------------------

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def url(self, path: str) -> str:
        return self.origin + path

    def path_of(self, url: str) -> str:
        return url[len(self.origin):].split("?")[0].split("#")[0]

    def title(self, path: str) -> str:
        name = PAGES.get(path) or ("直播回放" if path.endswith("/replay") else "直播")
        return f"{name} | {SITES[self.site_id]}"

    def chance(self, p: float, feature: str) -> bool:
        """True with probability ``p``, and always the first time, so that every site has the feature."""
        if feature not in self.seen:
            self.seen.add(feature)
            return True
        return self.rng.random() < p

    def arrival(self, purpose: str) -> tuple[dict[str, str], str]:
        """(URL parameters, referrer) of an arrival. The site's first browsing visits come from each of
        ``REFERRERS`` in turn, so that every class and host is there whatever the seed."""
        if purpose == "browse" and self.unused:
            return {}, self.unused.pop(0)
        return arrival(self.rng, purpose)

    def when(self, low: int, high: int) -> int:
        """A random time in [low, high], kept within the simulated period (which ends an hour before its last ts, so
        that a visit has time to happen)."""
        high = max(min(high, self.last_ms - HOUR_MS), self.first_ms)
        return self.rng.randint(min(max(low, self.first_ms), high), high)

    # -- planning -------------------------------------------------------------------------------------------------

    def simulate(self, people: int) -> None:
        persons = [self.person(i) for i in range(people)]
        self.share_a_device(persons)
        for person in persons:
            for device in person.devices:
                self.run(device)
            if person.kind != "anon":
                self.backend(person)
        self.flush_server()

    def person(self, i: int) -> _Person:
        rng = self.rng
        forced = ("late", "late_server", "early")
        kind = forced[i] if i < len(forced) else rng.choices(
            ("anon", "early", "late", "late_server"), (40, 35, 15, 10))[0]
        devices = [_Device(self.uid()) for _ in range(1 + (rng.random() < 0.3))]
        person = _Person(f"crm-{self.site_id[-1]}{10001 + i}", kind, devices)
        visits: list[tuple[int, str, tuple[Any, ...]]] = []
        first_visit = self.when(self.last_ms - 58 * DAY_MS, self.last_ms - 40 * DAY_MS)
        visits.append((first_visit, "browse", ()))
        for _ in range(rng.randint(0, 3)):
            visits.append((self.when(self.first_ms, self.last_ms), "browse", ()))
        for stream in self.streams:
            registered = rng.random() < 0.45
            live = rng.random() < (0.65 if registered else 0.08)
            replay = rng.random() < (0.1 if live else 0.4 if registered else 0.04)
            if registered:
                visits.append((self.when(stream.start - 10 * DAY_MS, stream.start - 2 * HOUR_MS), "register",
                               (stream,)))
            if live:
                visits.append((stream.start - rng.randint(0, 5 * MINUTE_MS), "live", (stream,)))
            replay_at = stream.end + rng.randint(HOUR_MS, 10 * DAY_MS)
            if registered and not live and len(devices) == 1 and "no-show replay" not in self.seen:
                self.seen.add("no-show replay")  # one registrant per site who missed the live watches the replay
                replay, replay_at = True, stream.end + rng.randint(HOUR_MS, DAY_MS)
            if replay and replay_at < self.last_ms - 2 * HOUR_MS:
                visits.append((replay_at, "replay", (stream,)))
        visits.sort(key=lambda v: v[0])
        identifying = {0} if kind == "early" else set()  # indexes of the visits that identify, on the first browser
        if kind == "early" and rng.random() < 0.3:  # logs in again later: a second identify, same user
            visits.append((self.when(visits[-1][0] + DAY_MS, self.last_ms), "login", ()))
            identifying.add(len(visits) - 1)
        if kind in ("late", "late_server"):
            person.known_at = first_visit + rng.randint(15, 30) * DAY_MS
            if kind == "late":
                visits.append((person.known_at, "login", ()))
                identifying.add(len(visits) - 1)
            else:
                self.crm_event("identify", person.known_at, person.user_id, devices[0].anonymous_id,
                               {"traits": {"source": "crm_match"}})
        else:
            person.known_at = visits[0][0]
        # A person a sharer's link brought in who registered lately (the cookbook's sharer leaderboard over the last 30
        # days), whatever the seed: their first visit arrives through the link.
        recruit = (len(devices) == 1 and "sharer's recruit" not in self.seen
                   and any(p == "register" and t >= self.last_ms - 28 * DAY_MS for t, p, _ in visits))
        if recruit:
            self.seen.add("sharer's recruit")
        for index, (t, purpose, args) in enumerate(visits):
            device = devices[0] if index in identifying or index == 0 or rng.random() < 0.7 else devices[-1]
            self.plan(device, t, self.visit(purpose, args, person.user_id if index in identifying else "",
                                            RECRUITED if recruit and index == 0 else None))
        if len(devices) > 1 and kind != "anon" and rng.random() < 0.5:  # logs in on the phone as well
            self.plan(devices[1], self.when(person.known_at, self.last_ms), self.visit("login", (), person.user_id))
        return person

    def plan(self, device: _Device, t: int, visit: Callable[[_Visit], None]) -> None:
        self.seq += 1
        device.plans.append((t, self.seq, visit))

    def share_a_device(self, persons: list[_Person]) -> None:
        """Someone else logs in on an identified person's browser (a shared office PC): that browser then has two
        identifies for two users, and the earliest links its anonymous past."""
        owner = next(p for p in persons if p.kind == "early")  # person 2 at least
        others = [p for p in persons if p.kind != "anon" and p is not owner]
        device = owner.devices[0]
        t = max(t for t, _, _ in device.plans) + self.rng.randint(1, 3) * DAY_MS
        self.plan(device, min(t, self.last_ms - HOUR_MS), self.visit("login", (), self.rng.choice(others).user_id))

    def visit(self, purpose: str, args: tuple[Any, ...], identify: str,
              arrival: tuple[dict[str, str], str] | None = None) -> Callable[[_Visit], None]:
        """What a planned visit does once it runs (a closure, so it sees the time the browser got to it); ``arrival``:
        how it arrives, when not as usual for its purpose."""
        arrival = arrival or self.arrival(purpose)

        def run(v: _Visit) -> None:
            getattr(self, "_" + purpose)(v, arrival, identify, *args)

        return run

    # -- visits --------------------------------------------------------------------------------------------------

    def _browse(self, v: _Visit, arrival: tuple[dict[str, str], str], identify: str) -> None:
        rng = self.rng
        v.land(rng.choice(list(PAGES)), arrival)
        if rng.random() < 0.1:  # "book a demo": an interaction that is about no stream
            v.wait(2 * SECOND_MS, 30 * SECOND_MS)
            v.add("interaction", {"kind": "cta"})
        pages = rng.choice((0, 0, 1, 2, 3, 4))
        for _ in range(pages):
            if rng.random() < 0.4:
                v.download()
            v.go(rng.choice(list(PAGES)))
        if rng.random() < 0.4:
            v.download()
        if identify or rng.random() < 0.2:
            v.go("/contact")
            v.form("contact")
            if identify:
                v.identify(identify)
            pages += 1
        if pages or rng.random() < 0.5:  # a bounce may close the tab before its page_leave gets out
            v.read(idle=rng.random() < 0.08)

    def _register(self, v: _Visit, arrival: tuple[dict[str, str], str], identify: str, stream: _Stream) -> None:
        rng = self.rng
        v.land(f"/live/{stream.stream_id}", arrival)
        v.wait(20 * SECOND_MS, 3 * MINUTE_MS)
        if rng.random() < 0.15:  # "add to calendar": an interaction on the stream by someone who may never watch
            v.add("interaction", {"kind": "cta", "stream_id": stream.stream_id})
        if rng.random() < 0.5:
            v.form(f"register-{stream.stream_id}")
        v.wait(SECOND_MS, 5 * SECOND_MS)
        v.add("registration", {"stream_id": stream.stream_id})
        if identify:
            v.identify(identify)
        if rng.random() < 0.4:
            v.go(rng.choice(list(PAGES)))
        v.read()

    def _live(self, v: _Visit, arrival: tuple[dict[str, str], str], identify: str, stream: _Stream) -> None:
        v.land(f"/live/{stream.stream_id}/watch", arrival)
        if identify:
            v.identify(identify)
        v.t = max(v.t + SECOND_MS, stream.start + self.rng.randint(0, 20 * SECOND_MS))
        left = stream.end - v.t
        if left > 2 * MINUTE_MS:
            full = self.rng.random() < 0.2
            v.watch(stream, "live", left - self.rng.randint(0, 30 * SECOND_MS) if full
                    else self.rng.randint(MINUTE_MS, left // 2))
        v.read()

    def _replay(self, v: _Visit, arrival: tuple[dict[str, str], str], identify: str, stream: _Stream) -> None:
        v.land(f"/live/{stream.stream_id}/replay", arrival)
        if self.rng.random() < 0.5:
            v.form("replay-gate")  # 留资查看回放
        if identify:
            v.identify(identify)
        length = stream.minutes * MINUTE_MS
        v.watch(stream, "replay", length if self.rng.random() < 0.15
                else self.rng.randint(30 * SECOND_MS, length // 3))
        v.read(idle=self.rng.random() < 0.1)

    def _login(self, v: _Visit, arrival: tuple[dict[str, str], str], identify: str) -> None:
        v.land("/login", arrival)
        v.identify(identify)
        v.go(self.rng.choice(list(PAGES)))
        v.read()

    # -- the browser: SDK state, then the outbox -------------------------------------------------------------------

    def run(self, device: _Device) -> None:
        cursor = 0
        for t, _, visit in sorted(device.plans, key=lambda p: (p[0], p[1])):
            v = _Visit(self, max(t, cursor))
            visit(v)
            self.flush(device, self.emit(device, v.raws))
            cursor = v.t + self.rng.randint(5 * MINUTE_MS, HOUR_MS)
        if device.resend:
            self.batch(device.resend[-1]["ts"] + HOUR_MS, device.resend)

    def emit(self, device: _Device, raws: list[Event]) -> list[Event]:
        """The visit's events as sdk_js makes them; lost ones change the browser's state but are not stored."""
        kept = []
        for raw in sorted(raws, key=lambda r: r["ts"]):
            ts = self.unique_ts(raw["ts"])
            if ts is None:
                break  # not happened yet
            if ts - device.last_ms >= SESSION_IDLE_MS:
                device.session_id = self.uid()
            device.last_ms = ts
            if raw.get("touch"):
                device.stamp = raw["touch"]
                device.first = device.first or raw["touch"]
            if raw["event"] == "identify":
                device.user_id = raw["identify_as"]
            event = {"event": raw["event"], "event_id": self.uid(), "anonymous_id": device.anonymous_id,
                     "user_id": device.user_id, "session_id": device.session_id, "ts": ts,
                     **{f: device.stamp.get(f, "") for f in TOUCH_FIELDS},
                     "url": raw["url"], "referrer": raw["referrer"], "title": raw["title"],
                     "props": {**raw["props"], **{"$first_" + k: v for k, v in device.first.items()}},
                     "site_id": self.site_id}
            if not raw.get("lost"):
                kept.append(event)
        self.events += kept
        return kept

    def unique_ts(self, ts: int) -> int | None:
        while ts in self.used:
            ts += 1
        if ts > self.last_ms:
            return None
        self.used.add(ts)
        return ts

    def flush(self, device: _Device, events: list[Event]) -> None:
        """The outbox's batches for a visit: 15 events at a time, soon after the last; sometimes days later (the
        browser closed before the flush); a few live heartbeats held back until after the stream; a heartbeat
        whose answer was lost resent with the browser's next batch."""
        if not events:
            return
        rng = self.rng
        beats = [e for e in events if e["event"] == "live_heartbeat" and e["props"]["mode"] == "live"]
        late = rng.sample(beats[:-1], 2) if len(beats) > 3 and self.chance(0.25, "late heartbeats") else []
        rest = [e for e in events if all(e is not x for x in late)]
        delay = rng.randint(2 * DAY_MS, 6 * DAY_MS) if len(rest) > 3 and self.chance(0.04, "days late") else 0
        for i in range(0, len(rest), BROWSER_BATCH):
            chunk = rest[i:i + BROWSER_BATCH]
            self.batch(chunk[-1]["ts"] + rng.randint(300, 3 * SECOND_MS) + delay, device.resend + chunk)
            device.resend = [e for e in chunk
                             if e["event"] == "live_heartbeat" and self.chance(0.02, "repeated heartbeat")]
        if late:
            self.batch(events[-1]["ts"] + rng.randint(10 * MINUTE_MS, 3 * HOUR_MS), late)

    def batch(self, send_ms: int, events: list[Event]) -> None:
        """Queue a batch for delivery; sometimes sent twice (the answer to the first was lost, so it is retried)."""
        self.seq += 1
        wire = [{k: copy.deepcopy(e[k]) for k in WIRE_FIELDS} for e in events]
        self.batches.append(_Batch(self.site_id, send_ms, self.seq, wire))
        if self.chance(0.04, "retried batch"):
            self.seq += 1
            retry = self.rng.randint(2 * SECOND_MS, 90 * SECOND_MS)
            self.batches.append(_Batch(self.site_id, send_ms + retry, self.seq, copy.deepcopy(wire)))

    # -- the backend ---------------------------------------------------------------------------------------------

    def server_event(self, feed: list[Event], name: str, ts: int, user_id: str, anonymous_id: str = "",
                     props: dict[str, Any] | None = None, **fields: str) -> bool:
        """Record a backend event; False when its time has not come yet."""
        stamped = self.unique_ts(ts)
        if stamped is None:
            return False
        event = {"event": name, "event_id": self.uid(), "anonymous_id": anonymous_id, "user_id": user_id,
                 "session_id": "", "ts": stamped, **{f: fields.get(f, "") for f in TOUCH_FIELDS},
                 "url": "", "referrer": "", "title": "", "props": props or {}, "site_id": self.site_id}
        self.events.append(event)
        feed.append(event)
        return True

    def crm_event(self, name: str, ts: int, user_id: str, anonymous_id: str = "",
                  props: dict[str, Any] | None = None) -> bool:
        return self.server_event(self.crm, name, ts, user_id, anonymous_id, props)

    def backend(self, person: _Person) -> None:
        """The CRM's lead stages and the email/SMS providers' touches of a known person: user_id only, no URL."""
        rng = self.rng
        script = next((s for s in CRM_SCRIPTS if s not in self.scripted), None)
        if script is not None or rng.random() < 0.8:
            self.lead_stages(person, script)
        browsers = {d.anonymous_id for d in person.devices}
        views = [e["ts"] for e in self.events if e["event"] == "live_join" and e["anonymous_id"] in browsers]
        if views and rng.random() < 0.5:  # the webinar made a deal: an opportunity within weeks of the first view
            t = min(views) + rng.randint(2 * DAY_MS, 40 * DAY_MS)
            for stage in ("opportunity", rng.choice(("won", "lost", ""))):
                if not stage or not self.crm_event("lead_stage", t, person.user_id, props=stage_props(rng, stage)):
                    break
                t += rng.randint(DAY_MS, 10 * DAY_MS)
        for _ in range(rng.randint(0, 2)):
            at = self.when(person.known_at, self.last_ms)
            sharer = rng.choice(SHARERS) if rng.random() < 0.3 else ""
            self.server_event(self.webhooks, "email_open", at, person.user_id, props={"campaign": "newsletter"},
                              channel=rng.choice(("edm_0312", "edm_invite")), sharer=sharer)
        if rng.random() < 0.3:
            self.server_event(self.webhooks, "sms_click", self.when(person.known_at, self.last_ms), person.user_id,
                              utm_source="sms", utm_medium="reminder")

    def lead_stages(self, person: _Person, script: tuple[str, ...] | None) -> None:
        """The person's way through the lifecycle, from soon after the company knew them: ``script``, or a walk along
        loadtests.traffic's STAGE_FLOW."""
        rng = self.rng
        path = script or stage_walk(rng)
        t = person.known_at + rng.randint(10 * MINUTE_MS, 2 * DAY_MS)
        for stage in path:
            if not self.crm_event("lead_stage", t, person.user_id, props=stage_props(rng, stage)):
                return  # the rest has not happened yet
            t += rng.randint(DAY_MS, 3 * DAY_MS) if script else rng.randint(DAY_MS, 7 * DAY_MS)
        if script:
            self.scripted.add(script)

    def flush_server(self) -> None:
        """The CRM syncs nightly (02:00 UTC after the day), in batches of 100, but a few stages are entered weeks after
        they happened (a sales rep's backfill) and come with a sync weeks later; webhooks arrive within a minute."""
        nights: dict[int, list[Event]] = {}
        for e in sorted(self.crm, key=lambda e: e["ts"]):
            late = e["event"] == "lead_stage" and self.chance(0.08, "stage weeks late")
            synced = e["ts"] + (self.rng.randint(14, 35) * DAY_MS if late else 0)
            nights.setdefault(synced // DAY_MS, []).append(e)
        for day, events in sorted(nights.items()):
            for i in range(0, len(events), SERVER_BATCH):
                self.batch((day + 1) * DAY_MS + 2 * HOUR_MS, events[i:i + SERVER_BATCH])
        for e in self.webhooks:
            self.batch(e["ts"] + self.rng.randint(SECOND_MS, MINUTE_MS), [e])
