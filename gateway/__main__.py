"""``python -m gateway serve [--config FILE]``: run the gateway with embedded ClickHouse (with
``server.processes`` above 1, as an owner process that starts that many acceptors: gateway/processes.py).
``python -m gateway costs import FILE.csv [--config FILE] [--user NAME]``: channel costs into it
(gateway/warehouse/costs.py)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from gateway import app, config, connections, processes
from gateway.warehouse import costs

DEFAULT_CONFIG = Path("clicktrail.toml")


class JsonLogs(logging.Formatter):
    """One JSON object a line, for log shippers; messages carry no keys, IPs or ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request: the owner asks its acceptors often


def serve(config_path: Path | None) -> int:
    _logging()
    if config_path is None:
        config_path = DEFAULT_CONFIG
        if not config_path.exists():
            config.write_starter(config_path)
            print(f"Wrote {config_path} with a demo site and fresh keys; edit it to add your sites.",
                  file=sys.stderr)
    try:
        cfg = config.load(config_path)
    except (config.ConfigError, OSError) as exc:
        print(f"clicktrail: {exc}", file=sys.stderr)
        return 2
    data_dir = cfg.data_path(config_path.resolve().parent)
    server = cfg.server
    site = cfg.sites[0]
    clickhouse_port = cfg.analysts_port
    print(
        f"Clicktrail gateway: http://{server.host}:{server.port}/ (demo page)\n"
        f"  send events: curl -X POST http://{server.host}:{server.port}/v1/batch "
        f"-H 'X-Write-Key: {site.write_key}' -d '{{\"batch\":[...]}}'\n"
        + (f"  query:       curl 'http://{server.host}:{clickhouse_port}/?query=SELECT+1' "
           f"(users in {config_path})\n" if clickhouse_port else f"  clickhouse:  {', '.join(cfg.clickhouse.urls)}\n"
           if not cfg.clickhouse.embedded else "")
        + (f"  operations:  http://{server.ops_host}:{server.ops_port}/metrics, /readyz, /healthz\n"
           if server.ops_port else "")
        + (f"  processes:   {server.processes} on port {server.port}, started by this one\n"
           if server.processes > 1 else "")
        + f"  data:        {data_dir}",
        file=sys.stderr,
    )
    sockets = [processes.listen(server.host, clickhouse_port)] if clickhouse_port else []
    if server.ops_port:
        sockets.append(processes.listen(server.ops_host, server.ops_port))
    if server.processes > 1:
        asgi, owner = processes.owner_app(cfg, data_dir, config_path.resolve())
        _run(lambda uv: processes.OwnerServer(uv, owner), asgi, server, sockets)
    else:
        _run(uvicorn.Server, app.build(cfg, data_dir), server, [processes.listen(server.host, server.port), *sockets])
    return 0


def accept(config_path: Path, index: int, fds: list[int]) -> int:
    """An acceptor, started by its owner with the sockets it made: the ingest port's, its private state port's,
    and the pipe it tells of sealed segments through (gateway/processes.py)."""
    _logging()
    cfg = config.load(config_path)
    ingest, state = (socket.socket(fileno=fd) for fd in fds[:2])
    asgi = processes.acceptor_app(cfg, cfg.data_path(config_path.parent), index, fds[2], state.getsockname()[1])
    _run(uvicorn.Server, asgi, cfg.server, [ingest, state])
    return 0


def _run(server_class: Callable[[uvicorn.Config], uvicorn.Server], asgi: ASGIApp, server: config.ServerConfig,
         sockets: list[socket.socket]) -> None:
    uv = uvicorn.Config(
        asgi,
        loop="uvloop",
        http=connections.protocol(server),
        timeout_keep_alive=server.keep_alive_timeout_s,
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    # uvicorn re-raises the signal it stopped on once shut down; with this handler in place that
    # re-raise is a no-op, so a SIGTERM that flushed everything exits 0, as supervisors expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server_class(uv).run(sockets=sockets)


def import_costs(config_path: Path, path: Path, user: str | None) -> int:
    try:
        imported = costs.import_costs(config.load(config_path), path, user)
    except (config.ConfigError, OSError, costs.CostsError) as exc:
        print(f"clicktrail: {exc}", file=sys.stderr)
        return 1
    print(f"imported {imported} cost rows into clicktrail.channel_costs", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the gateway")
    run.add_argument("--config", type=Path, help=f"TOML config (default: {DEFAULT_CONFIG}, written on first run)")
    cost = commands.add_parser("costs", help="channel costs, for channel_roi")
    cost.add_argument("action", choices=["import"], help="import FILE.csv (site_id, channel, day, cost) into the "
                                                         "running gateway's clicktrail.channel_costs")
    cost.add_argument("file", type=Path, help="CSV with the header site_id,channel,day,cost")
    cost.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"the gateway's config (default: "
                                                                          f"{DEFAULT_CONFIG})")
    cost.add_argument("--user", help="the admin user to write as (default: the config's first admin)")
    acceptor = commands.add_parser("accept", help="(started by serve with server.processes above 1) one process "
                                                  "on the ingest port")
    acceptor.add_argument("--config", type=Path, required=True)
    acceptor.add_argument("--index", type=int, required=True, help="its number, and its spool's: data/spool/<n>")
    acceptor.add_argument("--fds", required=True, help="the descriptors of its ingest socket, state socket and "
                                                       "the owner's pipe, comma-separated")
    args = parser.parse_args(argv)
    if args.command == "costs":
        return import_costs(args.config, args.file, args.user)
    if args.command == "accept":
        return accept(args.config, args.index, [int(fd) for fd in args.fds.split(",")])
    return serve(args.config)


if __name__ == "__main__":
    sys.exit(main())
