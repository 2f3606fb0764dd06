"""A real gateway process in a directory of its own, with the sites and users of SITES, spoken to over HTTP:
what the tests (through tests/conftest.py) and the benchmarks start. It lives here because a benchmark never
imports from tests/; tests may import from loadtests/."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent

SITES = """
[[sites]]
id = "site_a"
write_key = "wk_a"
secret_key = "sk_a"
allowed_origins = ["https://a.example"]
# Own referrer rules ahead of the built-in classes (qq.com is wechat): tests/analytics/harness.py RULES.
referrer_channels = { "partner.example.org" = "partner", "mp.weixin.qq.com" = "wechat_official_account" }

[[sites]]
id = "site_b"
write_key = "wk_b"
secret_key = "sk_b"
allowed_origins = ["*"]

[[sites]]
id = "site_c"
write_key = "wk_c"
secret_key = "sk_c"

[[sites]]
id = "limited"
write_key = "wk_limited"
rate_limit = 5

[[users]]
name = "admin"
password = "admin-pw"
readonly = false

[[users]]
name = "analyst"
password = "analyst-pw"
readonly = true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    def __init__(self, directory: Path, python: str = sys.executable, cwd: Path = ROOT, module: str = "gateway",
                 users: str = "", clickhouse: dict[str, Any] | None = None, **server: Any) -> None:
        """``python``, ``cwd``: the interpreter that runs ``-m gateway`` and its folder (an installed wheel's test);
        ``module``: what it runs (``tests.faults``: the gateway with faults switched by files in ``faults/``; with
        ``processes`` above 1 that is the owner, which loads, while the acceptors run the gateway as shipped);
        ``users``: [[users]] entries besides SITES' admin and analyst; ``clickhouse``: its [clickhouse] section
        (clickhouse-connect settings of a server-mode gateway); ``server``: [server] settings, such as
        ``processes=3``."""
        self.directory = directory
        self.python, self.cwd, self.module = python, cwd, module
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.clickhouse_port = free_port()
        # min_free_disk_bytes: a test's gateway stores megabytes, and the default's 512 MiB of headroom would
        # refuse every event on a shared machine whose disk runs low (the disk-full tests set their own).
        settings = {"host": "127.0.0.1", "port": self.port, "clickhouse_port": self.clickhouse_port,
                    "ops_port": free_port(), "data_dir": "data", "segment_max_age_ms": 200,
                    "min_free_disk_bytes": 32 * 1024 * 1024, **server}
        #: Where /metrics and /readyz are served: the ops port, or the ingest port with ``ops_port=0``.
        self.ops_port: int = settings["ops_port"] or self.port
        lines = ["[server]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items()]
        if clickhouse:
            lines += ["[clickhouse]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in clickhouse.items()]
        self.config = directory / "clicktrail.toml"
        self.config.write_text("\n".join(lines) + "\n" + SITES + users)
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base, timeout=30)
        self.ops = httpx.Client(base_url=f"http://127.0.0.1:{self.ops_port}", timeout=30)

    # -- process ----------------------------------------------------------------------------------

    def start(self, wait_ready: bool = True) -> GatewayProcess:
        log = (self.directory / "gateway.log").open("ab")
        self.proc = subprocess.Popen([self.python, "-m", self.module, "serve", "--config", str(self.config)],
                                     cwd=self.cwd, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.ops.get(path, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def acceptors(self) -> dict[int, psutil.Process]:
        """The processes a gateway with ``processes`` above 1 started on its ingest port, by number."""
        assert self.proc is not None
        found = {}
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                command = child.cmdline()
                if "accept" in command:
                    found[int(command[command.index("--index") + 1])] = child
        return found

    def log(self) -> str:
        path = self.directory / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- ingest -----------------------------------------------------------------------------------

    def send(self, events: list[dict[str, Any]], key: str = "wk_a", **kwargs: Any) -> httpx.Response:
        return self.http.post("/v1/batch", content=orjson.dumps({"batch": events}),
                              headers={"X-Write-Key": key, "Content-Type": "application/json",
                                       **kwargs.pop("headers", {})}, **kwargs)

    # -- ClickHouse, through the gateway's HTTP interface -----------------------------------------

    def query(self, sql: str, user: str = "admin", password: str = "admin-pw") -> str:
        response = httpx.post(f"http://127.0.0.1:{self.clickhouse_port}/", content=sql.encode(),
                              auth=(user, password), timeout=60)
        if response.status_code != 200:
            raise AssertionError(f"query failed ({response.status_code}): {response.text}")
        return response.text

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.query(sql + " FORMAT JSONEachRow").splitlines()]

    def scalar(self, sql: str) -> int:
        return int(self.query(sql).strip())

    def wait_for(self, sql: str, expected: int, timeout: float = 60) -> int:
        """Poll a count until it reaches ``expected`` (loading is asynchronous), then return it."""
        deadline = time.monotonic() + timeout
        value = -1
        while time.monotonic() < deadline:
            try:
                value = self.scalar(sql)
            except AssertionError:  # ClickHouse not open yet (503): keep waiting
                value = -1
            if value >= expected:
                return value
            time.sleep(0.1)
        return value

    def drained_metrics(self, timeout: float = 60) -> list[str]:
        """The lines of /metrics once the spool is empty: every acknowledged event is loaded and its segment
        deleted (the rows are queryable a moment before, as the insert commits before the loader says so)."""
        deadline = time.monotonic() + timeout
        while "clicktrail_spool_bytes 0.0" not in (metrics := self.ops.get("/metrics").text.splitlines()):
            assert time.monotonic() < deadline, "the spool did not drain"
            time.sleep(0.05)
        return metrics
