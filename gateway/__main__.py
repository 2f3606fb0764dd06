"""``python -m gateway serve [--config FILE]``: run the gateway with embedded ClickHouse.
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
from pathlib import Path

import uvicorn

from gateway import app, config, connections
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


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config_path: Path | None) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
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
    print(
        f"Clicktrail gateway: http://{server.host}:{server.port}/ (demo page)\n"
        f"  send events: curl -X POST http://{server.host}:{server.port}/v1/batch "
        f"-H 'X-Write-Key: {site.write_key}' -d '{{\"batch\":[...]}}'\n"
        + (f"  query:       curl 'http://{server.host}:{server.clickhouse_port}/?query=SELECT+1' "
           f"(users in {config_path})\n" if server.clickhouse_port else "")
        + (f"  operations:  http://{server.ops_host}:{server.ops_port}/metrics, /readyz, /healthz\n"
           if server.ops_port else "")
        + f"  data:        {data_dir}",
        file=sys.stderr,
    )
    sockets = [_listen(server.host, server.port)]
    if server.clickhouse_port:
        sockets.append(_listen(server.host, server.clickhouse_port))
    if server.ops_port:
        sockets.append(_listen(server.ops_host, server.ops_port))
    uv = uvicorn.Config(
        app.build(cfg, data_dir),
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
    uvicorn.Server(uv).run(sockets=sockets)
    return 0


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
    args = parser.parse_args(argv)
    if args.command == "costs":
        return import_costs(args.config, args.file, args.user)
    return serve(args.config)


if __name__ == "__main__":
    sys.exit(main())
