"""Every core of one machine: ``server.processes = N`` processes take events on the ingest port, and one owner.

Embedded ClickHouse (chDB) opens a data directory in one process at a time, and receiving, checking and
enriching events is most of the gateway's CPU. So N **acceptors** do that, each into a spool of its own
(``data_dir/spool/<n>``), and one **owner** process loads every spool into ClickHouse (``Spools``: one loader,
so the same exactly-once dedup as with one process), serves the analysts' port and the ops port, and supervises:
it starts the acceptors, restarts one that dies, and on SIGTERM stops them first (each seals its spool), then
drains every spool and exits. In server mode (``[clickhouse] mode = "server"``) each of the N is a full worker,
loading its own spool into the server; the owner only supervises and serves the ops port.

The port is shared with SO_REUSEPORT: the owner opens one listening socket per acceptor on the same address and
hands each its own, so the kernel spreads new connections evenly over them by a hash of the client's address
and port, whatever each process is busy with. One socket inherited by all would let the acceptors race for each
connection: epoll wakes the process that went back to waiting last (LIFO), so the few busiest take most
connections, and keep them while clients keep them alive (Cloudflare measured this for nginx). The hash does
not look at who is busy, so long-lived connections (SDKs, live viewers) spread evenly; its cost is that a
process stalled for long still gets its share. The owner keeps every socket open, so connections that reach a
dead acceptor's socket wait in its queue for the restarted one instead of being reset.

An acceptor tells the owner's loader of each sealed segment through a pipe (one byte; the loader also looks
each second), so events reach ClickHouse as soon as with one process. The owner gathers each process's counters
and checks for /metrics and /readyz from a private loopback port of the process (``/state``). Each process
has the connection and rate limits of ``[server]`` on its own (README.md, "Several processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.app import DRAIN_TIMEOUT_S, Gateway, Ports, _lag, readiness, side_ports
from gateway.config import Config, ServerConfig
from gateway.ingest.spool import Spools
from gateway.warehouse.backend import StoreUnavailable
from gateway.warehouse.loader import Loader

log = logging.getLogger("clicktrail.processes")

#: A process that died is started again after this, doubled while it keeps dying within RESTART_STABLE_S.
RESTART_DELAY_S = 0.25
RESTART_MAX_DELAY_S = 10.0
RESTART_STABLE_S = 30.0
#: How long the owner waits for the acceptors to seal their spools and exit (uvicorn's graceful shutdown
#: takes up to 10 s while clients hold requests open); then they are killed, and it seals what they left.
STOP_TIMEOUT_S = 30.0
#: How long /metrics and /readyz wait for a process's state.
STATE_TIMEOUT_S = 2.0
#: How often an acceptor checks that its owner still runs (it stops, sealing its spool, once it does not).
PARENT_CHECK_S = 0.5


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# -- the acceptors ----------------------------------------------------------------------------------


class Acceptor(Gateway):
    """One of the processes on the ingest port: the ingest app over a spool of its own (``data_dir/spool/<n>``),
    and its state for the owner on a private port. Embedded: the owner loads the spool; server mode: it loads it
    into the server itself, as a gateway of its own would."""

    def __init__(self, config: Config, data_dir: Path, index: int, notify_fd: int) -> None:
        super().__init__(config, data_dir, spool_dir=data_dir / "spool" / str(index))
        self.index = index
        self.loads = not config.clickhouse.embedded
        if not self.loads:
            self.spool.loaded_elsewhere = True
            self.spool.on_seal = lambda: _notify(notify_fd)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        watch = asyncio.create_task(_stop_when_orphaned(os.getppid()))
        try:
            if self.loads:
                async with super().lifespan(app):
                    yield
            else:
                self.spool.recover()
                await self.spool.start()
                log.info("acceptor %d ready on %s:%d", self.index, self.config.server.host, self.config.server.port)
                yield
                await self.spool.close()
                log.info("acceptor %d stopped; its spool is sealed", self.index)
        finally:
            watch.cancel()

    async def state(self, _request: Request) -> Response:
        """What the owner's /metrics and /readyz sum up: this process's counters and checks."""
        problems = self.spool_problems()
        if self.loads:
            problems.update(self.warehouse_problems())
        return Response(orjson.dumps({
            "index": self.index, **self.metrics.state(),
            "problems": problems, "refusing": self.spool.refusing is not None, "lag": self.loader_lag(),
        }), media_type="application/json")


def _notify(fd: int) -> None:
    """Tell the owner's loader that a segment is sealed; a full pipe means it is told already."""
    with contextlib.suppress(BlockingIOError, BrokenPipeError):
        os.write(fd, b"s")


async def _stop_when_orphaned(parent: int) -> None:
    """Stop (as on SIGTERM: sealing the spool) once the owner is gone, killed without stopping us: else we would
    hold the port and our spool, where nobody loads it, until a new owner's acceptor waits us out."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("the owner process is gone; stopping")
    os.kill(os.getpid(), signal.SIGTERM)


def acceptor_app(config: Config, data_dir: Path, index: int, notify_fd: int, state_port: int) -> ASGIApp:
    acceptor = Acceptor(config, data_dir, index, notify_fd)
    private = Starlette(routes=[Route("/state", acceptor.state), Route("/healthz", acceptor.healthz)])
    return Ports(acceptor.ingest_app(), {state_port: private})


# -- the owner --------------------------------------------------------------------------------------


@dataclass
class Child:
    """An acceptor as the owner runs it: its sockets outlive its process, so a restart takes them over."""

    index: int
    ingest: socket.socket
    state: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: After an exit: how long it waited before its restart, and when that is due (time.monotonic()).
    delay: float = RESTART_DELAY_S
    restart_at: float = 0.0

    @property
    def state_url(self) -> str:
        return f"http://127.0.0.1:{self.state.getsockname()[1]}/state"


class Supervisor:
    """Starts the acceptors, restarts one that exits (unless we are stopping), and stops them."""

    def __init__(self, config_path: Path, server: ServerConfig, on_seal: Callable[[], None]) -> None:
        self.config_path = config_path
        self.on_seal = on_seal
        # Bound here, before any acceptor runs: a port in use is an error of the owner's start, said once.
        self.children = [Child(n, listen(server.host, server.port, reuse_port=True), listen("127.0.0.1", 0))
                         for n in range(1, server.processes + 1)]
        self._notify_r, self._notify_w = os.pipe()
        os.set_blocking(self._notify_w, False)  # shared with the acceptors: a full pipe never blocks them
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        threading.Thread(target=self._watch, name="supervisor", daemon=True).start()
        threading.Thread(target=self._listen_for_seals, name="seals", daemon=True).start()

    def _spawn(self, child: Child) -> None:
        fds = (child.ingest.fileno(), child.state.fileno(), self._notify_w)
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "accept", "--config", str(self.config_path), "--index", str(child.index),
             "--fds", ",".join(map(str, fds))], pass_fds=fds)
        child.started_at = time.monotonic()

    def _watch(self) -> None:
        while not self.stopping.wait(0.1):
            with self._lock:  # stop() takes it too: no acceptor starts once stopping is set
                if self.stopping.is_set():
                    return
                now = time.monotonic()
                for child in self.children:
                    if child.proc is None:
                        if now >= child.restart_at:
                            self._spawn(child)
                    elif (code := child.proc.poll()) is not None:
                        stable = now - child.started_at > RESTART_STABLE_S
                        child.delay = RESTART_DELAY_S if stable else min(child.delay * 2, RESTART_MAX_DELAY_S)
                        child.restart_at = now + child.delay
                        child.proc = None
                        log.error("acceptor %d exited (%s); starting it again in %.2fs", child.index,
                                  f"signal {-code}" if code < 0 else f"code {code}", child.delay)

    def _listen_for_seals(self) -> None:
        while os.read(self._notify_r, 4096):
            self.on_seal()

    def stop(self) -> None:
        """SIGTERM every acceptor (each seals its spool and exits), wait, and kill those that do not."""
        with self._lock:
            self.stopping.set()
        running = [c.proc for c in self.children if c.proc is not None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("acceptor %d did not stop within %gs; killing it (what it acknowledged is on disk)",
                          proc.pid, STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()

    async def states(self) -> list[dict[str, Any] | str]:
        """Each acceptor's state, or why there is none."""
        async with httpx.AsyncClient(timeout=STATE_TIMEOUT_S) as client:
            return list(await asyncio.gather(*(self._state(client, child) for child in self.children)))

    async def _state(self, client: httpx.AsyncClient, child: Child) -> dict[str, Any] | str:
        if child.proc is None:
            return f"acceptor {child.index} is being restarted"
        try:
            response = await client.get(child.state_url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            return f"acceptor {child.index} does not answer ({type(exc).__name__})"
        state: dict[str, Any] = response.json()
        return state


class Owner(Gateway):
    """The process that starts the acceptors and serves the ClickHouse and ops ports. Embedded: it loads every
    acceptor's spool (and what a run with another number of processes left) with one loader."""

    def __init__(self, config: Config, data_dir: Path, config_path: Path) -> None:
        super().__init__(config, data_dir)
        self.loads = config.clickhouse.embedded
        self.spools = Spools(data_dir / "spool", watch=[self.store.disk] if self.store.disk else [])
        self.loader = Loader(self.spools, self.store, self.metrics, max_bytes=config.server.load_max_bytes)
        self.supervisor = Supervisor(config_path, config.server, self.loader.wake)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.loads:
            self.spools.recover()  # before the acceptors start: they take their directories
        self.supervisor.start()  # first: events are taken while ClickHouse opens
        if self.loads:
            try:
                self.store.open()
            except StoreUnavailable as exc:
                log.warning("clickhouse unavailable at start, will retry: %s", exc)
            self.loader.start()
        log.info("owner ready, %d processes on %s:%d", len(self.supervisor.children), self.config.server.host,
                 self.config.server.port)
        yield
        log.info("shutting down: stopping the acceptors, then loading their spools")
        self.supervisor.stop()
        if self.loads:
            self.spools.recover()  # what an acceptor killed at the deadline left open
            self.loader.stop(DRAIN_TIMEOUT_S)
            self.store.close()
            log.info("stopped; %d bytes left in the spools for the next start", self.spools.depth_bytes)

    def loader_lag(self) -> float | None:
        try:
            oldest = self.spools.oldest()
        except OSError:
            return None
        return max((lag for s in oldest if (lag := _lag([s])) is not None), default=None)

    async def readyz(self, _request: Request) -> Response:
        problems: dict[str, list[str]] = {}
        for state in await self.supervisor.states():
            if isinstance(state, str):
                problems.setdefault("acceptors", []).append(state)
                continue
            for name, problem in state["problems"].items():
                if problem is not None:
                    problems.setdefault(name, []).append(f"acceptor {state['index']}: {problem}")
        checks = {"acceptors": None, "spool": None, "committer": None, "sealer": None,
                  **(self.warehouse_problems() if self.loads else {"storage": None, "loader": None})}
        checks.update({name: "; ".join(found) for name, found in problems.items()})
        return readiness(checks)

    async def metrics_text(self, _request: Request) -> Response:
        states = await self.supervisor.states()
        answering = [state for state in states if not isinstance(state, str)]
        metrics = self.metrics.plus(answering)
        lags = [self.loader_lag()] if self.loads else []
        lags += [state["lag"] for state in answering]
        segments = self.spools.sealed()
        gauges = {
            "processes_up": ("Processes on the ingest port that answer the owner (of server.processes).",
                             float(len(answering))),
            "spool_bytes": ("Bytes in the spools not yet in ClickHouse.", float(self.spools.depth_bytes)),
            "spool_segments": ("Sealed spool segments waiting for a loader.", float(len(segments))),
            "clickhouse_up": ("1 if ClickHouse is open (embedded) or connected (server, by every process).",
                              float(self.store.is_open if self.loads else bool(answering) and all(
                                  state["problems"]["storage"] is None for state in answering))),
            "spool_refusing": ("Processes whose spool refuses new events (503): full, short of disk space, or the "
                               "disk refused a write; /readyz says why.",
                               float(sum(state["refusing"] for state in answering))),
            "disk_free_bytes": ("Free bytes on the fuller of the spools' and ClickHouse's filesystems; new events get"
                                " 503 below min_free_disk_bytes.", float(self.spools.free_bytes)),
        }
        lag = max((lag for lag in lags if lag is not None), default=None)
        return PlainTextResponse(metrics.render(gauges, lag), media_type="text/plain; version=0.0.4")


def owner_app(config: Config, data_dir: Path, config_path: Path) -> tuple[ASGIApp, Owner]:
    """The owner's app (the ClickHouse and ops ports; nothing of its own on the ingest port) and the owner."""
    owner = Owner(config, data_dir, config_path)
    return Ports(Starlette(lifespan=owner.lifespan), side_ports(config, owner)), owner


class OwnerServer(uvicorn.Server):
    """uvicorn's server, telling the supervisor as soon as a signal asks it to stop: acceptors that got the same
    signal (a service manager signals the whole group) must not be restarted meanwhile."""

    def __init__(self, config: uvicorn.Config, owner: Owner) -> None:
        super().__init__(config)
        self.owner = owner

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.owner.supervisor.stopping.set()
        super().handle_exit(sig, frame)
