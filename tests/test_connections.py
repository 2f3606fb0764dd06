"""Connection limits and the operations port, against a real gateway over raw sockets.

Each limit is hit the way a hostile client would hit it (a URL or header that never ends, a head or body
left half-sent, connections held open in bulk), and a normal client's latency is measured meanwhile.
"""

from __future__ import annotations

import re
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gateway import config
from gateway.connections import address_key
from tests.conftest import GatewayProcess, make_event

KiB = 1024
GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
#: Small timeouts, so that waiting for them keeps the tests fast.
FAST = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keep_alive_timeout_s": 1.0}


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with 1 s timeouts and the default size limits (8 KiB URL, 16 KiB headers)."""
    gw = GatewayProcess(tmp_path_factory.mktemp("fast"), **FAST).start()
    yield gw
    gw.stop()


def dial(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """All the gateway sends until it closes the connection, and the seconds that took."""
    start, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # it closed with our bytes unread: what it sent before is still here
        pass
    return data, time.monotonic() - start


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def exchange(sock: socket.socket, request: bytes) -> int:
    """Send one request on a kept-alive connection and read its whole answer; its status."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed without an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return status(head)


def refused(sock: socket.socket) -> bool:
    """Whether the gateway closed this connection without answering a request on it."""
    try:
        sock.sendall(GET)
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def send_until_answered(sock: socket.socket, start: bytes, piece: bytes, cap: int = 4 * 1024 * KiB) -> tuple[int, int]:
    """Send ``start``, then ``piece`` after ``piece`` (a part that never ends) until the gateway answers;
    the answer's status and the bytes it took."""
    sent = 0
    try:
        sock.sendall(start)
        sent = len(start)
        while sent < cap and not select.select([sock], [], [], 0)[0]:
            sock.sendall(piece)
            sent += len(piece)
            time.sleep(0.001)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return status(until_closed(sock)[0]), sent


# -- sizes ------------------------------------------------------------------------------------------


def test_a_url_over_8_kib_gets_414(fast: GatewayProcess) -> None:
    with dial(fast.port) as sock:
        sock.sendall(b"GET /v1/pixel.gif?p=" + b"a" * 9 * KiB + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status(until_closed(sock)[0]) == 414
    with dial(fast.port) as sock:  # one that never ends is cut as soon as it is over the limit
        answer, sent = send_until_answered(sock, b"GET /?p=", b"a" * KiB)
        assert answer == 414 and sent < 64 * KiB
    with dial(fast.port) as sock:  # within the limit: answered by the app
        assert exchange(sock, b"GET /healthz?p=" + b"a" * 8000 + b" HTTP/1.1\r\nHost: t\r\n\r\n") == 200


def test_headers_over_16_kib_get_431(fast: GatewayProcess) -> None:
    with dial(fast.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 17 * KiB + b"\r\n\r\n")
        assert status(until_closed(sock)[0]) == 431
    with dial(fast.port) as sock:  # many small ones count together
        lines = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 100) for i in range(200))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n")
        assert status(until_closed(sock)[0]) == 431
    with dial(fast.port) as sock:
        # One that never ends: cut after the limits' worth of reads (plus at most its first read, uncounted).
        answer, sent = send_until_answered(sock, b"GET / HTTP/1.1\r\nX-Endless: ", b"a" * KiB)
        assert answer == 431 and sent < 300 * KiB
    with dial(fast.port) as sock:  # over the limit in two reads
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9 * KiB)
        time.sleep(0.05)
        sock.sendall(b"a" * 8 * KiB + b"\r\n\r\n")
        assert status(until_closed(sock)[0]) == 431
    cookie = b"GET /healthz HTTP/1.1\r\nHost: t\r\nCookie: " + b"a" * 15 * KiB + b"\r\n\r\n"
    with dial(fast.port) as sock:  # within the limit, in one read and in three
        assert exchange(sock, cookie) == 200
        for part in (cookie[:5000], cookie[5000:10000]):
            sock.sendall(part)
            time.sleep(0.05)
        assert exchange(sock, cookie[10000:]) == 200


# -- times ------------------------------------------------------------------------------------------


def test_silent_connections_and_half_sent_heads_are_closed_after_the_header_timeout(fast: GatewayProcess) -> None:
    with dial(fast.port) as silent, dial(fast.port) as half:
        half.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: t\r\nX-Write-Key: wk_a\r\n")
        answer, waited = until_closed(half)
        assert status(answer) == 408 and 0.8 < waited < 3
        answer, waited = until_closed(silent)
        assert answer == b"" and waited < 3  # nothing asked, nothing answered


def test_a_paused_body_is_closed_after_the_body_timeout_a_slow_steady_one_is_not(fast: GatewayProcess) -> None:
    body = orjson.dumps({"batch": [make_event()]})
    head = b"POST /v1/batch HTTP/1.1\r\nHost: t\r\nX-Write-Key: wk_b\r\nContent-Length: %d\r\n\r\n" % len(body)
    with dial(fast.port) as sock:
        sock.sendall(head + body[:10])
        answer, waited = until_closed(sock)
        assert status(answer) == 408 and 0.8 < waited < 3
    with dial(fast.port) as sock:  # 2 s in all, never pausing 1 s: the timeout is on pauses, not the whole body
        quarter = -(-len(body) // 4)
        sock.sendall(head)
        for i in range(0, 3 * quarter, quarter):
            sock.sendall(body[i:i + quarter])
            time.sleep(0.5)
        assert exchange(sock, body[3 * quarter:]) == 200


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(fast: GatewayProcess) -> None:
    with dial(fast.port) as sock:
        assert exchange(sock, GET) == 200
        answer, waited = until_closed(sock)
        assert answer == b"" and 0.8 < waited < 3
    with dial(fast.port) as sock:  # answered before its body came (413), then sent the body anyway, then idle
        assert exchange(sock, b"POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Length: 600000\r\n\r\n") == 413
        sock.sendall(b"a" * 600000)
        answer, waited = until_closed(sock)
        assert answer == b"" and waited < 3


# -- connections ------------------------------------------------------------------------------------


def fill(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """``count`` open connections, spread over the ``sources`` addresses, each shown alive by a request."""
    socks = [dial(port, sources[i % len(sources)]) for i in range(count)]
    assert all(exchange(sock, GET) == 200 for sock in socks)
    return socks


def eventually(check: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_connections_beyond_the_per_address_limit_are_refused(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(max_connections_per_address=20).start()
    # 127.0.0.2 and .3 are loopback too: other client addresses than the test helpers' 127.0.0.1.
    held = fill(gw.port, 20, ["127.0.0.2"])
    with dial(gw.port, "127.0.0.2") as extra:
        assert refused(extra)
    with dial(gw.clickhouse_port, "127.0.0.2") as extra:  # every port counts
        assert refused(extra)
    with dial(gw.port, "127.0.0.3") as other:  # another address is not affected
        assert exchange(other, GET) == 200
    held.pop().close()  # a closed connection frees its place

    def accepted() -> bool:
        with dial(gw.port, "127.0.0.2") as again:
            return not refused(again)

    assert eventually(accepted)
    for sock in held:
        sock.close()


def test_connections_beyond_the_per_process_limit_are_refused(new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway(max_connections=20).start()
    gw.ops.close()  # the readiness poll's kept-alive connection would count
    held = fill(gw.port, 20, ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    with dial(gw.port, "127.0.0.5") as extra:
        assert refused(extra)
    for sock in held:
        sock.close()

    def accepted() -> bool:
        with dial(gw.port, "127.0.0.5") as again:
            return not refused(again)

    assert eventually(accepted)


def test_ipv6_clients_count_by_64_block() -> None:
    assert address_key("203.0.113.9") == "203.0.113.9"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("::ffff:203.0.113.9") == "203.0.113.9"  # IPv4 on a dual-stack socket


# -- a normal client's latency under attack ---------------------------------------------------------


def median_latency(gw: GatewayProcess, count: int = 50) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        assert gw.send([make_event()], key="wk_b").status_code == 200
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_silent_connections_and_endless_headers_leave_normal_clients_fast(
        new_gateway: Callable[..., GatewayProcess]) -> None:
    gw = new_gateway().start()  # default limits: 10 s header timeout, 256 connections per address
    before = median_latency(gw)
    silent = [dial(gw.port) for _ in range(200)]
    stop = threading.Event()
    answers: list[int] = []

    def slowloris() -> None:
        """One header growing by 256 bytes every 20 ms."""
        while not stop.is_set():
            with dial(gw.port) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nX-Grow: ")
                try:
                    while not stop.is_set() and not select.select([sock], [], [], 0.02)[0]:
                        sock.sendall(b"a" * 256)
                except (ConnectionResetError, BrokenPipeError):
                    pass

    def endless() -> None:
        """A header that never ends, sent as fast as the gateway takes it; again once refused."""
        while not stop.is_set():
            with dial(gw.port) as sock:
                answers.append(send_until_answered(sock, b"GET / HTTP/1.1\r\nX-Endless: ", b"a" * 16 * KiB)[0])

    attackers = [threading.Thread(target=slowloris), threading.Thread(target=endless)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(0.3)
        during = median_latency(gw)
    finally:
        stop.set()
        for thread in attackers:
            thread.join()
        for sock in silent:
            sock.close()
    print(f"median latency of a 1-event POST /v1/batch: {before * 1000:.1f} ms before, {during * 1000:.1f} ms "
          f"with 200 silent connections, a slowly growing header and {len(answers)} endless ones (all 431)")
    assert answers and set(answers) == {431}
    assert during < max(5 * before, 0.1)


# -- the operations port ----------------------------------------------------------------------------


def test_metrics_and_readiness_are_served_on_the_ops_port_only(
        gateway: GatewayProcess, new_gateway: Callable[..., GatewayProcess]) -> None:
    assert gateway.http.get("/metrics").status_code == 404  # site ids and volumes stay off the public port
    assert gateway.http.get("/readyz").status_code == 404
    assert gateway.http.get("/healthz").status_code == 200  # for load balancers in front of the public port
    assert gateway.ops_port != gateway.port
    assert "clicktrail_spool_bytes" in gateway.ops.get("/metrics").text
    assert gateway.ops.get("/readyz").status_code == 200
    assert gateway.ops.get("/healthz").status_code == 200
    same = new_gateway(ops_port=0).start()  # 0: all on the ingest port, as before the ops port existed
    assert "clicktrail_spool_bytes" in same.http.get("/metrics").text


def test_the_ops_port_must_differ_from_the_others(tmp_path: Path) -> None:
    path = tmp_path / "clicktrail.toml"
    path.write_text('[server]\nport = 9000\nops_port = 9000\n[[sites]]\nid = "s"\nwrite_key = "k"\n')
    with pytest.raises(config.ConfigError, match="must differ"):
        config.load(path)
