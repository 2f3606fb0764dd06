"""The locust scenarios (loadtests/scenarios/), each run tiny against one gateway so they cannot rot: the webinar's
viewers register, join, heartbeat and leave, the content site's readers browse, the backend sends gzipped batches,
and every event the gateway acknowledged is in ClickHouse exactly once. Their check must also be able to fail: an
acknowledged event gone, or stored twice, is reported.

locust is in the test extra; without it these tests fail (locust's processes exit), they are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from loadtests.scenarios.harness import Report, Run, gateway_settings
from loadtests.scenarios.ledger import event_id
from tests.conftest import GatewayProcess

#: scenario -> users, locust worker processes, extra options. The three ways locust runs are each used once: the
#: master with two workers (one ledger per worker), with one, and alone. Heartbeats every second, not ten, so that
#: viewers heartbeat within the run.
TINY = {
    "webinar": (20, 2, ("--heartbeat-s", "1")),
    "content": (20, 1, ()),
    "backend": (2, 0, ()),
}
SECONDS = 4.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Run, Report]]]:
    """The three scenarios at once (they keep apart by site and event-id prefix), on a gateway that seals every
    200 ms so the loader catches up within the test's time."""
    directory = tmp_path_factory.mktemp("scenarios")
    gw = GatewayProcess(directory / "gateway", **{**gateway_settings(20), "segment_max_age_ms": 200}).start()
    try:
        made = {name: Run(gw, name, users, SECONDS, processes, directory, options)
                for name, (users, processes, options) in TINY.items()}
        with ThreadPoolExecutor(len(made)) as pool:
            reports = dict(zip(made, pool.map(Run.execute, made.values()), strict=True))
        yield {name: (made[name], reports[name]) for name in made}
    finally:
        gw.stop()


def _kinds(run: Run) -> set[str]:
    return set(run.sql(f"SELECT DISTINCT event FROM clicktrail.events WHERE startsWith(event_id, '{run.prefix}-')")
               .split())


@pytest.mark.parametrize("name", TINY)
def test_every_acknowledged_event_is_stored_once(runs: dict[str, tuple[Run, Report]], name: str) -> None:
    run, report = runs[name]
    assert report.check.ok, report.row()
    assert report.events == report.check.acked > 0
    assert report.requests > 0 and not report.errors and report.rejected == 0, (report.errors, report.rejected)
    assert report.freshness_samples > 0 and report.freshness_unseen == 0
    assert report.rss_peak_mb > 0 and report.latency_ms["p50"] > 0
    expected = {"webinar": {"page_view", "identify", "registration", "live_join", "live_heartbeat", "live_leave"},
                "content": {"page_view", "page_leave"}, "backend": {"lead_stage", "identify", "form_submit"}}
    assert expected[name] <= _kinds(run)


def test_the_check_fails_when_an_acknowledged_event_is_missing_or_stored_twice(
        runs: dict[str, tuple[Run, Report]]) -> None:
    run, _ = runs["backend"]
    pid, spans = next(iter(run.tally.acked.items()))
    first = spans[0][0]
    # A copy of one stored event, as a loader that forgot to deduplicate would write it.
    run.sql(f"INSERT INTO clicktrail.events SELECT * FROM clicktrail.events WHERE site_id = 'site_c' "
            f"AND event_id = '{event_id(run.prefix, pid, first)}'")
    # Three events acknowledged that were never sent: sequence numbers past every one the worker handed out.
    unsent = max(end for _, end in spans) + 10
    spans.append((unsent, unsent + 3))
    check = run.check()
    assert (check.missing, check.duplicated, check.stored - check.stored_distinct) == (3, 1, 1)
    assert not check.ok


def test_webinar_heartbeats_carry_the_cumulative_watch_time_of_their_view(runs: dict[str, tuple[Run, Report]]) -> None:
    run, _ = runs["webinar"]
    views = run.gw.rows(
        "SELECT arrayMap(beat -> beat.2, arraySort(groupArray((ts, JSONExtractUInt(props, 'watched_ms'))))) AS watched"
        f" FROM clicktrail.events WHERE site_id = 'site_b' AND startsWith(event_id, '{run.prefix}-')"
        " AND event = 'live_heartbeat' GROUP BY JSONExtractString(props, 'view_id')")
    assert any(len(view["watched"]) > 1 for view in views)
    assert all(view["watched"] == sorted(view["watched"]) for view in views)
