"""The official Node client, @clickhouse/client from npm (tests/node/, installed by scripts/install --test),
against a real gateway process: request and response compression (gzip, Brotli), a JSONEachRow insert,
ClickHouse's errors through a compressed answer, and query parameters as multipart/form-data."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

from tests.conftest import ROOT, GatewayProcess

NODE_DIR = ROOT / "tests" / "node"


def test_node_client(gateway: GatewayProcess) -> None:
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed for this test"
    assert (NODE_DIR / "node_modules" / "@clickhouse" / "client").is_dir(), \
        "@clickhouse/client is not installed: run scripts/install --test"
    table = f"default.node_{uuid.uuid4().hex[:8]}"
    run = subprocess.run([node, "clickhouse_client.mjs", f"http://127.0.0.1:{gateway.clickhouse_port}", "admin",
                          "admin-pw", table], cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)

    assert out["insert_summary"]["written_rows"] == "2"
    assert out["gzip_rows"] == [{"id": 1, "name": "wechat_group_7", "at": "2026-01-02 03:04:05"},
                                {"id": 2, "name": "渠道码; DROP TABLE x", "at": "2026-01-02 03:04:06"}]
    assert out["gzip_content_encoding"] == "gzip"
    assert out["gzip_summary"]["read_rows"] == "2" and out["gzip_summary"]["result_rows"] == "2"
    assert out["br_count"] == [{"n": 3}] and out["br_content_encoding"] == "br"
    assert out["error"]["code"] == "60" and out["error"]["type"] == "UNKNOWN_TABLE"
    assert f"{table}_missing" in out["error"]["message"]
    assert out["multipart"] == [{"name": "it's; here", "long_length": 10000, "ids": [1, 2, 3]}]
    assert out["multipart_auto"] == [{"n": 3}]
