"""Sessions (会话) and content (内容) views against the definitions in tests/analytics/reference.py.

For every seed, through a real gateway: sessions, channel_sessions, content_engagement, downloads_by_file and
sharer_stats equal the reference's rows (counts exact, rates and means within 1e-9), and each cookbook query of
clickhouse/README.md about them gives the reference's answer. Without a gateway, on an engine of this process:
hand-made corners the generator never makes (a session whose first event is not its page_view, a session whose
entry and later events belong to two users), and rollups that stay exact when the migrator backfills them and
when a backfill runs again over what the materialized views already wrote.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.ingest.enrich import split_url
from gateway.warehouse.store import Store, split_statements
from tests.analytics import reference
from tests.analytics.generate import TOUCH_FIELDS, generate
from tests.analytics.harness import RULES, Loaded, assert_rows_equal, loaded

__all__ = ["loaded"]  # the fixture: one gateway per seed

ROOT = Path(__file__).resolve().parent.parent
#: The migrations of the sessions and content rollups, those that rebuilt their tables since included.
MIGRATIONS = ("0005_sessions.sql", "0006_content.sql", "0008_page_leaves_by_time.sql", "0010_session_entries.sql")
#: Where the materialized views that feed them now are defined (0010 replaced 0005's).
FEEDING = ("0006_content.sql", "0010_session_entries.sql")
ROLLUPS = ("session_rollup", "content_hits", "page_leaves")  # theirs; each fed by <name>_mv
Rows = Callable[[str], list[dict[str, Any]]]
Event = dict[str, Any]

SESSION_KEY = ("site_id", "anonymous_id", "session_id")
#: What the migrator backfills: for each materialized view `... TO target AS SELECT ...`, that SELECT into target.
BACKFILL = re.compile(
    r"CREATE MATERIALIZED VIEW (?:IF NOT EXISTS )?\S+ TO (?P<target>\S+)\s+AS\s+(?P<select>SELECT\b.*)", re.S | re.I)


def _sessions(rows: Rows, view: str = "sessions") -> list[dict[str, Any]]:
    got = rows("SELECT * EXCEPT (start, `end`), toUnixTimestamp64Milli(start) AS start,"
               f" toUnixTimestamp64Milli(`end`) AS `end` FROM clicktrail.{view}")
    return [{**r, "day": date.fromisoformat(r["day"])} for r in got]


def _entry_persons(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Each session's person as the reference resolves it for the entry channel: the entry event's (its first
    page_view, else its first event)."""
    events = list(events)
    links = reference.identity_map(events)
    entries: dict[tuple[str, str, str], Event] = {}
    for e in sorted(events, key=lambda e: (e["ts"], e["event_id"])):
        key = (e["site_id"], e["anonymous_id"], e["session_id"])
        if e["session_id"] and (key not in entries or (e["event"] == "page_view"
                                                       and entries[key]["event"] != "page_view")):
            entries[key] = e
    return [{**dict(zip(SESSION_KEY, key, strict=True)), "person_id": reference.person_of(e, links)}
            for key, e in entries.items()]


def _check_sessions(rows: Rows, events: list[Event]) -> None:
    got = _sessions(rows)
    want = reference.sessions(events, RULES)
    assert_rows_equal(got, want, SESSION_KEY)
    assert_rows_equal(got, _entry_persons(events), SESSION_KEY)
    # session_facts: the same sessions and figures, without the entry channel.
    facts = _sessions(rows, "session_facts")
    assert_rows_equal(facts, [{k: v for k, v in s.items() if k != "entry_channel"} for s in want], SESSION_KEY)
    assert_rows_equal(facts, _entry_persons(events), SESSION_KEY)


def _check_channel_sessions(rows: Rows, events: list[Event]) -> None:
    got = [{**r, "day": date.fromisoformat(r["day"])} for r in rows("SELECT * FROM clicktrail.channel_sessions")]
    assert_rows_equal(got, reference.channel_sessions(events, RULES), ("site_id", "day", "channel", "utm_term"))


def _check_content(rows: Rows, events: list[Event]) -> None:
    assert_rows_equal(rows("SELECT * FROM clicktrail.content_engagement"), reference.content_engagement(events),
                      ("site_id", "url_path"))
    assert_rows_equal(rows("SELECT * FROM clicktrail.downloads_by_file"), reference.downloads_by_file(events),
                      ("site_id", "file_url"))
    assert_rows_equal(rows("SELECT * FROM clicktrail.sharer_stats"), reference.sharer_stats(events),
                      ("site_id", "sharer"))


# --- the generator's data, through a gateway ----------------------------------------------------------------------


def test_the_generator_reaches_the_corners_of_sessions_and_content(loaded: Loaded) -> None:
    events = loaded.data.events
    sessions = reference.sessions(events, RULES)
    assert any(s["pageviews"] == 0 for s in sessions) and any(s["bounce"] for s in sessions)
    assert any(s["entry_channel"] == reference.DIRECT for s in sessions)
    assert any(s["entry_utm_term"] for s in sessions)
    assert any(r["read_through_rate"] for r in reference.content_engagement(events))
    assert any(r["downloads"] > r["persons"] for r in reference.downloads_by_file(events))
    sharers = reference.sharer_stats(events)
    assert any(r["registrations"] for r in sharers) and any(r["leads"] for r in sharers)


def test_sessions(loaded: Loaded) -> None:
    _check_sessions(loaded.rows, loaded.data.events)


def test_channel_sessions(loaded: Loaded) -> None:
    _check_channel_sessions(loaded.rows, loaded.data.events)


def test_session_keys_hold_the_sessions_starting_in_a_period(loaded: Loaded) -> None:
    """session_keys(site, from, to) holds every session that starts in the period, and only sessions with an
    event in it (a session loaded in pieces may come with one whose own start is earlier)."""
    events, sessions = loaded.data.events, reference.sessions(loaded.data.events, RULES)
    days = sorted({s["day"] for s in sessions})
    date_from, date_to = days[len(days) // 3], days[2 * len(days) // 3]
    for site_id in loaded.sites:
        got = {(r["anonymous_id"], r["session_id"]) for r in loaded.rows(
            f"SELECT * FROM clicktrail.session_keys(site = '{site_id}', date_from = '{date_from}',"
            f" date_to = '{date_to}')")}
        starting = {(s["anonymous_id"], s["session_id"]) for s in sessions
                    if s["site_id"] == site_id and date_from <= s["day"] <= date_to}
        active = {(e["anonymous_id"], e["session_id"]) for e in events if e["site_id"] == site_id
                  and e["session_id"] and date_from <= datetime.fromtimestamp(e["ts"] / 1000, UTC).date() <= date_to}
        assert starting, "no session starts in the period: the check proved little"
        assert starting <= got <= active, (len(starting - got), len(got - active))


def test_content_engagement_downloads_and_sharers(loaded: Loaded) -> None:
    _check_content(loaded.rows, loaded.data.events)


# --- the cookbook of clickhouse/README.md -------------------------------------------------------------------------

BOUNCE_BY_KEYWORD = """\
SELECT utm_term, sum(sessions) AS entries, sum(bounces) AS bounced, bounced / entries AS bounce_rate
FROM clicktrail.channel_sessions
WHERE site_id = 'demo' AND utm_term != '' AND day >= today() - 30
GROUP BY utm_term
ORDER BY entries DESC, utm_term"""

WHITE_PAPERS_READ_THROUGH = """\
SELECT url_path, views, readers, avg_engaged_ms, read_through_rate
FROM clicktrail.content_engagement
WHERE site_id = 'demo' AND startsWith(url_path, '/whitepaper/')
ORDER BY read_through_rate DESC, url_path"""

SHARER_LEADERBOARD = """\
SELECT sharer, leads, registrations, readers, views
FROM clicktrail.sharer_stats
WHERE site_id = 'demo'
ORDER BY leads DESC, registrations DESC, readers DESC, sharer"""


def _bounce_by_keyword(events: list[Event], site_id: str, today: date) -> list[dict[str, Any]]:
    terms: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in reference.channel_sessions(events, RULES):
        if r["site_id"] == site_id and r["utm_term"] and r["day"] >= today - timedelta(days=30):
            terms[r["utm_term"]][0] += r["sessions"]
            terms[r["utm_term"]][1] += r["bounces"]
    rows = [{"utm_term": term, "entries": n, "bounced": b, "bounce_rate": b / n} for term, (n, b) in terms.items()]
    return sorted(rows, key=lambda r: (-r["entries"], r["utm_term"]))


def _white_papers(events: list[Event], site_id: str, today: date) -> list[dict[str, Any]]:
    rows = [{k: v for k, v in r.items() if k != "site_id"} for r in reference.content_engagement(events)
            if r["site_id"] == site_id and r["url_path"].startswith("/whitepaper/")]
    return sorted(rows, key=lambda r: (-r["read_through_rate"], r["url_path"]))


def _sharer_leaderboard(events: list[Event], site_id: str, today: date) -> list[dict[str, Any]]:
    rows = [{k: r[k] for k in ("sharer", "leads", "registrations", "readers", "views")}
            for r in reference.sharer_stats(events) if r["site_id"] == site_id]
    return sorted(rows, key=lambda r: (-r["leads"], -r["registrations"], -r["readers"], r["sharer"]))


#: name -> (query, the reference's answer, the column that tells its rows apart)
COOKBOOK = {
    "bounce rate by search keyword": (BOUNCE_BY_KEYWORD, _bounce_by_keyword, "utm_term"),
    "white papers read to the end": (WHITE_PAPERS_READ_THROUGH, _white_papers, "url_path"),
    "sharer leaderboard": (SHARER_LEADERBOARD, _sharer_leaderboard, "sharer"),
}


@pytest.mark.parametrize("name", COOKBOOK)
def test_cookbook(loaded: Loaded, name: str) -> None:
    sql, expected, key = COOKBOOK[name]
    assert sql in (ROOT / "clickhouse" / "README.md").read_text(), "the README's query is not the one tested"
    today = date.fromisoformat(loaded.rows("SELECT today() AS d")[0]["d"])
    answered = 0
    for site_id in loaded.sites:
        got = loaded.rows(sql.replace("'demo'", f"'{site_id}'"))
        want = expected(loaded.data.events, site_id, today)
        assert [r[key] for r in got] == [r[key] for r in want], site_id  # the same rows in the same order
        assert_rows_equal(got, want, (key,))
        answered += len(want)
    assert answered  # not vacuous


# --- corners and backfills, on an engine of this process ------------------------------------------------------

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
HOST = "https://www.example.cn"


def _hand_events() -> list[Event]:
    ids = itertools.count()

    def ev(name: str, ts: int, anon: str = "", user: str = "", session: str = "", path: str | None = None,
           props: dict[str, Any] | None = None, **fields: str) -> Event:
        return {"event": name, "event_id": f"h{next(ids):04d}", "anonymous_id": anon, "user_id": user,
                "session_id": session, "ts": ts, **{f: "" for f in TOUCH_FIELDS},
                "url": "" if path is None else HOST + path, "referrer": "", "title": "", "props": props or {},
                "site_id": "hand", **fields}

    leave = {"engaged_ms": 30_000, "scroll_pct": 95}
    return [
        # s1: its first event is a download, then its page_view, a touch of its own: the entry is the page_view
        # (/wp, utm_term kw, channel poster); at the download's time the channel would be (direct). Not a bounce.
        ev("download", T0, "a1", session="s1", path="/wp", props={"file_url": HOST + "/wp.pdf"}),
        ev("page_view", T0 + MIN, "a1", session="s1", path="/wp?ch=poster&utm_term=kw", channel="poster",
           utm_term="kw"),
        ev("page_leave", T0 + 2 * MIN, "a1", session="s1", path="/wp", props=leave, channel="poster", utm_term="kw"),
        # s2: a page_leave of a tab left idle, then one page_view: a bounce entered at /new, not /old. The only
        # touch is 100 days old: (direct).
        ev("page_view", T0 - 100 * DAY, "a2", session="s2a", path="/?ch=expired", channel="expired"),
        ev("page_leave", T0, "a2", session="s2", path="/old", props=leave),
        ev("page_view", T0 + 10 * MIN, "a2", session="s2", path="/new"),
        ev("page_leave", T0 + 11 * MIN, "a2", session="s2", path="/new", props=leave),
        # s3: a3 was linked to owner first; guest logs in on the same browser during s3. The entry has no user_id,
        # so its person is owner (edm_owner), whatever the later events say; s3b, without a page_view, enters
        # with guest's page_leave (edm_guest).
        ev("identify", T0 - 10 * DAY, "a3", "owner", session="s3a", path="/login"),
        ev("email_open", T0 - DAY, user="owner", channel="edm_owner"),
        ev("email_open", T0 - 2 * HOUR, user="guest", channel="edm_guest", sharer="emp_5"),
        ev("page_view", T0, "a3", session="s3", path="/pricing"),
        ev("identify", T0 + MIN, "a3", "guest", session="s3", path="/pricing"),
        ev("page_view", T0 + 2 * MIN, "a3", "guest", session="s3", path="/contact"),
        ev("form_submit", T0 + 3 * MIN, "a3", "guest", session="s3", path="/contact", props={"form_id": "contact"}),
        ev("page_leave", T0 + DAY, "a3", "guest", session="s3b", path="/contact", props=leave),
        # s4: a touch exactly 90 days before the entry still counts; the registration before the first touch
        # counts for its sharer.
        ev("registration", T0 - 91 * DAY, "a4", session="s4a", path="/live/w1", props={"stream_id": "w1"}),
        ev("page_view", T0 - 90 * DAY, "a4", session="s4b", path="/wp?ch=wechat_group_7&sharer=emp_9",
           channel="wechat_group_7", sharer="emp_9"),
        ev("page_leave", T0 - 90 * DAY + MIN, "a4", session="s4b", path="/wp",
           props={"engaged_ms": 1000, "scroll_pct": 40}, channel="wechat_group_7", sharer="emp_9"),
        ev("page_view", T0, "a4", session="s4", path="/wp", channel="wechat_group_7", sharer="emp_9"),
        ev("download", T0 + MIN, "a4", session="s4", path="/wp", props={"file_url": HOST + "/wp.pdf"},
           channel="wechat_group_7", sharer="emp_9"),
        # Last, so that the test may store them after the others: another reading of /wp.
        ev("page_view", T0 + 2 * DAY, "a1", session="s1c", path="/wp"),
        ev("page_leave", T0 + 2 * DAY + MIN, "a1", session="s1c", path="/wp",
           props={"engaged_ms": 7000, "scroll_pct": 10}),
    ]


def _stored(e: Event, received_ms: int) -> dict[str, Any]:
    """The row the gateway stores for a delivered event (gateway.ingest.rows.build_row, the parts the views read)."""
    url, params = split_url(e["url"]), split_url(e["url"]).params
    return {"site_id": e["site_id"], "event_id": e["event_id"], "event": e["event"], "ts": e["ts"] / 1000,
            "received_at": received_ms / 1000, "anonymous_id": e["anonymous_id"], "user_id": e["user_id"],
            "session_id": e["session_id"], **{f: e[f] or params.get(f, "") for f in TOUCH_FIELDS},
            "url": e["url"], "url_host": url.host, "url_path": url.path, "url_query": url.query,
            "referrer": e["referrer"], "referrer_host": split_url(e["referrer"]).host, "title": e["title"],
            "props": orjson.dumps(e["props"]).decode()}


def _insert(store: Store, events: list[Event], received_ms: int) -> None:
    lines = "\n".join(orjson.dumps(_stored(e, received_ms)).decode() for e in events)
    store.query("INSERT INTO clicktrail.events FORMAT JSONEachRow\n" + lines, readonly=False)
    store.refresh_persons()  # as the loader does after each load


def _rows(store: Store) -> Rows:
    return lambda sql: [orjson.loads(line) for line in store.query(sql, "JSONEachRow").decode().splitlines()]


def _check_all(store: Store, events: list[Event]) -> None:
    _check_sessions(_rows(store), events)
    _check_channel_sessions(_rows(store), events)
    _check_content(_rows(store), events)


def test_hand_made_corners_and_backfills_are_exact(tmp_path: Path) -> None:
    hand = _hand_events()
    sessions = {s["session_id"]: s for s in reference.sessions(hand)}
    assert (sessions["s1"]["entry_path"], sessions["s1"]["entry_channel"], sessions["s1"]["bounce"]) == (
        "/wp", "poster", False)
    assert (sessions["s2"]["entry_path"], sessions["s2"]["entry_channel"], sessions["s2"]["bounce"]) == (
        "/new", reference.DIRECT, True)
    assert (sessions["s3"]["entry_channel"], sessions["s3b"]["entry_channel"]) == ("edm_owner", "edm_guest")
    assert sessions["s4"]["entry_channel"] == "wechat_group_7"
    now = T0 + 60 * DAY
    events = generate(11, now).events + hand[:-2]
    store = Store(tmp_path / "data", referrer_channels=RULES)
    store.open()
    try:
        half = len(events) // 2  # two inserts: states of one session in two parts
        _insert(store, events[half:], now)
        _insert(store, events[:half], now)
        _check_all(store, events)  # fed by the materialized views

        # An install that had these events before the migrations of these rollups: the migrator backfills them.
        for table in ROLLUPS:
            store.query(f"DROP TABLE clicktrail.{table}_mv", readonly=False)
            store.query(f"DROP TABLE clicktrail.{table}", readonly=False)
        versions = ", ".join(str(int(m.split("_", 1)[0])) for m in MIGRATIONS)
        store.query(f"DELETE FROM clicktrail.schema_migrations WHERE version IN ({versions})", readonly=False)
        assert store.migrate() == [m.removesuffix(".sql") for m in MIGRATIONS]
        _check_all(store, events)

        # The backfill again (a crash before the migration was recorded): every event stored so far is in the
        # rollups twice, and no merge folds the copies; then two more events, once (a view and a backfill that
        # overlapped for some events only: an average over copies would now be off).
        for table in ROLLUPS:
            store.query(f"SYSTEM STOP MERGES clicktrail.{table}", readonly=False)
        for migration in FEEDING:
            for statement in split_statements((ROOT / "clickhouse" / "migrations" / migration).read_text()):
                if backfill := BACKFILL.match(statement):
                    store.query(f"INSERT INTO {backfill['target']} {backfill['select']}", readonly=False)
        _insert(store, hand[-2:], now)
        leaves = sum(e["event"] == "page_leave" for e in events)
        assert _rows(store)("SELECT count() AS n FROM clicktrail.page_leaves") == [{"n": 2 * leaves + 1}]
        _check_all(store, events + hand[-2:])
    finally:
        store.close()
