"""Locust scenario: backend services on site_c sending as the Python SDK does, each locust user one SDK's consumer.

Back to back, each sends a batch of 500 events (the most a batch may hold), gzipped, with the site's secret key:
what a CRM sync, an order system and a form handler send (``lead_stage`` walks, ``identify`` with traits,
server-side ``form_submit``, custom events), stamped within the last hour. A batch that got no answer, a 408, a
429 or a 5xx is sent again with the same event ids after a jittered backoff, as the SDK retries it.
"""

from __future__ import annotations

import random
import time
import zlib
from typing import Any

import gevent
import orjson
from locust import constant, task

from loadtests.scenarios.users import GatewayUser
from loadtests.traffic import HOUR_MS, PAGES, stage_props, stage_walk

BATCH = 500
#: The SDK's gzip level (sdk_py/clicktrail/consumer.py).
GZIP_LEVEL = 1
#: The SDK's defaults (sdk_py/clicktrail/client.py): retries, the first backoff, the longest.
RETRIES, BACKOFF_S, BACKOFF_MAX_S = 10, 0.5, 30.0
HEADERS = {"X-Write-Key": "sk_c", "Content-Type": "application/json", "Content-Encoding": "gzip",
           "User-Agent": "clicktrail-python/0.1.0"}
CITIES = ("北京", "上海", "深圳", "杭州", "成都")


class BackendService(GatewayUser):
    wait_time = constant(0)
    # sdk_py/clicktrail/consumer.py: no answer, 408, 429 and 5xx are retried.
    retried = frozenset({0, 408, 429})

    def on_start(self) -> None:
        self.rng = random.Random()

    def event(self, event_id: str, now_ms: int) -> dict[str, Any]:
        rng = self.rng
        user_id = f"crm-{rng.randrange(1_000_000)}"
        kind = rng.random()
        if kind < 0.4:
            name, props = "lead_stage", stage_props(rng, rng.choice(stage_walk(rng)))
        elif kind < 0.65:
            traits = {"company": f"公司 {rng.randrange(50_000)}", "city": rng.choice(CITIES),
                      "employees": rng.choice((50, 200, 1000, 5000)), "owner": "sales-07"}
            name, props = "identify", {"traits": traits}
        elif kind < 0.85:
            fields = {"plan": rng.choice(("pro", "team")), "page": rng.choice(list(PAGES))}
            name, props = "form_submit", {"form_id": "trial_signup", "fields": fields}
        else:
            amount = rng.randint(1, 500) * 1000
            name, props = "invoice_paid", {"invoice": f"INV-{rng.randrange(10**8):08d}", "amount": amount,
                                           "currency": "CNY"}
        return {"event": name, "event_id": event_id, "user_id": user_id, "ts": now_ms - rng.randrange(HOUR_MS),
                "props": props}

    @task
    def upload(self) -> None:
        ids = self.new_ids(BATCH)
        now_ms = time.time_ns() // 1_000_000
        events = orjson.dumps([self.event(event_id, now_ms) for _, event_id in ids])
        seqs = [seq for seq, _ in ids]
        attempt = 0
        while True:
            # sent_at is the clock at each attempt, as the SDK sends it: the skew correction must not take the time
            # spent retrying for clock skew.
            body = b'{"sent_at":%d,"batch":%b}' % (time.time_ns() // 1_000_000, events)
            status, retry_after = self.post("/v1/batch", zlib.compress(body, GZIP_LEVEL, wbits=31), HEADERS, seqs)
            if self.settled(status) or attempt == RETRIES:  # answered, or given up on as the SDK gives up
                return
            attempt += 1
            # The SDK's full jitter, never sooner than Retry-After.
            gevent.sleep(max(retry_after, self.rng.uniform(0, min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1)))))
