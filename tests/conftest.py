"""A real gateway process per test module (or per test, for the ones that kill it), spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The gateway process helper lives in loadtests/, where the benchmarks can use it too; the tests import it
# from here as they always did (the aliases mark the re-exports).
from gateway.warehouse.store import Store
from loadtests.gateway_process import ROOT as ROOT
from loadtests.gateway_process import GatewayProcess as GatewayProcess
from loadtests.gateway_process import free_port as free_port

COUNT_ALL = "SELECT count() FROM clicktrail.events"
DUPLICATES = ("SELECT count() FROM (SELECT site_id, event_id FROM clicktrail.events "
              "GROUP BY site_id, event_id HAVING count() > 1)")


def make_event(name: str = "page_view", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event": name, "event_id": uuid.uuid4().hex, "anonymous_id": "a-" + uuid.uuid4().hex[:12]}
    event.update(fields)
    return event


def assert_exactly_once(gw: GatewayProcess, acked: list[str]) -> None:
    """Every acknowledged event is in ClickHouse, and no event is there twice."""
    gw.wait_for(COUNT_ALL, len(acked), timeout=120)
    stored = {r["event_id"] for r in gw.rows("SELECT event_id FROM clicktrail.events")}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert gw.scalar(DUPLICATES) == 0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An embedded store of the test's own, opened as a gateway opens it (chDB opens a data directory in one
    process at a time, so each test gets its directory)."""
    s = Store(tmp_path / "store")
    s.open()
    yield s
    s.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway shared by a module's tests; tests keep apart by their own event ids."""
    gw = GatewayProcess(tmp_path_factory.mktemp("gw")).start()
    yield gw
    gw.stop()


@pytest.fixture
def new_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """A factory for gateways a test configures, kills and restarts itself."""
    made: list[GatewayProcess] = []

    def factory(**server: Any) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"gw{len(made)}", **server)
        made.append(gw)
        return gw

    yield factory
    for gw in made:
        if gw.proc is not None and gw.proc.poll() is None:
            os.kill(gw.proc.pid, signal.SIGKILL)
            gw.proc.wait()
