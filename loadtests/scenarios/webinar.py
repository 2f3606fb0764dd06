"""Locust scenario: a live webinar on site_b, each locust user a viewer's browser with the JS SDK.

While locust spawns the viewers (``--live-after-s``, 10 s by default), each registers: the registration page
(arriving through a channel code, a campaign or WeChat, as ``loadtests.traffic`` draws it), ``identify`` and
``registration``. Then the stream starts and the viewers join within ``JOIN_SPREAD_S`` of it, as a reminder
brings them all at once: the live page, ``live_join`` with a new view_id. Each then heartbeats every
``--heartbeat-s`` (10 s, the contract's) with the cumulative ``watched_ms`` of the view, interacts now and then
(comments, likes, the lottery, a survey, the CTA), and leaves: a few before the end, everyone else when the run
ends, as when the stream closes (a last heartbeat and ``live_leave``). Every viewer keeps its own kept-alive
connection, as browsers do.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import gevent
from locust import events, task
from locust.env import Environment
from locust.exception import StopUser

from loadtests.scenarios.users import BrowserUser, page_url
from loadtests.traffic import KINDS, arrival

SITE = "https://b.example"
STREAM = "webinar-2025-zero-trust"
TITLE = "零信任架构实战直播"
DURATION_S = 5400
#: Viewers join within this many seconds of the stream's start (a short run's within half its registration time).
JOIN_SPREAD_S = 5.0
#: Chance per heartbeat that a viewer interacts, and that one leaves before the end.
INTERACT, LEAVE = 0.15, 0.02

#: When the stream starts, by the wall clock: set in each worker process when its spawning starts.
live_at = 0.0


@events.test_start.add_listener
def _start_stream_clock(environment: Environment, **_: Any) -> None:
    global live_at
    live_at = time.time() + environment.parsed_options.live_after_s


class Viewer(BrowserUser):
    write_key = "wk_b"
    origin = SITE

    def wait_time(self) -> float:
        """Heartbeats keep to their period from the join, whatever each one's request took."""
        return max(0.0, self.next_beat - time.monotonic())

    def on_start(self) -> None:
        super().on_start()
        options = self.environment.parsed_options
        self.heartbeat_s: float = options.heartbeat_s
        self.view_id = ""
        self.left = False
        self.register()
        spread = min(JOIN_SPREAD_S, options.live_after_s / 2)
        gevent.sleep(max(0.0, live_at - time.time()) + self.rng.uniform(0, spread))
        self.join()

    def register(self) -> None:
        params, self.referrer = arrival(self.rng, "register")
        self.url = page_url(SITE, f"/webinars/{STREAM}/register", params)
        self.track("page_view", title=f"报名 | {TITLE}")
        self.user_id = f"lead-{uuid.uuid4().hex[:12]}"
        self.track("identify", {"traits": {"company": f"公司 {self.rng.randrange(5000)}", "title": "IT 经理"}})
        self.track("registration", {"stream_id": STREAM})
        self.flush()

    def join(self) -> None:
        params, _ = arrival(self.rng, "live")
        self.referrer, self.url = self.url, page_url(SITE, f"/live/{STREAM}", params)
        self.view_id = uuid.uuid4().hex
        self.joined = time.monotonic()
        self.next_beat = self.joined + self.heartbeat_s
        self.track("page_view", title=TITLE)
        self.track("live_join", self.view())
        self.flush()

    def view(self) -> dict[str, Any]:
        return {"stream_id": STREAM, "view_id": self.view_id, "mode": "live"}

    def heartbeat(self) -> None:
        watched_ms = round((time.monotonic() - self.joined) * 1000)
        self.track("live_heartbeat", {**self.view(), "watched_ms": watched_ms, "position_s": watched_ms / 1000,
                                      "duration_s": DURATION_S})

    @task
    def watch(self) -> None:
        self.next_beat += self.heartbeat_s
        self.heartbeat()
        self.flush()
        if self.rng.random() < INTERACT:
            gevent.sleep(self.rng.uniform(0, self.heartbeat_s / 2))
            self.track("interaction", {"kind": self.rng.choice(KINDS), "stream_id": STREAM})
            self.flush()
        if self.rng.random() < LEAVE:
            self.leave()
            raise StopUser

    def leave(self) -> None:
        self.left = True
        self.heartbeat()
        self.track("live_leave", self.view())
        self.flush()

    def on_stop(self) -> None:
        """The stream ends (or the run stopped the viewer before it joined): leave, and send what is left."""
        if self.view_id and not self.left:
            self.leave()
        else:
            self.flush()
