"""What the scenarios' locust users share: the options the harness passes, a request recorded in the worker's ledger,
and a browser's outbox sent the way the JS SDK sends it. Imported by the locustfiles only: importing locust patches
the standard library with gevent, which the harness's process and the tests' must not have.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import gevent
import orjson
from locust import FastHttpUser, events
from locust.env import Environment

from loadtests.scenarios.ledger import Writer, runs

#: The JS SDK's batch: 15 events of at most 32 KB each fit the gateway's 512 KB body.
BROWSER_BATCH = 15
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "MicroMessenger/8.0.49(0x18003137) NetType/WIFI Language/zh_CN",
    "Mozilla/5.0 (Linux; Android 14; V2309A) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.193 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 "
    "Edg/126.0.0.0",
)

#: The worker's ledger, made by ``_open_ledger`` once locust has parsed the options.
ledger: Writer


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("clicktrail scenarios (set by python -m loadtests.scenarios)")
    group.add_argument("--ledger", default="", help="directory the workers write their ledgers to")
    group.add_argument("--event-prefix", default="", help="this run's prefix of every event_id")
    group.add_argument("--heartbeat-s", type=float, default=10.0, help="webinar: seconds between heartbeats")
    group.add_argument("--live-after-s", type=float, default=10.0,
                       help="webinar: seconds from the test's start (while viewers register) to the stream's")


@events.init.add_listener
def _open_ledger(environment: Environment, **_: Any) -> None:
    global ledger
    options = environment.parsed_options
    if not options.ledger or not options.event_prefix:
        raise SystemExit("run the scenarios with python -m loadtests.scenarios, which sets --ledger and --event-prefix")
    ledger = Writer(Path(options.ledger), options.event_prefix)


def page_url(origin: str, path: str, params: dict[str, str] | None = None) -> str:
    """A page's URL; ``params`` are what its link carried (?ch=, sharer, utm_*): the gateway reads attribution there."""
    return origin + path + ("?" + urlencode(params) if params else "")


class GatewayUser(FastHttpUser):
    """A client of the ingest endpoints whose every request goes into the ledger."""

    abstract = True
    # A request left unanswered this long counts as failed (and is retried, as the SDKs do), not as hung.
    network_timeout = 30.0
    connection_timeout = 30.0
    #: Answers the client sends its events again after (besides any 5xx); 0 is no answer at all.
    retried: ClassVar[frozenset[int]]

    def settled(self, status: int) -> bool:
        """Whether the events of a request that got ``status`` are done with: taken, or refused for good."""
        return status not in self.retried and status < 500

    def new_ids(self, count: int) -> list[tuple[int, str]]:
        return ledger.next_ids(count)

    def post(self, path: str, body: bytes, headers: dict[str, str], seqs: list[int]) -> tuple[int, float]:
        """POST a batch of the events ``seqs`` names and record the answer: its status (0: none came) and its
        Retry-After in seconds (0: none)."""
        started = time.perf_counter()
        response = self.client.post(path, data=body, headers=headers, name=path.split("?")[0])
        latency = time.perf_counter() - started
        status = response.status_code or 0
        acked: list[list[int]] = []
        if 200 <= status < 300:
            content = response.content or b""
            # Events refused one by one are named by index; the common answer says none were.
            refused = () if b'"rejected":[]' in content else {r["index"] for r in orjson.loads(content)["rejected"]}
            acked = runs(seq for i, seq in enumerate(seqs) if i not in refused)
        error = "" if status else type(response.error).__name__
        ledger.record(latency, status, len(seqs), acked, error)
        retry_after = (response.headers or {}).get("Retry-After", "")
        return status, float(retry_after) if retry_after.isdigit() else 0.0


class BrowserUser(GatewayUser):
    """A browser with the JS SDK: events wait in an outbox and go out as ``text/plain`` batches of at most 15 with the
    key in ``?k=`` (no preflight), sent again while no answer comes, or a 429 or 5xx."""

    abstract = True
    # sdk_js/src/index.js: any answer but a 429 or a 5xx settles the events.
    retried = frozenset({0, 429})
    write_key: ClassVar[str]
    origin: ClassVar[str]

    def on_start(self) -> None:
        self.rng = random.Random()
        self.outbox: list[tuple[int, dict[str, Any]]] = []
        self.headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": self.origin,
                        "User-Agent": self.rng.choice(USER_AGENTS)}
        self.new_visitor()

    def new_visitor(self) -> None:
        self.anonymous_id = uuid.uuid4().hex
        self.session_id = uuid.uuid4().hex
        self.user_id = ""
        self.url = ""
        self.referrer = ""

    def track(self, event: str, props: dict[str, Any] | None = None, **fields: Any) -> None:
        ((seq, event_id),) = self.new_ids(1)
        body = {"event": event, "event_id": event_id, "anonymous_id": self.anonymous_id,
                "session_id": self.session_id, "ts": time.time_ns() // 1_000_000, "url": self.url,
                "referrer": self.referrer, "props": props or {}, **fields}
        if self.user_id:
            body["user_id"] = self.user_id
        self.outbox.append((seq, body))

    def flush(self) -> None:
        """Send the outbox 15 events at a time, oldest first, until it is empty, as the SDK does: after a failure the
        same events again once Retry-After has passed, else 1 s, 2 s, 4 s ... (at most a minute) after it."""
        fails = 0
        while self.outbox:
            batch = self.outbox[:BROWSER_BATCH]
            body = orjson.dumps({"batch": [event for _, event in batch], "sent_at": time.time_ns() // 1_000_000})
            status, retry_after = self.post(f"/v1/batch?k={self.write_key}", body, self.headers,
                                            [seq for seq, _ in batch])
            if self.settled(status):
                del self.outbox[: len(batch)]
                fails = 0
            else:
                gevent.sleep(retry_after or min(60.0, 2.0**fails))
                fails += 1
