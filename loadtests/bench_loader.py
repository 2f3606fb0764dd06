"""Benchmark: the loader with a big table stored against the same load into an empty one, measured in one run.

    python -m loadtests.bench_loader [--stored N] [--rows M] [--segment-rows K] [--late PERCENT] [--quick]

The loader's exact dedup must cost what the batch costs, not what the table holds. Two fresh stores, each as
the gateway opens it (every migration, the rollups' materialized views and the analysts' views), one after the
other (chDB opens one data directory at a time), in this order:

1. (stored) N events (default 100,000,000) are seeded, INSERT ... SELECT from numbers(): three sites
   (60/30/10 %), spread evenly over the 365 days up to a minute ago, event ids random-looking (hex MD5, as
   random as the SDKs' UUIDs), with the columns a real row has. The materialized views are detached while
   seeding (the size of their rollups does not change what an insert costs, and filling them would triple the
   seeding time), then merges get up to 3 minutes to settle. Then the gateway's own Loader (gateway.warehouse.loader,
   hence Store.insert_segments, with the gateway's load_max_bytes) loads M rows (default 1,000,000) from spool
   segments of K rows (default 100,000);
2. (empty) the same M rows load the same way into an empty table. It runs second so that neither load meets
   a cold engine (the first has the seeding before it).

The M rows are built as the gateway builds them (gateway.ingest.contract.decode_event,
gateway.ingest.rows.build_row: skew correction and all), in arrival order over five minutes, and encoded as the
spool encodes them:
- live traffic (page views and webinar heartbeats) sent within 3 s, its clients' clocks off by up to a minute
  either way, corrected with sent_at;
- 1 % re-sends of the row 50,000 rows earlier (the answer was lost): another sent_at and client clock, so
  another corrected ts;
- ``--late`` percent (default 1) sent late, how late log-uniform from a minute on, as retry delays spread over
  scales: half re-sends of seeded events, up to a year late (new events to the empty table), half new events an
  outbox kept for up to 7 days. Each one far from the batch's other times costs the lookup a granule of its own
  (256 rows) in the stored table: ``--late 4`` shows what many of them cost.
After each load the table must have gained exactly the new events (duplicates dropped, nothing lost), else the
run fails. Printed: rows per second of insert time (the loader's own metric, as /metrics reports it), inserts,
wall time, seeding time and the events table's size on disk; the ratio stored/empty (target >= 0.8) and the
stored rate (target >= 150,000 rows/s) are flagged, not failed. The last line is a JSON object.

Disk: about 55 bytes per seeded event (5.5 GB for 100 million) under /tmp, removed at the end. Time with the
defaults on 2 cores: about 5 minutes (3 to seed 100 million and let merges settle, under half a minute per load).
``--quick``: 2,000,000 stored and 300,000 rows, under a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.ingest.contract import decode_event
from gateway.ingest.enrich import parse_user_agent
from gateway.ingest.rows import Context, Row, TimeWindow, build_row, encode
from gateway.ingest.spool import SEALED
from gateway.warehouse.store import DATABASE, Store
from loadtests.bench_analytics import Load, load, print_loads, settle
from loadtests.traffic import DAY_MS, MINUTE_MS, SECOND_MS, SITES

DEFAULT_STORED = 100_000_000
DEFAULT_ROWS = 1_000_000
QUICK_STORED = 2_000_000
QUICK_ROWS = 300_000
SEGMENT_ROWS = 100_000
RATIO_TARGET = 0.8
RATE_TARGET = 150_000
SEED_DAYS = 365
#: Seeded rows per INSERT: a month of the default seed, so each insert writes few, large parts.
SEED_CHUNK = 4_000_000
#: Percent of the load's rows sent late (--late): half re-sends of stored events, half events an outbox kept.
LATE_PERCENT = 1.0
#: One row in RESEND_EVERY re-sends the row RESEND_DISTANCE rows before it (the answer was lost).
RESEND_EVERY, RESEND_DISTANCE = 100, 50_000
USER_AGENT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN")
#: Seeded events' names, one in ten each: webinar heartbeats make most of a B2B site's events.
SEED_EVENTS = ("live_heartbeat",) * 4 + ("page_view",) * 2 + ("page_leave", "interaction", "download", "registration")
#: The secret key's window: re-sends of seeded events reach a year back.
WINDOW = TimeWindow.of(1825, 3600, "the secret key")


# --- the seeded table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """N events over the SEED_DAYS days before ``end_ms``; event n is a pure function of n, so a re-send of it
    can be built in Python with its id and its time as the client first sent it."""

    n: int
    end_ms: int

    @property
    def start_ms(self) -> int:
        return self.end_ms - SEED_DAYS * DAY_MS

    def event_id(self, i: int) -> str:
        return hashlib.md5(str(i).encode()).hexdigest()

    def site(self, i: int) -> str:
        return "site_a" if i % 10 < 6 else "site_b" if i % 10 < 9 else "site_c"

    def ts_ms(self, i: int) -> int:
        """The stored (corrected) time."""
        return self.start_ms + i * (SEED_DAYS * DAY_MS) // self.n

    def skew_ms(self, i: int) -> int:
        """What the gateway added to the client's time: its clock was this far behind, up to a second each way."""
        return i * 7919 % 2001 - 1000

    def at(self, ts_ms: int) -> int:
        """The event stored at about ``ts_ms``."""
        return min(self.n - 1, max(0, (ts_ms - self.start_ms) * self.n // (SEED_DAYS * DAY_MS)))

    def columns(self, table: set[str]) -> dict[str, str]:
        """Column -> SQL over ``number`` that computes what the Python methods above compute, and the rest of a
        real row. A column of the events table this benchmark does not know stays at its default; ``dedup_ts``
        (when the table has it) is the client's own time, as the gateway stores it."""
        ts = f"toInt64({self.start_ms} + intDiv(number * {SEED_DAYS * DAY_MS}, {self.n}))"
        heartbeat = ("concat('{\"stream_id\":\"webinar-', toString(intDiv(number, 500000) % 40), "
                     "'\",\"view_id\":\"v-', toString(intDiv(number, 360)), '\",\"mode\":\"live\",\"watched_ms\":', "
                     "toString(number % 360 * 10000), '}')")
        columns = {
            "site_id": "multiIf(number % 10 < 6, 'site_a', number % 10 < 9, 'site_b', 'site_c')",
            "event_id": "lower(hex(MD5(toString(number))))",
            "event": f"[{', '.join(map(repr, SEED_EVENTS))}][intDiv(number, 10) % {len(SEED_EVENTS)} + 1]",
            "ts": f"fromUnixTimestamp64Milli({ts}, 'UTC')",
            "received_at": f"fromUnixTimestamp64Milli({ts} + 180, 'UTC')",
            "anonymous_id": "concat('a-', lower(hex(cityHash64(intDiv(number, 40)))))",
            "session_id": "concat('s-', lower(hex(cityHash64(intDiv(number, 20), 1))))",
            "channel": "['wechat_group_7', 'poster_qr_3', 'wecom_sales_12', '', ''][number % 5 + 1]",
            "url": "concat('https://www.example.cn/live?ch=wechat_group_7&sharer=emp_', toString(number % 97))",
            "url_host": "'www.example.cn'",
            "url_path": "'/live'",
            "url_query": "concat('ch=wechat_group_7&sharer=emp_', toString(number % 97))",
            "title": "'2026 数据安全直播'",
            "props": f"if(intDiv(number, 10) % 10 < 4, {heartbeat}, '{{}}')",
            "browser": "'WeChat'", "browser_version": "'8.0.47'", "os": "'iOS'", "os_version": "'17.4'",
            "device_type": "'mobile'",
            "ip": "concat('10.0.', toString(number % 250), '.0')",
            "user_agent": f"'{USER_AGENT}'",
            "dedup_ts": f"fromUnixTimestamp64Milli({ts} - (number * 7919 % 2001 - 1000), 'UTC')",
        }
        return {name: sql for name, sql in columns.items() if name in table}


def seed(store: Store, s: Seed) -> None:
    """Insert the seed with the materialized views detached, then attach them again."""
    table = {name for name, _ in store.columns("events")}
    columns = s.columns(table)
    views = store.query(f"SELECT name FROM system.tables WHERE database = '{DATABASE}' AND engine = 'MaterializedView'",
                        readonly=False).decode().split()
    for view in views:
        store.query(f"DETACH TABLE {DATABASE}.{view}", readonly=False)
    try:
        for start in range(0, s.n, SEED_CHUNK):
            count = min(SEED_CHUNK, s.n - start)
            store.query(f"INSERT INTO {DATABASE}.events ({', '.join(columns)})"
                        f" SELECT {', '.join(columns.values())} FROM numbers({start}, {count})"
                        f" SETTINGS min_insert_block_size_rows = {SEED_CHUNK}, max_insert_block_size = {SEED_CHUNK}",
                        readonly=False)
            print(f"seeded {start + count:,} of {s.n:,}", file=sys.stderr, flush=True)
    finally:
        for view in views:
            store.query(f"ATTACH TABLE {DATABASE}.{view}", readonly=False)


# --- the rows to load -------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """The load: its segments, and how many of its rows are re-sends of an earlier row of the load or of the seed."""

    segments: list[Path]
    rows: int
    resent_loaded: int
    resent_seeded: list[str]


def _event(rng: random.Random, i: int, event_id: str, site: str, ts: int) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": event_id, "anonymous_id": f"a-{i // 40:x}", "session_id": f"s-{i // 20:x}",
                             "ts": ts, "url": f"https://www.example.cn/live?ch=wechat_group_7&sharer=emp_{i % 97}"}
    if i % 10 < 7:
        event.update(event="live_heartbeat", props={"stream_id": f"webinar-{site}", "view_id": f"v-{i // 360}",
                                                    "mode": "live", "watched_ms": i % 360 * 10_000})
    else:
        event.update(event="page_view", title=SITES[site])
    return event


def _age(rng: random.Random, longest_ms: int) -> int:
    """How late an event comes: log-uniform from a minute to ``longest_ms``, as retry delays spread over scales."""
    return round(math.exp(rng.uniform(math.log(MINUTE_MS), math.log(longest_ms))))


def build(directory: Path, rows: int, segment_rows: int, s: Seed, now_ms: int, late: float, seed: int = 11) -> Batch:
    """``rows`` rows as the gateway would spool them, in arrival order, cut into segments of ``segment_rows``;
    ``late`` percent of them sent late."""
    rng = random.Random(seed)
    agent = parse_user_agent(USER_AGENT)
    sent: list[tuple[dict[str, Any], str]] = []  # each row's event and site, for re-sends of it
    resent_seeded: list[str] = []
    resent_loaded = 0
    out: list[Row] = []
    segments: list[Path] = []
    for i in range(rows):
        received = now_ms - 5 * MINUTE_MS + i * 5 * MINUTE_MS // rows
        clock = rng.randint(-MINUTE_MS, MINUTE_MS)  # how far this client's clock is off
        kind = rng.random() * 100
        if i % RESEND_EVERY == 0 and i >= RESEND_DISTANCE:
            event, site = sent[i - RESEND_DISTANCE]
            resent_loaded += 1
        elif kind < late / 2:
            n = s.at(received - _age(rng, SEED_DAYS * DAY_MS))
            site = s.site(n)
            event = _event(rng, i, s.event_id(n), site, s.ts_ms(n) - s.skew_ms(n))
            resent_seeded.append(event["event_id"])
        else:
            site = rng.choice(("site_a",) * 6 + ("site_b",) * 3 + ("site_c",))
            age = _age(rng, 7 * DAY_MS) if kind < late else rng.randint(100, 3 * SECOND_MS)
            event = _event(rng, i, uuid.UUID(int=rng.getrandbits(128)).hex, site, received - age + clock)
        sent.append((event, site))
        ctx = Context(site_id=site, received_ms=received, skew_ms=-clock, window=WINDOW, ip="10.0.0.0",
                      agent=agent, user_agent=USER_AGENT)
        out.append(build_row(decode_event(orjson.dumps(event)), ctx))
        if len(out) == segment_rows or i == rows - 1:
            segments.append(directory / f"{len(segments):012d}{SEALED}")
            segments[-1].write_bytes(encode(out))
            out = []
    return Batch(segments, rows, resent_loaded, resent_seeded)


# --- the runs ---------------------------------------------------------------------------------------------------


def run(root: Path, name: str, batch: Batch, s: Seed | None) -> tuple[Load, float, float]:
    """One fresh store, seeded with ``s`` if given, then the load; (load, seeding seconds, GiB on disk)."""
    store = Store(root / f"store-{name}", query_timeout_s=3600)
    store.open()
    try:
        seeded_s = 0.0
        if s is not None:
            started = time.perf_counter()
            seed(store, s)
            settle(store)
            seeded_s = time.perf_counter() - started
        # A re-sent seeded event is new to the empty store, a duplicate in the seeded one.
        seeded_dups = len(set(batch.resent_seeded)) if s is not None else 0
        new_seeded = 0 if s is not None else len(set(batch.resent_seeded))
        fresh = batch.rows - batch.resent_loaded - len(batch.resent_seeded)
        result = load(store, batch.segments, root / f"spool-{name}", fresh + new_seeded,
                      duplicates=batch.rows - fresh - new_seeded)
        if s is not None:
            ids = root / "resent-seeded.txt"
            ids.write_text("".join(f"{i}\n" for i in batch.resent_seeded))
            once = int(store.query(f"SELECT count() FROM {DATABASE}.events WHERE event_id IN"
                                   f" (SELECT line FROM file('{ids}', LineAsString, 'line String'))", readonly=False))
            if once != seeded_dups:
                raise SystemExit(f"{seeded_dups} seeded events re-sent, events holds {once} rows of them")
        disk = int(store.query(f"SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '{DATABASE}' "
                               "AND table = 'events' AND active", readonly=False))
        return result, seeded_s, disk / 2**30
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=DEFAULT_STORED, help="events seeded before the second load")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows each load inserts")
    parser.add_argument("--segment-rows", type=int, default=SEGMENT_ROWS, help="rows per spool segment")
    parser.add_argument("--late", type=float, default=LATE_PERCENT, help="percent of the rows sent late")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STORED:,} stored, {QUICK_ROWS:,} rows")
    args = parser.parse_args()
    stored, rows = (QUICK_STORED, QUICK_ROWS) if args.quick else (args.stored, args.rows)
    print("command: python -m loadtests.bench_loader " + " ".join(sys.argv[1:]))

    now_ms = int(time.time() * 1000)
    s = Seed(stored, now_ms - MINUTE_MS)
    root = Path(tempfile.mkdtemp(prefix="bench-loader-", dir="/tmp"))
    try:
        source = root / "segments"
        source.mkdir()
        batch = build(source, rows, args.segment_rows, s, now_ms, args.late)
        full, seeded_s, disk_gib = run(root, "stored", batch, s)
        print(f"loaded (stored): {full.rows_per_s:,.0f} rows/s", file=sys.stderr, flush=True)
        empty, _, _ = run(root, "empty", batch, None)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ratio = full.rows_per_s / empty.rows_per_s
    print(f"\n{rows:,} rows in segments of {args.segment_rows:,}, {args.late:g} % late; {stored:,} events seeded "
          f"in {seeded_s:.0f} s ({disk_gib:.1f} GiB for events)")
    print_loads([("empty table", empty), (f"{stored:,} events stored", full)])
    flag = "" if ratio >= RATIO_TARGET else "  BELOW TARGET"
    print(f"{'ratio stored/empty':<44}{ratio:>12.2f}   target >= {RATIO_TARGET}{flag}")
    flag = "" if full.rows_per_s >= RATE_TARGET else "  BELOW TARGET"
    print(f"{'rate with the table stored':<44}{full.rows_per_s:>12,.0f}   target >= {RATE_TARGET:,}{flag}")
    print(json.dumps({
        "stored": stored, "rows": rows, "segment_rows": args.segment_rows, "late": args.late,
        "seed_s": round(seeded_s, 1),
        "events_gib": round(disk_gib, 2), "empty_rows_per_s": round(empty.rows_per_s),
        "stored_rows_per_s": round(full.rows_per_s), "ratio": round(ratio, 3),
        "empty_inserts": empty.inserts, "stored_inserts": full.inserts,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
