"""Big and slow queries on the ClickHouse HTTP interface, with real clients against a real gateway process:
answers streamed as the engine produces them (compressed each way clients ask), an error in the middle of a
stream as ClickHouse 25.11+ writes it, wait_end_of_query, queries cancelled when their client goes away, and
KILL QUERY by query_id from a second admin connection."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from gateway.serve.codecs import decode_content
from tests.clickhouse_blocks import read_blocks
from tests.conftest import ROOT, GatewayProcess, make_event

#: A query that runs until it is stopped (about a minute and a half of this machine's cores).
ENDLESS = "SELECT count() FROM numbers(1000000000000) WHERE NOT ignore(sipHash64(number))"
#: 2,000,000 rows of TabSeparated, 22,888,890 bytes: far beyond the 1 MiB held before the headers go.
BIG_ROWS = 2_000_000
BIG = f"SELECT number, toString(number) FROM numbers({BIG_ROWS})"
BIG_BYTES = sum(2 * len(str(n)) + 2 for n in range(BIG_ROWS))
# Fails after about 3 MiB of rows are out: the status is 200 by then.
FAILS_MIDWAY = "SELECT number, throwIf(number = 1500000, 'boom at 1.5M') FROM numbers(2000000)"


def url(gw: GatewayProcess) -> str:
    return f"http://127.0.0.1:{gw.clickhouse_port}/"


def client(gw: GatewayProcess, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"username": "admin", "password": "admin-pw", **kwargs}
    return clickhouse_connect.get_client(host="127.0.0.1", port=gw.clickhouse_port, **options)


def running(gw: GatewayProcess, marker: str) -> int:
    """How many queries the engine runs whose text holds ``marker`` (a hex string)."""
    return gw.scalar(f"SELECT count() FROM system.processes WHERE position(query, '{marker}') > 0"
                     " AND query NOT LIKE '%system.processes%'")


def wait_until_gone(gw: GatewayProcess, marker: str, timeout: float = 10) -> float:
    """Seconds until no query with ``marker`` runs in the engine (fails after ``timeout``)."""
    started = time.monotonic()
    while running(gw, marker):
        assert time.monotonic() - started < timeout, f"the query with {marker} still runs"
        time.sleep(0.05)
    return time.monotonic() - started


def wait_until_running(gw: GatewayProcess, marker: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not running(gw, marker):
        assert time.monotonic() < deadline, f"the query with {marker} never started"
        time.sleep(0.05)


def endless(marker: str) -> str:
    return f"{ENDLESS} AND '{marker}' != ''"


# --- streaming ----------------------------------------------------------------------------------------------


def test_a_big_answer_streams_and_a_small_one_comes_whole(gateway: GatewayProcess) -> None:
    with httpx.stream("POST", url(gateway), content=BIG, auth=("analyst", "analyst-pw"), timeout=60) as response:
        assert response.status_code == 200
        headers = response.headers
        received = 0
        lines = 0
        last = b""
        for chunk in response.iter_bytes():
            received += len(chunk)
            lines += chunk.count(b"\n")
            last = (last + chunk)[-32:]
    assert received == BIG_BYTES and lines == BIG_ROWS and last.endswith(f"{BIG_ROWS - 1}\t{BIG_ROWS - 1}\n".encode())
    # Streamed: chunked, no length known in advance; the summary counts what was done when the headers went.
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    assert len(headers["x-clickhouse-exception-tag"]) == 16 and headers["x-clickhouse-exception-tag"].isalpha()
    assert 0 < int(json.loads(headers["x-clickhouse-summary"])["result_rows"]) < BIG_ROWS

    small = httpx.post(url(gateway), content="SELECT number FROM numbers(10)", auth=("analyst", "analyst-pw"))
    assert small.status_code == 200 and small.headers["content-length"] == str(len(small.content)) == "20"
    assert "x-clickhouse-exception-tag" not in small.headers
    assert json.loads(small.headers["x-clickhouse-summary"])["result_rows"] == "10"


#: An answer of 200 blocks, which the engine formats one by one.
BLOCKS = "SELECT number, toString(number) AS s FROM numbers(200000) SETTINGS max_block_size = 1000"


@pytest.mark.parametrize("fmt", ["JSON", "JSONCompact", "XML", "Values", "CSVWithNames", "TSVWithNamesAndTypes",
                                 "JSONCompactEachRowWithNames", "JSONEachRow", "TSV"])
def test_an_answer_of_many_blocks_is_one_answer(gateway: GatewayProcess, fmt: str) -> None:
    """A whole-document format is one document, a header comes once: not one per block the engine formats."""
    answer = httpx.post(url(gateway), params={"default_format": fmt}, content=BLOCKS, auth=("analyst", "analyst-pw"),
                        timeout=60)
    assert answer.status_code == 200, answer.text
    text = answer.text
    expected = [[n, str(n)] for n in range(200_000)]
    if fmt in ("JSON", "JSONCompact"):
        document = json.loads(text)
        rows = [[int(r["number"]), r["s"]] if fmt == "JSON" else [int(r[0]), r[1]] for r in document["data"]]
        assert rows == expected and document["rows"] == 200_000
    elif fmt == "XML":
        assert text.count("<?xml") == 1 and text.count("<row>") == 200_000
    elif fmt == "Values":
        assert [[int(a), b] for a, b in re.findall(r"\((\d+),'(\d+)'\)", text)] == expected
        assert text.count("),(") == 199_999
    elif fmt == "JSONEachRow":
        assert [[int(r["number"]), r["s"]] for r in map(json.loads, text.splitlines())] == expected
    else:
        headers = {"CSVWithNames": 1, "TSVWithNamesAndTypes": 2, "JSONCompactEachRowWithNames": 1}.get(fmt, 0)
        lines = text.splitlines()
        body = lines[headers:]
        split = (lambda line: json.loads(line)) if fmt.startswith("JSON") else (
            lambda line: line.replace('"', "").split("," if fmt.startswith("CSV") else "\t"))
        assert [[int(a), str(b)] for a, b in map(split, body)] == expected, lines[:3]


def test_a_big_answer_costs_the_gateway_a_few_pieces_not_the_result(gateway: GatewayProcess) -> None:
    # 454 MB of TabSeparated. Held whole, the gateway grew by 1.5 GB (loadtests/bench_big_result.py); streamed,
    # by under 100 MB, whatever the size.
    assert gateway.proc is not None
    status = Path(f"/proc/{gateway.proc.pid}/status")

    def rss() -> int:
        return next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                    if line.startswith("VmRSS:"))

    before = peak = rss()
    received = 0
    with httpx.stream("POST", url(gateway), content="SELECT number, toString(number), repeat('x', 40)"
                      " FROM numbers(8000000)", auth=("analyst", "analyst-pw"), timeout=120) as response:
        for chunk in response.iter_raw(1 << 20):
            received += len(chunk)
            peak = max(peak, rss())
    assert received == 453777780
    assert peak - before < 300e6, f"the gateway grew by {(peak - before) / 1e6:.0f} MB"


def test_clickhouse_connect_streams_blocks(gateway: GatewayProcess) -> None:
    rows = 0
    total = 0
    with client(gateway).query_column_block_stream(BIG) as stream:
        for block in stream:
            rows += len(block[0])
            total += sum(block[0])
    assert rows == BIG_ROWS and total == BIG_ROWS * (BIG_ROWS - 1) // 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "lz4", "xz", "bz2"])
def test_a_streamed_answer_is_compressed_as_asked(gateway: GatewayProcess, encoding: str) -> None:
    decoded = _decode(gateway, {"enable_http_compression": "1"}, {"Accept-Encoding": encoding}, encoding)
    assert len(decoded) == BIG_BYTES and decoded.endswith(f"{BIG_ROWS - 1}\t{BIG_ROWS - 1}\n".encode())


def test_a_streamed_answer_in_clickhouse_blocks_and_gzip(gateway: GatewayProcess) -> None:
    decoded = _decode(gateway, {"enable_http_compression": "1", "compress": "1"}, {"Accept-Encoding": "gzip"}, "gzip")
    data, methods = read_blocks(decoded)
    assert len(data) == BIG_BYTES and set(methods) == {0x82} and len(methods) == -(-BIG_BYTES // (1 << 20))


def _decode(gw: GatewayProcess, params: dict[str, str], headers: dict[str, str], encoding: str) -> bytes:
    with httpx.stream("POST", url(gw), params=params, content=BIG, headers=headers, auth=("admin", "admin-pw"),
                      timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-encoding"] == encoding
        assert "content-length" not in response.headers
        raw = b"".join(response.iter_raw())
    return decode_content(raw, encoding, 1 << 30)


# --- an error in the middle of a stream -----------------------------------------------------------------------


def test_an_error_midway_ends_the_stream_as_clickhouse_does(gateway: GatewayProcess) -> None:
    body = bytearray()
    with httpx.stream("POST", url(gateway), content=FAILS_MIDWAY, auth=("analyst", "analyst-pw"),
                      timeout=60) as response:
        assert response.status_code == 200  # sent before the error
        tag = response.headers["x-clickhouse-exception-tag"].encode()
        # The response is broken off: no last chunk, so no client takes the truncated body for a whole one.
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                body += chunk
    # Whole blocks before the failing one: a million rows and more, past the first MiB.
    assert body.startswith(b"0\t0\n1\t0\n") and b"\n1000000\t0\n" in body
    head, _, block = bytes(body).rpartition(b"\r\n__exception__\r\n" + tag + b"\r\n")
    assert head.endswith(b"\n") and b"1500000\t" not in head
    found = re.fullmatch(rb"(.*\n)(\d+) " + tag + rb"\r\n__exception__\r\n", block, re.S)
    assert found, block
    message, length = found.groups()
    assert message.startswith(b"Code: 395. DB::Exception: boom at 1.5M") and int(length) == len(message)
    assert b"(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)" in message


def test_clients_report_an_error_midway(gateway: GatewayProcess) -> None:
    with pytest.raises((DatabaseError, OperationalError), match=r"boom at 1\.5M"):
        client(gateway, compress=False).query(FAILS_MIDWAY)
    # Compressed, the block is in the compressed stream, which is finished so the client can read it.
    with pytest.raises((DatabaseError, OperationalError), match=r"boom at 1\.5M"):
        client(gateway, compress="zstd").query(FAILS_MIDWAY)
    # An error within the first MiB still gets its status and code.
    early = httpx.post(url(gateway), content="SELECT number, throwIf(number = 1000, 'early') FROM numbers(2000000)",
                       auth=("analyst", "analyst-pw"))
    assert early.status_code != 200 and early.headers["x-clickhouse-exception-code"] == "395"
    assert b"__exception__" not in early.content and early.text.startswith("Code: 395.")


def test_wait_end_of_query_holds_the_whole_answer(gateway: GatewayProcess) -> None:
    response = httpx.post(url(gateway), params={"wait_end_of_query": "1", "enable_http_compression": "1"},
                          content=BIG, headers={"Accept-Encoding": "gzip"}, auth=("analyst", "analyst-pw"), timeout=60)
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == response.num_bytes_downloaded
    assert len(response.content) == BIG_BYTES and "x-clickhouse-exception-tag" not in response.headers
    assert json.loads(response.headers["x-clickhouse-summary"])["result_rows"] == str(BIG_ROWS)
    failed = httpx.post(url(gateway), params={"wait_end_of_query": "1"}, content=FAILS_MIDWAY,
                        auth=("analyst", "analyst-pw"), timeout=60)
    assert failed.status_code != 200 and failed.headers["x-clickhouse-exception-code"] == "395"
    assert failed.text.startswith("Code: 395.") and "__exception__" not in failed.text


def test_node_client_streams_reads_errors_midway_aborts_and_kills(gateway: GatewayProcess) -> None:
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed for this test"
    marker = uuid.uuid4().hex
    run = subprocess.run([node, "clickhouse_streaming.mjs", url(gateway), "analyst", "analyst-pw", "admin", "admin-pw",
                          marker], cwd=ROOT / "tests" / "node", capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["big"] == {"rows": 2000000, "sum": str(2000000 * 1999999 // 2)} and len(out["big_tag"]) == 16
    assert out["midway"].get("code") == "395" and "boom at 1.5M" in out["midway"]["message"], out["midway"]
    assert out["aborted"] and "abort" in out["aborted"].lower()
    assert [(k["kill_status"], k["query_id"], k["user"]) for k in out["killed"]] == [
        ("finished", f"node-{marker}", "analyst")]
    assert out["victim"] == {"code": "394", "type": "QUERY_WAS_CANCELLED"}
    assert wait_until_gone(gateway, f"{marker}-abort") < 5 and running(gateway, f"{marker}-kill") == 0


# --- cancelling -----------------------------------------------------------------------------------------------


def test_a_query_whose_client_went_away_is_cancelled(gateway: GatewayProcess) -> None:
    marker = uuid.uuid4().hex
    # clickhouse-connect gives up after its read timeout and closes the connection, as a closed notebook does.
    with pytest.raises(OperationalError):
        client(gateway, send_receive_timeout=1).query(endless(marker))
    assert wait_until_gone(gateway, marker) < 5
    started = time.monotonic()
    assert gateway.scalar("SELECT 1") == 1
    assert time.monotonic() - started < 2


def test_a_stream_whose_client_went_away_is_cancelled(gateway: GatewayProcess) -> None:
    marker = uuid.uuid4().hex
    sql = f"SELECT number, '{marker}' FROM numbers(100000000000)"
    with httpx.stream("POST", url(gateway), content=sql, auth=("analyst", "analyst-pw"), timeout=60) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()  # (dropping the iterator would close the response)
        next(chunks)
        assert running(gateway, marker) == 1
    # Closed after the first chunk: the engine stops, though the client never said why.
    assert wait_until_gone(gateway, marker) < 5


def test_a_paused_stream_holds_up_no_one(gateway: GatewayProcess) -> None:
    marker = uuid.uuid4().hex
    sql = f"SELECT number, '{marker}' FROM numbers(100000000000)"
    with httpx.stream("POST", url(gateway), content=sql, auth=("analyst", "analyst-pw"), timeout=60) as response:
        chunks = response.iter_raw()  # (dropping the iterator would close the response)
        next(chunks)
        # The reader pauses; the engine waits for it, and everyone else goes on meanwhile.
        started = time.monotonic()
        for _ in range(5):
            assert gateway.scalar("SELECT count() FROM numbers(1000)") == 1000
        assert time.monotonic() - started < 2
        killed = gateway.rows(f"KILL QUERY WHERE query LIKE '%{marker}%' AND query NOT LIKE '%KILL%' SYNC")
        assert [k["kill_status"] for k in killed] == ["finished"] and killed[0]["user"] == "analyst"
        assert running(gateway, marker) == 0


def _in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            out["result"] = target()
        except Exception as exc:  # the test looks at what it was
            out["error"] = exc
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_kill_query_by_query_id_from_another_connection(gateway: GatewayProcess) -> None:
    marker, query_id = uuid.uuid4().hex, f"slow-{uuid.uuid4().hex[:8]}"
    victim = client(gateway, username="analyst", password="analyst-pw")
    thread, out = _in_thread(lambda: victim.query(endless(marker), settings={"query_id": query_id}))
    wait_until_running(gateway, marker)

    # TEST lists it, and leaves it running.
    listed = gateway.rows(f"KILL QUERY WHERE query_id = '{query_id}' TEST")
    assert [(r["kill_status"], r["query_id"], r["user"]) for r in listed] == [("unknown_status", query_id, "analyst")]
    assert endless(marker) in listed[0]["query"]
    assert thread.is_alive() and running(gateway, marker) == 1

    # clickhouse-connect sends KILL as a command, and reads ClickHouse's TabSeparated answer.
    killed = client(gateway).command("KILL QUERY WHERE query_id = {id:String} SYNC", parameters={"id": query_id})
    assert killed[:3] == ["finished", query_id, "analyst"]
    thread.join(10)
    assert not thread.is_alive() and running(gateway, marker) == 0
    assert isinstance(out.get("error"), DatabaseError) and "QUERY_WAS_CANCELLED" in str(out["error"])
    assert "394" in str(out["error"])

    # Nothing running by that id any more: an empty answer, as ClickHouse's.
    assert gateway.query(f"KILL QUERY WHERE query_id = '{query_id}'") == ""


def test_kill_query_async_and_by_user(gateway: GatewayProcess) -> None:
    marker = uuid.uuid4().hex
    victim = client(gateway, username="analyst", password="analyst-pw")
    thread, out = _in_thread(lambda: victim.query(endless(marker)))
    wait_until_running(gateway, marker)
    killed = gateway.rows(f"KILL QUERY WHERE user = 'analyst' AND query LIKE '%{marker}%'")
    assert [k["kill_status"] for k in killed] == ["waiting"]
    thread.join(10)
    assert "QUERY_WAS_CANCELLED" in str(out.get("error")) and wait_until_gone(gateway, marker) < 5


def test_kill_query_is_for_admins(gateway: GatewayProcess) -> None:
    refused = httpx.post(url(gateway), content="KILL QUERY WHERE 1", auth=("analyst", "analyst-pw"))
    assert refused.headers["x-clickhouse-exception-code"] == "164" and "READONLY" in refused.text
    by_get = httpx.get(url(gateway), params={"query": "KILL QUERY WHERE 1"}, auth=("admin", "admin-pw"))
    assert by_get.headers["x-clickhouse-exception-code"] == "164"
    unknown = httpx.post(url(gateway), content="KILL QUERY WHERE no_such_column = 1", auth=("admin", "admin-pw"))
    assert unknown.headers["x-clickhouse-exception-code"] == "47" and "no_such_column" in unknown.text


# --- loading goes on ------------------------------------------------------------------------------------------


def test_events_load_while_analysts_run_long_queries(gateway: GatewayProcess) -> None:
    # Two analysts keep the engine busy until they are stopped (the analyst's max_execution_time is 60 s): the
    # loader's inserts run beside their queries, not after them (loadtests/bench_freshness.py measures it).
    markers = [uuid.uuid4().hex for _ in range(2)]
    threads = [_in_thread(lambda m=m: client(gateway, username="analyst", password="analyst-pw").query(endless(m)))
               for m in markers]
    for marker in markers:
        wait_until_running(gateway, marker)
    events = [make_event() for _ in range(50)]
    assert gateway.send(events).status_code == 200
    ids = ", ".join(f"'{e['event_id']}'" for e in events)
    assert gateway.wait_for(f"SELECT count() FROM clicktrail.events WHERE event_id IN ({ids})", 50, timeout=20) == 50
    assert all(running(gateway, m) == 1 for m in markers), "the analysts' queries ended before the events loaded"
    killed = gateway.rows(f"KILL QUERY WHERE query LIKE '%{markers[0]}%' OR query LIKE '%{markers[1]}%' SYNC")
    assert sorted(k["kill_status"] for k in killed) == ["finished", "finished"]
    for thread, _ in threads:
        thread.join(10)
