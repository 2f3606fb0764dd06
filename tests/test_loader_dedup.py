"""The loader's dedup stays exact while it reads only the batch's part of the table: a real Store, opened as the
gateway opens it, in a temporary directory; rows built by gateway.ingest.rows as the receiver builds them (skew
correction and all), encoded and named as the spool writes them, inserted by Store.insert_segments as the loader
inserts them.

Each copy of an event arrives in its own request (its own receive time and sent_at), as a client's retry does."""

from __future__ import annotations

import itertools
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

import gateway.warehouse.store as store_module
from gateway.ingest.contract import decode_event
from gateway.ingest.enrich import NO_AGENT
from gateway.ingest.rows import Context, Row, TimeWindow, build_row, encode
from gateway.ingest.spool import SEALED
from gateway.warehouse.store import DATABASE, DEDUP_INDEX, Store

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WRITE = TimeWindow.of(7, 3600, "a write key")
SECRET = TimeWindow.of(1825, 3600, "the secret key")
#: A fixed "now" for every receive time below: just after a UTC midnight.
MIDNIGHT = int(datetime(2026, 11, 24, tzinfo=UTC).timestamp() * 1000)
_segment_numbers = itertools.count()


def event(**fields: Any) -> dict[str, Any]:
    return {"event": "page_view", "event_id": uuid.uuid4().hex, "anonymous_id": "a-1", **fields}


def rows(events: list[dict[str, Any]], received_ms: int, sent_at: int | None = None, window: TimeWindow = WRITE,
         site: str = "site_a") -> list[Row]:
    """The rows one request carrying ``events`` gets, received at ``received_ms``."""
    ctx = Context(site, received_ms, 0 if sent_at is None else received_ms - sent_at, window, "10.0.0.0", NO_AGENT, "")
    return [build_row(decode_event(orjson.dumps(e)), ctx) for e in events]


def segment(directory: Path, *requests: list[Row]) -> Path:
    """A sealed spool segment holding the rows of ``requests``, in order."""
    path = directory / f"{next(_segment_numbers):012d}{SEALED}"
    path.write_bytes(b"".join(encode(r) for r in requests))
    return path


def load(store: Store, *segments: Path) -> None:
    store.insert_segments(list(segments))


def stored(store: Store, events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """event_id -> the ts of each row stored for it."""
    ids = ", ".join(f"'{e['event_id']}'" for e in events)
    found: dict[str, list[str]] = {e["event_id"]: [] for e in events}
    for line in store.query(f"SELECT event_id, toString(ts) FROM {DATABASE}.events WHERE event_id IN ({ids})"
                            " ORDER BY ts", readonly=False).decode().splitlines():
        event_id, ts = line.split("\t")
        found[event_id].append(ts)
    return found


def once(store: Store, events: list[dict[str, Any]]) -> None:
    counts = {event_id: len(ts) for event_id, ts in stored(store, events).items()}
    assert counts == {e["event_id"]: 1 for e in events}


def test_a_batch_spanning_midnight_resent_is_stored_once(store: Store, tmp_path: Path) -> None:
    # Events on both sides of midnight (client time), re-sent later: the retry's sent_at corrects them by
    # another amount (network time differs), which moves some across midnight the other way.
    events = [event(ts=MIDNIGHT + offset) for offset in (-900, -400, -1, 0, 1, 400, 900)]
    load(store, segment(tmp_path, rows(events, MIDNIGHT + 1200, sent_at=MIDNIGHT + 1000)))
    load(store, segment(tmp_path, rows(events, MIDNIGHT + 5000, sent_at=MIDNIGHT + 3100)))
    once(store, events)
    assert stored(store, events)[events[2]["event_id"]] == ["2026-11-24 00:00:00.199"]  # the first copy's


def test_a_retry_whose_corrected_ts_lands_on_another_day_is_stored_once(store: Store, tmp_path: Path) -> None:
    # A phone's clock ran 30 hours behind when it first sent; when it retries (the first answer was lost),
    # its clock has been set right: the same ts, corrected by sent_at, lands on another day.
    ts = MIDNIGHT - 30 * HOUR_MS + 5000
    events = [event(ts=ts), event(ts=ts + 10)]
    load(store, segment(tmp_path, rows(events, MIDNIGHT + 8000, sent_at=MIDNIGHT - 30 * HOUR_MS + 7000)))
    load(store, segment(tmp_path, rows(events, MIDNIGHT + 2 * DAY_MS, sent_at=MIDNIGHT + 2 * DAY_MS - 40)))
    once(store, events)
    assert stored(store, events)[events[0]["event_id"]] == ["2026-11-24 00:00:06.000"]


def test_old_events_resent_weeks_later_are_stored_once(store: Store, tmp_path: Path) -> None:
    # A backend's outbox re-sends (secret key) what it sent three weeks ago; and a client that sends no ts:
    # its retry arrives weeks later and would be stored at that time.
    dated = [event(ts=MIDNIGHT - HOUR_MS - i) for i in range(5)]
    undated = [event() for _ in range(5)]
    load(store, segment(tmp_path, rows(dated, MIDNIGHT, sent_at=MIDNIGHT), rows(undated, MIDNIGHT, window=SECRET)))
    later = MIDNIGHT + 21 * DAY_MS
    load(store, segment(tmp_path, rows(dated, later, sent_at=later + 200, window=SECRET)))
    load(store, segment(tmp_path, rows(undated, later, window=SECRET)))
    once(store, dated + undated)


def test_a_backfill_of_years_old_events_rerun_is_stored_once(store: Store, tmp_path: Path) -> None:
    # An import of four years of history with the secret key, run twice (the first run's answers were lost),
    # the second time amid live traffic, in other batches cut at other places.
    history = [event(ts=MIDNIGHT - 4 * 365 * DAY_MS + i * 9 * DAY_MS) for i in range(160)]
    load(store, *(segment(tmp_path, rows(history[i:i + 50], MIDNIGHT, window=SECRET)) for i in range(0, 160, 50)))
    live = [event(ts=MIDNIGHT + i) for i in range(100)]
    rerun = segment(tmp_path, rows(live[:50], MIDNIGHT + 3000), rows(history[::-1], MIDNIGHT + 3000, window=SECRET),
                    rows(live[50:], MIDNIGHT + 3000))
    load(store, rerun)
    once(store, history + live)


def test_copies_within_one_insert_are_stored_once(store: Store, tmp_path: Path) -> None:
    # A retry can share an insert with its original (both still in the spool): different corrected ts.
    events = [event(ts=MIDNIGHT - 50), event(ts=MIDNIGHT + 50), event()]
    first = segment(tmp_path, rows(events, MIDNIGHT + 100, sent_at=MIDNIGHT + 100))
    retry = segment(tmp_path, rows(events, MIDNIGHT + 3 * HOUR_MS, sent_at=MIDNIGHT + 2 * HOUR_MS))
    load(store, first, retry)
    once(store, events)


def test_a_segment_loaded_again_after_a_crash_adds_nothing(store: Store, tmp_path: Path) -> None:
    # The loader crashed between the insert and the segment's deletion: it inserts the same segment again.
    # Pixel events whose ids the gateway made, events without ts, with ts, and a row spooled before migration
    # 0009 (no dedup_ts, as a segment left in the spool by the previous version holds).
    made = [build_row(decode_event(orjson.dumps(event(event="email_open"))),
                      Context("site_a", MIDNIGHT + 10, 0, WRITE, "", NO_AGENT, ""), made_id=True)]
    events = [event(), event(ts=MIDNIGHT - 10)]
    spooled_before = rows([event(ts=MIDNIGHT - 20)], MIDNIGHT + 10, sent_at=MIDNIGHT)
    spooled_before[0].dedup_ts = None
    path = segment(tmp_path, made, rows(events, MIDNIGHT + 10, sent_at=MIDNIGHT + 7), spooled_before)
    assert b"dedup_ts" not in path.read_bytes().splitlines()[-1]
    load(store, path)
    load(store, path)
    ids = [{"event_id": r.event_id} for r in made + spooled_before]
    once(store, events + ids)


def test_a_part_without_the_index_is_read_whole(store: Store, tmp_path: Path) -> None:
    # Someone cleared the projection of a month's parts (the migration materializes it for every part, and
    # inserts and merges keep it): the lookup must still see their rows.
    events = [event(ts=MIDNIGHT - 5), event()]
    load(store, segment(tmp_path, rows(events, MIDNIGHT, sent_at=MIDNIGHT - 20)))
    store.query(f"ALTER TABLE {DATABASE}.events CLEAR PROJECTION {DEDUP_INDEX} IN PARTITION 202611"
                " SETTINGS mutations_sync = 2", readonly=False)
    assert store.query(f"SELECT count() FROM system.parts WHERE database = '{DATABASE}' AND table = 'events'"
                       f" AND active AND NOT has(projections, '{DEDUP_INDEX}')", readonly=False).strip() != b"0"
    load(store, segment(tmp_path, rows(events, MIDNIGHT + 9000, sent_at=MIDNIGHT + 7000)))
    once(store, events)


def test_rows_stored_before_the_migration_are_found_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An install that stored events with the previous version (no dedup_ts, no by_dedup_ts) is upgraded with a
    # segment of those events still in its spool (the crash came between insert and deletion).
    previous = tmp_path / "migrations"
    previous.mkdir()
    for path in sorted(store_module.MIGRATIONS.glob("*.sql")):
        if int(path.name.split("_", 1)[0]) < 9:
            shutil.copy(path, previous)
    events = [event(ts=MIDNIGHT - 3), event(ts=MIDNIGHT + 3), event()]
    old_rows = rows(events, MIDNIGHT + 500, sent_at=MIDNIGHT + 400)
    for row in old_rows:
        row.dedup_ts = None
    path = segment(tmp_path, old_rows)
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", previous)
        # The previous version's views are not these, and it had no persons dictionary to reload.
        patch.setattr(store_module, "VIEWS", tmp_path / "no-views")
        patch.setattr(Store, "refresh_persons", lambda self: None)
        (tmp_path / "no-views").mkdir()
        old = Store(tmp_path / "ch")
        old.open()
        columns = old.columns("events")
        assert "dedup_ts" not in dict(columns)
        structure = ", ".join(f"{name} {type_}" for name, type_ in columns).replace("'", "\\'")
        old.query(f"INSERT INTO {DATABASE}.events SELECT * FROM file('{path}', JSONEachRow, '{structure}')",
                  readonly=False)
        old.close()
    upgraded = Store(tmp_path / "ch")
    upgraded.open()
    try:
        load(upgraded, path)
        once(upgraded, events)
    finally:
        upgraded.close()
