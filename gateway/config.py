"""Gateway configuration: one TOML file, decoded and checked by msgspec.

A first run without ``--config`` writes a starter file with a demo site and fresh random keys,
so a new user never has to invent keys or read a manual before the first event arrives.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

import msgspec

KiB = 1024
MiB = 1024 * KiB


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    #: The ClickHouse HTTP interface for analysts (0 disables it).
    clickhouse_port: int = 8123
    data_dir: str = "data"
    #: ``always``: fsync each group commit before answering (survives power loss);
    #: ``interval``: write before answering, fsync every ``fsync_interval_ms`` (survives a crash of the process);
    #: ``off``: leave flushing to the OS.
    fsync: Literal["always", "interval", "off"] = "always"
    fsync_interval_ms: int = 200
    #: A spool segment is sealed for the loader once it is this old or this large.
    segment_max_age_ms: int = 1000
    segment_max_bytes: int = 32 * MiB
    #: Spool size beyond which new events get 503 (ClickHouse down too long, or the disk filling up).
    spool_max_bytes: int = 2048 * MiB
    #: At most this much spool goes into one INSERT.
    load_max_bytes: int = 128 * MiB
    #: Drop the last octet of IPv4 and the last 80 bits of IPv6 before storing (PIPL: collect the minimum).
    anonymize_ip: bool = True
    #: Take the client address from X-Forwarded-For (only behind a proxy you run).
    trust_forwarded_for: bool = False
    #: Requests per second one client IP may make (0: unlimited).
    ip_rate_limit: float = 0.0
    #: Longest time an analyst query may run, in seconds.
    query_timeout_s: float = 60.0


class SiteConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: str
    #: Public key for browsers and the pixel.
    write_key: str
    #: Private key for backend services.
    secret_key: str = ""
    #: Origins (``https://example.com``) whose pages may send events; ``*`` allows any.
    allowed_origins: list[str] = []
    #: Events per second this site may send (0: unlimited).
    rate_limit: float = 0.0


class UserConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    password: str
    readonly: bool = True


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    server: ServerConfig = ServerConfig()
    sites: list[SiteConfig] = []
    users: list[UserConfig] = []

    def data_path(self, base: Path) -> Path:
        """The data directory, relative paths taken from the config file's folder."""
        return (base / self.server.data_dir).resolve()


class ConfigError(Exception):
    pass


def load(path: Path) -> Config:
    try:
        config = msgspec.toml.decode(path.read_bytes(), type=Config)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    _check(config, path)
    return config


def _check(config: Config, path: Path) -> None:
    keys: set[str] = set()
    ids: set[str] = set()
    for site in config.sites:
        if site.id in ids:
            raise ConfigError(f"{path}: site id {site.id!r} appears twice")
        ids.add(site.id)
        for key in (site.write_key, site.secret_key):
            if key and key in keys:
                raise ConfigError(f"{path}: site {site.id!r} reuses a key of another site")
            keys.add(key)
    if not config.sites:
        raise ConfigError(f"{path}: no [[sites]]: events need a site to belong to")


STARTER = """\
# Clicktrail gateway configuration. Written on first run; edit freely.

[server]
host = "127.0.0.1"
port = {port}
clickhouse_port = {clickhouse_port}
data_dir = "data"
fsync = "always"

[[sites]]
id = "demo"
write_key = "{write_key}"
secret_key = "{secret_key}"
allowed_origins = ["http://127.0.0.1:{port}", "http://localhost:{port}"]

[[users]]
name = "analyst"
password = "{password}"
readonly = true
"""


def write_starter(path: Path, port: int = 8000, clickhouse_port: int = 8123) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        STARTER.format(
            port=port,
            clickhouse_port=clickhouse_port,
            write_key="wk_" + secrets.token_urlsafe(18),
            secret_key="sk_" + secrets.token_urlsafe(24),
            password=secrets.token_urlsafe(12),
        )
    )
