"""Locust scenario: a B2B content site on site_a, each locust user a reader's browser with the JS SDK.

A reader arrives as ``loadtests.traffic`` draws it (a channel code ``?ch=`` with a sharer half the time, a
campaign, search, WeChat, social or direct), views pages, reads (``page_leave`` with ``engaged_ms`` and
``scroll_pct`` when it moves on), downloads the page's file, fills in the contact form (``form_submit``, then
``identify``), clicks a CTA, and at last leaves; the locust user then comes back as a new reader. Most readers'
events go out as they happen, one or two to a request; some readers' outbox fills up (a slow mobile network, a
tab in the background) and goes out in ``text/plain`` batches of up to 15, as the SDK sends them.
"""

from __future__ import annotations

import time

from locust import between, task

from loadtests.scenarios.users import BrowserUser, page_url
from loadtests.traffic import FILES, PAGES, arrival

SITE = "https://a.example"
#: Share of readers whose events go out as they happen; the others' wait for 4 to 10 actions.
PROMPT = 0.7
#: What a reader does next, by weight.
ACTIONS = {"read_on": 55, "download": 12, "form": 5, "cta": 10, "leave": 18}


class Reader(BrowserUser):
    write_key = "wk_a"
    origin = SITE
    # Reading time is compressed: a reader acts every 1 to 5 s, not every minute.
    wait_time = between(1, 5)

    def on_start(self) -> None:
        super().on_start()
        self.arrive()

    def arrive(self) -> None:
        self.new_visitor()
        params, self.referrer = arrival(self.rng, "browse")
        self.send_every = 1 if self.rng.random() < PROMPT else self.rng.randint(4, 10)
        self.actions = 0
        self.open(self.rng.choice(list(PAGES)), params)

    def open(self, path: str, params: dict[str, str] | None = None) -> None:
        """Show a page: the landing page carries the arrival's parameters, later ones the page before as referrer."""
        if self.url:
            self.leave_page()
            self.referrer = self.url
        self.path = path
        self.url = page_url(SITE, path, params)
        self.shown = time.monotonic()
        self.track("page_view", title=PAGES[path])

    def leave_page(self) -> None:
        self.track("page_leave", {"engaged_ms": round((time.monotonic() - self.shown) * 1000),
                                  "scroll_pct": self.rng.randint(5, 100)})

    @task
    def act(self) -> None:
        action = self.rng.choices(list(ACTIONS), list(ACTIONS.values()))[0]
        # A page without a file to download is read on from instead.
        if action == "download" and self.path in FILES:
            file_url, file_name = FILES[self.path]
            self.track("download", {"file_url": SITE + file_url, "file_name": file_name})
        elif action == "form":
            fields = {"company": f"公司 {self.rng.randrange(5000)}",
                      "industry": self.rng.choice(("金融", "制造", "医疗")),
                      "employees": self.rng.choice(("50-200", "200-1000", "1000+"))}
            self.track("form_submit", {"form_id": "contact_sales", "fields": fields})
            self.user_id = f"lead-{self.anonymous_id[:12]}"
            self.track("identify", {"traits": {"source_form": "contact_sales"}})
        elif action == "cta":
            self.track("interaction", {"kind": "cta", "label": "预约演示"})
        elif action == "leave":
            self.leave_page()
            self.flush()
            self.arrive()
            return
        else:
            self.open(self.rng.choice(list(PAGES)))
        self.actions += 1
        if self.actions % self.send_every == 0:
            self.flush()

    def on_stop(self) -> None:
        """The run ends: the page is hidden, the SDK sends what the outbox holds."""
        if self.url:
            self.leave_page()
        self.flush()
