"""Assembly: the ingest app, its lifecycle (spool, loader, store), and the two ports of one process.

One uvicorn server listens on both ports; ``Ports`` routes each connection by the port it came in
on, so the ingest API and the ClickHouse HTTP interface share one event loop and one engine.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
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

from gateway import clickhouse_http
from gateway.config import Config
from gateway.loader import Loader
from gateway.metrics import Metrics
from gateway.receive import Receiver
from gateway.sites import Sites
from gateway.spool import Spool
from gateway.store import Store, StoreUnavailable

log = logging.getLogger("clicktrail.gateway")

DEMO_PAGE = Path(__file__).resolve().parent / "demo.html"
#: The browser SDK's built files, served at /sdk/<name> for sites that load the script from their gateway.
SDK_DIST = Path(__file__).resolve().parent.parent / "sdk_js" / "dist"
#: How long shutdown waits for the loader to move the spool into ClickHouse.
DRAIN_TIMEOUT_S = 30.0


class Gateway:
    """The parts of a running gateway, started and stopped together."""

    def __init__(self, config: Config, data_dir: Path) -> None:
        self.config = config
        server = config.server
        self.metrics = Metrics()
        self.store = Store(data_dir / "clickhouse", query_timeout_s=server.query_timeout_s)
        self.spool = Spool(
            data_dir / "spool",
            fsync=server.fsync,
            fsync_interval_ms=server.fsync_interval_ms,
            segment_max_bytes=server.segment_max_bytes,
            segment_max_age_ms=server.segment_max_age_ms,
            max_bytes=server.spool_max_bytes,
        )
        self.loader = Loader(self.spool, self.store, self.metrics, max_bytes=server.load_max_bytes)
        self.spool.on_seal = self.loader.wake
        self.receiver = Receiver(config, Sites(config.sites), self.spool, self.metrics)

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
        spool_ok = os.access(self.spool.directory, os.W_OK) and not self.spool.refusing
        checks = {"storage": self.store.is_open, "spool": spool_ok}
        return Response(orjson.dumps(checks), status_code=200 if all(checks.values()) else 503,
                        media_type="application/json")

    async def metrics_text(self, _request: Request) -> Response:
        segments = self.spool.sealed()
        gauges = {
            "spool_bytes": ("Bytes in the spool not yet in ClickHouse.", float(self.spool.depth_bytes)),
            "spool_segments": ("Sealed spool segments waiting for the loader.", float(len(segments))),
            "clickhouse_up": ("1 if embedded ClickHouse is open.", float(self.store.is_open)),
        }

        def oldest() -> float | None:
            # The last write into the oldest sealed segment: a lower bound of the oldest event's wait.
            for segment in segments:
                with contextlib.suppress(FileNotFoundError):
                    return segment.stat().st_mtime
            return None

        return PlainTextResponse(self.metrics.render(gauges, oldest),
                                 media_type="text/plain; version=0.0.4")

    async def demo(self, request: Request) -> Response:
        site = self.config.sites[0]
        page = DEMO_PAGE.read_text().replace("{{write_key}}", html.escape(site.write_key))
        return HTMLResponse(page.replace("{{site_id}}", html.escape(site.id)))

    def ingest_app(self) -> Starlette:
        r = self.receiver
        return Starlette(
            routes=[
                Route("/v1/batch", r.batch, methods=["POST"]),
                Route("/v1/event", r.single, methods=["POST"]),
                Route("/v1/pixel.gif", r.pixel, methods=["GET"]),
                Route("/v1/batch", r.preflight, methods=["OPTIONS"]),
                Route("/v1/event", r.preflight, methods=["OPTIONS"]),
                Route("/healthz", self.healthz),
                Route("/readyz", self.readyz),
                Route("/metrics", self.metrics_text),
                Route("/", self.demo),
                Mount("/sdk", SdkFiles(directory=SDK_DIST, check_dir=False), name="sdk"),
            ],
            lifespan=self.lifespan,
        )


class SdkFiles(StaticFiles):
    """The SDK's files, cacheable for an hour (revalidated by ETag) and loadable as cross-origin modules."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response


class Ports:
    """Route each connection to the ingest app or the ClickHouse interface by its local port."""

    def __init__(self, ingest: ASGIApp, clickhouse: ASGIApp, clickhouse_port: int) -> None:
        self.ingest = ingest
        self.clickhouse = clickhouse
        self.clickhouse_port = clickhouse_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "lifespan" and server and server[1] == self.clickhouse_port:
            await self.clickhouse(scope, receive, send)
        else:
            await self.ingest(scope, receive, send)


def build(config: Config, data_dir: Path) -> ASGIApp:
    gateway = Gateway(config, data_dir)
    ingest = gateway.ingest_app()
    if not config.server.clickhouse_port:
        return ingest
    return Ports(ingest, clickhouse_http.create_app(gateway.store, config.users), config.server.clickhouse_port)
