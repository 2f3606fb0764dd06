"""Assembly: the ingest app, its lifecycle (spool, loader, store), and the ports of one process.

One uvicorn server listens on all ports; ``Ports`` routes each connection by the port it came in
on, so the ingest API, the ClickHouse HTTP interface and the operations endpoints share one event
loop and one engine.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import Config
from gateway.ingest import openapi
from gateway.ingest.receive import Receiver
from gateway.ingest.sites import Sites
from gateway.ingest.spool import Spool
from gateway.metrics import Metrics
from gateway.serve import clickhouse as clickhouse_http
from gateway.warehouse.loader import Loader
from gateway.warehouse.server import Server
from gateway.warehouse.store import Store, StoreUnavailable

log = logging.getLogger("clicktrail.gateway")

DEMO_PAGE = Path(__file__).resolve().parent / "demo.html"
#: The browser SDK's built files, served at /sdk/<name> for sites that load the script from their gateway.
SDK_DIST = Path(__file__).resolve().parent / "_data" / "sdk"  # see pyproject.toml: package-data
#: How long shutdown waits for the loader to move the spool into ClickHouse.
DRAIN_TIMEOUT_S = 30.0


class Gateway:
    """The parts of a running gateway, started and stopped together."""

    def __init__(self, config: Config, data_dir: Path, spool_dir: Path | None = None) -> None:
        """``spool_dir``: one process's of several (gateway/processes.py); default: ``data_dir/spool``."""
        self.config = config
        server = config.server
        self.metrics = Metrics()
        self.store = _warehouse(config, data_dir)
        self.spool = Spool(
            spool_dir or data_dir / "spool",
            fsync=server.fsync,
            fsync_interval_ms=server.fsync_interval_ms,
            segment_max_bytes=server.segment_max_bytes,
            segment_max_age_ms=server.segment_max_age_ms,
            max_bytes=server.spool_max_bytes,
            min_free_bytes=server.min_free_disk_bytes,
            watch=[self.store.disk] if self.store.disk else [],
            commit_timeout_s=server.commit_timeout_s,
            errors=self.metrics.internal_errors,
        )
        self.loader = Loader(self.spool, self.store, self.metrics, max_bytes=server.load_max_bytes)
        self.spool.on_seal = self.loader.wake
        self.receiver = Receiver(config, Sites(config.sites), self.spool, self.metrics)
        self.openapi = orjson.dumps(openapi.bundle())

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.spool.recover()
        if self.spool.depth_bytes:
            log.info("spool holds %d bytes from before this start; loading them", self.spool.depth_bytes)
        try:
            self.store.open()
        except StoreUnavailable as exc:
            # Keep accepting: the spool holds events and the loader opens ClickHouse when it can.
            log.warning("clickhouse unavailable at start, will retry: %s", exc)
        await self.spool.start()
        self.loader.start()
        log.info("gateway ready on %s:%d", self.config.server.host, self.config.server.port)
        yield
        log.info("shutting down: sealing the spool and loading it")
        await self.spool.close()
        self.loader.stop(DRAIN_TIMEOUT_S)
        self.store.close()
        log.info("stopped; %d bytes left in the spool for the next start", self.spool.depth_bytes)

    # -- operational endpoints --------------------------------------------------------------------

    async def healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, _request: Request) -> Response:
        """200 when events are accepted and reach ClickHouse; 503 with the failing checks and why."""
        return readiness({**self.spool_problems(), **self.warehouse_problems()})

    def spool_problems(self) -> dict[str, str | None]:
        """/readyz's checks of taking events: each one's problem now, None where it is fine."""
        spool = self.spool
        return {
            "spool": spool.refusing
            or (None if os.access(spool.directory, os.W_OK) else "the spool directory is not writable"),
            "committer": spool.committer.error
            or (f"a disk operation has run more than {spool.commit_timeout:g}s" if spool.stuck else None),
            "sealer": spool.sealer.error,
        }

    def warehouse_problems(self) -> dict[str, str | None]:
        """/readyz's checks of loading events into ClickHouse."""
        loader, lag = self.loader, self.loader_lag()
        return {
            "storage": None if self.store.is_open else "ClickHouse is not open",
            "loader": loader.part.error or (None if loader.alive else "the loader thread is not running")
            or (f"the oldest unloaded event waits {lag:.0f}s, more than {self.config.server.max_loader_lag_s:g}s"
                if lag is not None and lag > self.config.server.max_loader_lag_s else None),
        }

    def loader_lag(self) -> float | None:
        return _lag(self._sealed())

    def _sealed(self) -> list[Path]:
        """The sealed segments waiting for the loader; none if the spool cannot be listed now (the
        loader's own health reports that)."""
        try:
            return self.spool.sealed()
        except OSError:
            return []

    async def metrics_text(self, _request: Request) -> Response:
        segments = self._sealed()
        gauges = {
            "spool_bytes": ("Bytes in the spool not yet in ClickHouse.", float(self.spool.depth_bytes)),
            "spool_segments": ("Sealed spool segments waiting for the loader.", float(len(segments))),
            "clickhouse_up": ("1 if ClickHouse is open (embedded) or connected (server).", float(self.store.is_open)),
            "spool_refusing": ("1 while the spool refuses new events (503): full, short of disk space, or the disk "
                               "refused a write; /readyz says why.", float(self.spool.refusing is not None)),
            "disk_free_bytes": ("Free bytes on the fuller of the spool's and ClickHouse's filesystems; new events get "
                                "503 below min_free_disk_bytes.", float(self.spool.free_bytes)),
        }
        return PlainTextResponse(self.metrics.render(gauges, _lag(segments)), media_type="text/plain; version=0.0.4")

    async def openapi_document(self, _request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    async def demo(self, request: Request) -> Response:
        site = self.config.sites[0]
        page = DEMO_PAGE.read_text().replace("{{write_key}}", html.escape(site.write_key))
        # The page links to the dashboard on the ClickHouse port (0: not served here, no link).
        page = page.replace("{{clickhouse_port}}", str(self.config.analysts_port))
        return HTMLResponse(page.replace("{{site_id}}", html.escape(site.id)))

    def ops_routes(self) -> list[Route]:
        return [Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/metrics", self.metrics_text)]

    def ingest_app(self) -> Starlette:
        r = self.receiver
        return Starlette(
            routes=[
                Route("/v1/batch", r.batch, methods=["POST"]),
                Route("/v1/event", r.single, methods=["POST"]),
                Route("/v1/pixel.gif", r.pixel, methods=["GET"]),
                Route("/v1/batch", r.preflight, methods=["OPTIONS"]),
                Route("/v1/event", r.preflight, methods=["OPTIONS"]),
                Route("/openapi.json", self.openapi_document, methods=["GET"]),
                # With an ops port, the public port keeps only /healthz (see ServerConfig.ops_port).
                *(self.ops_routes() if not self.config.server.ops_port else [Route("/healthz", self.healthz)]),
                Route("/", self.demo),
                Mount("/sdk", SdkFiles(directory=SDK_DIST, check_dir=False), name="sdk"),
            ],
            lifespan=self.lifespan,
        )


def _warehouse(config: Config, data_dir: Path) -> Store | Server:
    """The ClickHouse of ``[clickhouse] mode``: embedded in this process, or a server the loader writes to."""
    rules = {site.id: site.referrer_channels for site in config.sites}
    if not config.clickhouse.embedded:
        return Server(config.clickhouse, rules)
    return Store(data_dir / "clickhouse", query_timeout_s=config.server.query_timeout_s, referrer_channels=rules,
                 users=config.users)


def readiness(problems: dict[str, str | None]) -> Response:
    """/readyz's answer: each check's name with whether it passes, and the failing ones' problems (then 503)."""
    body: dict[str, object] = {name: problem is None for name, problem in problems.items()}
    failing = {name: problem for name, problem in problems.items() if problem is not None}
    if failing:
        body["problems"] = failing
    return Response(orjson.dumps(body), status_code=503 if failing else 200, media_type="application/json")


def _lag(segments: list[Path]) -> float | None:
    """Seconds the oldest of ``segments`` has waited (from its last write), None if none waits."""
    for segment in segments:
        with contextlib.suppress(FileNotFoundError):
            return max(0.0, time.time() - segment.stat().st_mtime)
    return None


class SdkFiles(StaticFiles):
    """The SDK's files, cacheable for an hour (revalidated by ETag) and loadable as cross-origin modules."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response


class Ports:
    """Route each connection by its local port (ClickHouse interface, operations); the ingest app takes the rest."""

    def __init__(self, ingest: ASGIApp, by_port: dict[int, ASGIApp]) -> None:
        self.ingest = ingest
        self.by_port = by_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        app = self.by_port.get(server[1], self.ingest) if scope["type"] != "lifespan" and server else self.ingest
        await app(scope, receive, send)


def build(config: Config, data_dir: Path) -> ASGIApp:
    gateway = Gateway(config, data_dir)
    by_port = side_ports(config, gateway)
    return Ports(gateway.ingest_app(), by_port) if by_port else gateway.ingest_app()


def side_ports(config: Config, gateway: Gateway) -> dict[int, ASGIApp]:
    """The apps of the ClickHouse port and the ops port, by port number (one process's, or the owner's of several:
    gateway/processes.py)."""
    server = config.server
    by_port: dict[int, ASGIApp] = {}
    if config.analysts_port and isinstance(gateway.store, Store):
        # The marketers' dashboard comes with it, at /dashboard/ (gateway/serve/dashboard.py).
        by_port[config.analysts_port] = clickhouse_http.create_app(gateway.store, config.users, server,
                                                                   dashboard_sites=[s.id for s in config.sites])
    elif server.clickhouse_port:
        # In server mode analysts use ClickHouse's own ports, its users and row policies (README: Configuration).
        log.info("clickhouse mode = server: the analysts' port %d stays closed, and [[users]] are not used",
                 server.clickhouse_port)
    if server.ops_port:
        by_port[server.ops_port] = Starlette(routes=gateway.ops_routes())
    return by_port
