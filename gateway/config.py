"""Gateway configuration: one TOML file, decoded and checked by msgspec.

A first run without ``--config`` writes a starter file with a demo site and fresh random keys,
so a new user never has to invent keys or read a manual before the first event arrives.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

KiB = 1024
MiB = 1024 * KiB


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    #: The ClickHouse HTTP interface for analysts (0 disables it).
    clickhouse_port: int = 8123
    #: /metrics, /readyz and /healthz for Prometheus and probes, on ``ops_host`` (loopback unless you open it):
    #: /metrics names every site and its volumes, which is nobody's business on the public port. The ingest
    #: port then keeps only /healthz, which tells nothing and is what a load balancer in front of it can reach.
    #: 0: all three on the ingest port, for setups whose scraper reaches only that port.
    ops_port: int = 8001
    ops_host: str = "127.0.0.1"
    data_dir: str = "data"
    #: ``always``: fsync each group commit before answering (survives power loss);
    #: ``interval``: write before answering, fsync every ``fsync_interval_ms`` (survives a crash of the process);
    #: ``off``: leave flushing to the OS.
    fsync: Literal["always", "interval", "off"] = "always"
    fsync_interval_ms: int = 200
    #: A spool segment is sealed for the loader once it is this old or this large. The age bounds freshness: with
    #: 250 ms events are in ClickHouse within 0.45 s at the p95 at 200 events/s (1.2 s with 1000 ms), 0.6 s under
    #: full batch load (1.5 s), for about 10 % more CPU per event in smaller, more frequent inserts (bench_freshness).
    segment_max_age_ms: int = 250
    segment_max_bytes: int = 32 * MiB
    #: Spool size beyond which new events get 503 (ClickHouse down too long, or the disk filling up).
    spool_max_bytes: int = 2048 * MiB
    #: Free space kept on the filesystems of the spool and of ClickHouse: below it new events get 503 (as beyond
    #: spool_max_bytes) until loading has freed a 16th more. ClickHouse reserves room before each insert (less than
    #: the JSON it loads, at most load_max_bytes at a time) and before merges: a spool that filled the disk could
    #: never be loaded. 0: only a full disk refuses events.
    min_free_disk_bytes: Annotated[int, msgspec.Meta(ge=0)] = 512 * MiB
    #: At most this much spool goes into one INSERT. The gateway's memory peaks with it, as the loader catches up on a
    #: backlog: 32 MiB took that peak from about 850 to 500 MB RSS, for 5 to 25 % fewer rows/s (loadtests/README.md).
    load_max_bytes: int = 128 * MiB
    #: Longest a request waits for the disk to confirm its events; then 503 with Retry-After (a hung disk).
    commit_timeout_s: float = 10.0
    #: /readyz answers 503 while the oldest event not yet in ClickHouse is older than this (the loader is stuck
    #: or far behind), besides while a background part is failing.
    max_loader_lag_s: float = 120.0
    #: How far before its arrival an event's time may lie (after clock-skew correction), by key: a browser's
    #: outbox is flushed within days, so the public write key may back-date a week; the secret key imports
    #: history (CRM backfills). Older events are rejected with a reason, as Mixpanel's /track and /import do.
    max_past_days_write_key: float = 7.0
    max_past_days_secret_key: float = 5 * 365.0
    #: How far after its arrival an event's time may lie: clocks are corrected, so only a little slack.
    max_future_s: float = 3600.0
    #: Drop the last octet of IPv4 and the last 80 bits of IPv6 before storing (PIPL: collect the minimum).
    anonymize_ip: bool = True
    #: How many proxies you run in front of the gateway, each appending to X-Forwarded-For the address it got
    #: the request from: the client address is the entry the outermost one added (1: the rightmost entry).
    #: 0: X-Forwarded-For is ignored, as anyone can write it. Also the address the limits below count against.
    trusted_proxy_hops: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Replaced by trusted_proxy_hops (it took the leftmost entry, which the client writes); read only so that
    #: an old file's ``true`` gets a clear error.
    trust_forwarded_for: bool = False
    #: Failed authentications (unknown write keys, wrong analyst passwords) one client address may make per
    #: ``auth_failure_window_s`` on each port; beyond, its attempts are refused unchecked (429) until a failure has
    #: aged out, one every window / limit seconds (6 s by default). Behind a proxy, set trusted_proxy_hops: else all
    #: clients have the proxy's address, and one guesser locks them all out.
    auth_failure_limit: Annotated[int, msgspec.Meta(ge=1)] = 10
    auth_failure_window_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    #: Requests per second one client IP may make (0: unlimited).
    ip_rate_limit: float = 0.0
    #: Longest time a ClickHouse HTTP user's query may run, in seconds, unless the user's max_execution_time says.
    query_timeout_s: float = 60.0
    #: Connection limits (all ports), so that no client can hold the process's descriptors or slow it for others.
    #: A request URL longer than this gets 414 URI Too Long (nginx allows 8 KiB too; browsers send far less).
    max_url_bytes: Annotated[int, msgspec.Meta(gt=0)] = 8 * KiB
    #: Header lines summing to more than this get 431 Request Header Fields Too Large (nginx: 4 buffers of 8 KiB).
    max_header_bytes: Annotated[int, msgspec.Meta(gt=0)] = 16 * KiB
    #: Seconds from a connection's opening, or a request's first byte, until its headers are whole; then 408
    #: (a connection that sent nothing is just closed). Slowloris holds connections by never finishing them.
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    #: Seconds a request body may pause between two reads (nginx's client_body_timeout); then 408.
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: Seconds an idle connection stays open between requests: longer than the 10 s heartbeat of a live
    #: viewing, so a browser keeps its connection, short enough to free idle ones soon.
    keep_alive_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    #: Open connections per process (capped so the open-files limit keeps room for ClickHouse and the spool),
    #: and per client address (an IPv6 /64; 0: unlimited; not applied with trusted_proxy_hops, where every
    #: connection comes from a proxy). Connections beyond are closed at once, unanswered. A live viewer's browser
    #: keeps its connection for the whole stream (a heartbeat every 10 s, keep-alive 15 s): 8192 lets a 5,000-viewer
    #: webinar reach the gateway directly, with room for the site's other visitors.
    max_connections: Annotated[int, msgspec.Meta(gt=0)] = 8192
    max_connections_per_address: Annotated[int, msgspec.Meta(ge=0)] = 256
    #: Processes that take events on ``port``, to use more cores than one (the kernel spreads the connections
    #: over them, SO_REUSEPORT). 1: one process does everything. N > 1: N acceptors receive, check, enrich and
    #: spool events, each into a spool of its own (``data_dir/spool/<n>``), and one more process, the owner,
    #: starts them (and restarts one that dies), loads every spool into embedded ClickHouse (which one process
    #: may open), and serves clickhouse_port and ops_port, whose /metrics and /readyz sum up the acceptors.
    #: The connection and rate limits above hold in each process (see README.md, "Several processes").
    #: At most the number of cores less one (the owner's loader keeps about one busy). All events go through the
    #: owner's one loader (about 130,000 events/s on 2 cores, bench_loader): beyond its rate more acceptors only
    #: take bursts into their spools faster. Server mode has no such owner: each process loads its own spool.
    processes: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1


class ClickHouseConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Where events are loaded and the views live: ClickHouse embedded in the gateway (chDB, one box), or a
    ClickHouse server or cluster the gateway writes to over HTTP (gateway/warehouse/server.py)."""

    mode: Literal["embedded", "server"] = "embedded"
    #: Server mode: the HTTP(S) interfaces of ClickHouse servers (``https://ch1.internal:8443``), tried in turn
    #: when one cannot be reached. Each must be one server (or a balancer that keeps a session on one server):
    #: the loader's insert goes through a temporary table of its session.
    urls: list[str] = []
    user: str = "default"
    password: str = ""
    #: The migrations and views name their tables ``clicktrail.<table>``, so this is the only database served.
    database: str = "clicktrail"
    #: TLS, for https URLs: check the server's certificate, against ``ca_cert`` (a PEM file; relative paths from
    #: the config file's folder) or else the system's certificate authorities.
    verify: bool = True
    ca_cert: str = ""
    #: A cluster of the server's remote_servers: the schema is created ON CLUSTER with Replicated and Distributed
    #: tables (gateway/warehouse/cluster.py).
    cluster: str = ""
    #: How a spool segment travels to the server (HTTP Content-Encoding): lz4 costs the least CPU per byte saved.
    compression: Literal["lz4", "zstd", "none"] = "lz4"

    @property
    def embedded(self) -> bool:
        return self.mode == "embedded"


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
    #: The site's own referrer rules, ahead of the built-in classes: {"partner.example.org" = "partner"} credits
    #: arrivals from that domain (and its subdomains) to that channel.
    referrer_channels: dict[str, str] = {}


class UserConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A user of the ClickHouse HTTP interface. The limits are ClickHouse's own settings of the same names,
    set on each of the user's queries and held by ClickHouse (a query may lower them, never raise them);
    0 lifts one, and left out each takes the default noted."""

    name: str
    password: str
    #: Read only (ClickHouse's readonly = 2: settings may change per query, readonly itself not); false: an admin.
    readonly: bool = True
    #: The sites whose rows the user sees, in every table and view of clicktrail; left out: all of them.
    #: Read-only users only (an admin could lift the filter).
    sites: list[str] | None = None
    #: Bytes of memory one query may take; default: a quarter of the machine's memory.
    max_memory_usage: Annotated[int, msgspec.Meta(ge=0)] | None = None
    #: Seconds one query may run; default: server.query_timeout_s.
    max_execution_time: Annotated[float, msgspec.Meta(ge=0)] | None = None
    #: Rows and bytes (uncompressed, in memory) of one query's result; default: no limit.
    max_result_rows: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_result_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Rows one query may read from tables; default: no limit.
    max_rows_to_read: Annotated[int, msgspec.Meta(ge=0)] = 0


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    server: ServerConfig = ServerConfig()
    clickhouse: ClickHouseConfig = ClickHouseConfig()
    sites: list[SiteConfig] = []
    users: list[UserConfig] = []

    @property
    def analysts_port(self) -> int:
        """The port this gateway serves the ClickHouse HTTP interface (and the dashboard) on, 0 for none: in server
        mode analysts use the server's own ports, users and row policies (README: Configuration)."""
        return self.server.clickhouse_port if self.clickhouse.embedded else 0

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
    if config.clickhouse.ca_cert:  # relative to the file's folder, wherever the gateway runs
        ca_cert = str((path.parent / config.clickhouse.ca_cert).resolve())
        config = msgspec.structs.replace(config, clickhouse=msgspec.structs.replace(config.clickhouse, ca_cert=ca_cert))
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
    if config.server.trust_forwarded_for:
        raise ConfigError(f"{path}: server.trust_forwarded_for is replaced by trusted_proxy_hops, the number of "
                          "proxies you run in front of the gateway: write trusted_proxy_hops = 1 for one")
    site_ids = {site.id for site in config.sites}
    names: set[str] = set()
    for user in config.users:
        if user.name in names:
            raise ConfigError(f"{path}: user {user.name!r} appears twice")
        names.add(user.name)
        if user.sites is None:
            continue
        if not user.readonly:
            raise ConfigError(f"{path}: user {user.name!r} names sites but is not readonly: an admin can lift"
                              " any filter, so only read-only users can be kept to their sites")
        if not user.sites:
            raise ConfigError(f"{path}: user {user.name!r} has sites = []: name the sites it may read, or leave"
                              " sites out for all")
        if unknown := sorted(set(user.sites) - site_ids):
            raise ConfigError(f"{path}: user {user.name!r} names sites that are not configured: {unknown}")
    _check_clickhouse(config.clickhouse, path)
    server = config.server
    ports = [port for port in (server.port, server.clickhouse_port, server.ops_port) if port]
    if len(set(ports)) < len(ports):  # each connection's app is chosen by the port number alone
        raise ConfigError(f"{path}: port, clickhouse_port and ops_port must differ")
    if server.processes > 1 and not server.ops_port:
        raise ConfigError(f"{path}: processes = {server.processes} needs an ops_port: /metrics and /readyz on the"
                          " shared ingest port would each answer for whichever process took the connection")


def _check_clickhouse(clickhouse: ClickHouseConfig, path: Path) -> None:
    if clickhouse.database != "clicktrail":
        raise ConfigError(f"{path}: clickhouse.database must be 'clicktrail': the migrations and views name their"
                          " tables clicktrail.<table>")
    if clickhouse.mode == "embedded":
        given = [name for name in ("urls", "cluster", "ca_cert") if getattr(clickhouse, name)]
        if given:
            raise ConfigError(f"{path}: clickhouse.{given[0]} is for mode = \"server\"; the embedded engine"
                              " needs no address")
        return
    if not clickhouse.urls:
        raise ConfigError(f"{path}: clickhouse mode = \"server\" needs urls, the HTTP(S) interfaces of the"
                          " ClickHouse servers (such as [\"https://clickhouse.internal:8443\"])")
    for url in clickhouse.urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"{path}: clickhouse.urls: {url!r} is not the http(s)://host:port of a ClickHouse"
                              " server's HTTP interface (user and password go in clickhouse.user and .password)")
        try:
            parts.port  # noqa: B018 (it raises for a port that is no number or out of range)
        except ValueError as exc:
            raise ConfigError(f"{path}: clickhouse.urls: {url!r}: {exc}") from None
    if clickhouse.ca_cert:
        if not clickhouse.verify:
            raise ConfigError(f"{path}: clickhouse.ca_cert is given but verify = false: nothing would check it")
        if not (path.parent / clickhouse.ca_cert).is_file():
            raise ConfigError(f"{path}: clickhouse.ca_cert: no file {clickhouse.ca_cert!r}")


STARTER = """\
# Clicktrail gateway configuration. Written on first run; edit freely.

[server]
host = "127.0.0.1"
port = {port}
clickhouse_port = {clickhouse_port}
# ops_port = 8001, ops_host = "127.0.0.1": where /metrics and /readyz are served (0: on port)
data_dir = "data"
fsync = "always"
# Free space kept for ClickHouse on the disk of data_dir: below it new events get 503 (retry) until loading
# frees some, as ClickHouse needs room to insert the spool (at most load_max_bytes = 128 MiB at a time) and to merge.
# min_free_disk_bytes = 536870912   # 512 MiB
# A small box: 33554432 (32 MiB) loads in smaller inserts: the gateway peaks near 500 MB, not 850, for 5 to 25 %
# fewer rows/s.
# load_max_bytes = 134217728   # 128 MiB

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
