"""Limits on what one connection, one client address and all of them together may hold, on every port.

uvicorn's httptools protocol bounds neither the size of a request head nor the time it takes to arrive:
a header that never ends grows in the parser (by ``bytes +=``, so each read copies all of it again, which
slowed every other client of the event loop), and a silent connection stays open until the client leaves.
``LimitedProtocol`` adds those bounds to it. The common request, whole in one read, costs a few attribute
updates and comparisons, no timer and no counting: a head within one read no larger than the limits is within
them, and a timer is armed only when a read leaves a request incomplete.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from http import HTTPStatus
from typing import ClassVar, NoReturn

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.config import ServerConfig

log = logging.getLogger("clicktrail.connections")

#: Where a connection is in its current request: reading its head, reading its body, or neither (no request
#: begun yet, or the request is whole and being answered, or the connection is idle between requests).
HEAD, BODY, DONE = 0, 1, 2
#: Descriptors that connections must leave to ClickHouse's parts, the spool and the logs.
RESERVED_FILES = 1024
#: A refused request or connection is logged at most this often, with the count since the last line.
REPORT_INTERVAL_S = 60.0


class Limits:
    """One process's limits and its open connections, in all and by client address.

    Each process holds its own: with ``server.processes = N`` the ingest port takes up to N times max_connections in
    all, and one client address up to N times max_connections_per_address (the kernel spreads its connections over
    the processes by a hash), so set them per process, for the descriptors and memory each one has."""

    def __init__(self, server: ServerConfig) -> None:
        self.max_url_bytes = server.max_url_bytes
        self.max_header_bytes = server.max_header_bytes
        # A head still unfinished after this much can be within neither limit; the slack covers the request
        # line's method and version and the line ends.
        self.max_head_bytes = server.max_url_bytes + server.max_header_bytes + 1024
        self.header_timeout_s = server.header_timeout_s
        self.body_timeout_s = server.body_timeout_s
        self.max_connections = open_files_for(server.max_connections)
        # Behind a proxy every connection comes from the proxy's address.
        self.max_per_address = 0 if server.trusted_proxy_hops else server.max_connections_per_address
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.refused = 0
        self.report_at = 0.0

    def report(self, reason: str) -> None:
        """Count a refusal; log it unless a line went out less than a minute ago (an attack must not flood the log)."""
        self.refused += 1
        now = time.monotonic()
        if now >= self.report_at:
            log.warning("refused %d requests or connections since the last such line; latest: %s",
                        self.refused, reason)
            self.refused = 0
            self.report_at = now + REPORT_INTERVAL_S


def open_files_for(connections: int) -> int:
    """Raise the soft open-files limit to fit ``connections`` (up to the hard limit) and return how many fit.

    Running out of descriptors fails everything at once (the spool's next segment, ClickHouse's next part),
    so connections get at most what is left after a reserve.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return connections
    wanted = connections + RESERVED_FILES
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    fit = soft - min(RESERVED_FILES, soft // 2)
    if fit < connections:
        log.warning("max_connections is %d but the open-files limit (%d) leaves room for %d", connections, soft, fit)
    return min(connections, fit)


def address_key(host: str) -> str:
    """The client a connection counts against: an IPv4 address, or an IPv6 /64 (what one subscriber gets)."""
    if ":" not in host:
        return host
    address = ipaddress.IPv6Address(host)
    if address.ipv4_mapped:  # an IPv4 client of a dual-stack socket
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on a request head's size and time, the body's pauses and connections.

    Over-long URLs get 414 and header fields 431; a head not whole within the header timeout, or a body pausing
    longer than the body timeout, gets 408. Each closes the connection. The keep-alive timeout is uvicorn's.
    The methods run for every request call their base directly, as ``super()`` adds measurably to each request.
    """

    limits: ClassVar[Limits]
    # Class-level defaults, so that a connection refused at once needs none of them set.
    address: str | None = None  # the key it counts against in ``limits.by_address``, once counted
    phase = DONE
    timer: asyncio.TimerHandle | None = None
    timer_phase = DONE  # the phase the timer was armed for
    read_bytes = 0  # the size of the read being parsed
    head_read = -1  # bytes of the current head in reads after its first one (-1: still in its first read)
    body_read_at = 0.0
    refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        key = address_key(self.client[0]) if self.client else ""
        count = limits.by_address.get(key, 0)
        # Closed at once, without the 503 nginx's limit_conn sends: a 503 needs the request read first, holding
        # the very descriptor the limit is there to keep free. Clients see a closed connection and retry later.
        if limits.open >= limits.max_connections:
            limits.report(f"over max_connections ({limits.max_connections})")
            transport.close()
            return
        if limits.max_per_address and count >= limits.max_per_address:
            limits.report(f"over max_connections_per_address ({limits.max_per_address})")
            transport.close()
            return
        limits.open += 1
        limits.by_address[key] = count + 1
        self.address = key
        # A connection that never sends is closed after the header timeout, as one that sends too slowly.
        self._arm(HEAD, limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.address is not None:
            limits = self.limits
            limits.open -= 1
            left = limits.by_address[self.address] - 1
            if left:
                limits.by_address[self.address] = left
            else:
                del limits.by_address[self.address]
            self.address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.read_bytes = len(data)
        HttpToolsProtocol.data_received(self, data)
        phase = self.phase
        if phase == HEAD:
            if len(self.url) > self.limits.max_url_bytes:
                self._refuse(414, "a URL over max_url_bytes")
                return
            # The parser holds an unfinished header line to itself; only the reads tell how long it grows.
            # The read a head begins in is not counted (its split with the request before is unknown).
            if self.head_read < 0:
                self.head_read = 0
            else:
                self.head_read += len(data)
                if self.head_read > self.limits.max_head_bytes:
                    self._refuse(431, "a header over max_header_bytes")
                    return
            if self.timer is None:
                self._arm(HEAD, self.limits.header_timeout_s)
        elif phase == BODY:
            self.body_read_at = self.loop.time()
            if self.timer_phase != BODY:
                self._arm(BODY, self.limits.body_timeout_s)
        elif self.timer is not None:
            self._disarm()
            if self.cycle.response_complete and self.timeout_keep_alive_task is None:
                # Answered before its body was read (401, 413): the body's reads stopped uvicorn's keep-alive
                # timer, which it arms only as a response completes; without it the connection would idle forever.
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)

    # -- parser callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self.phase = HEAD
        self.head_read = -1

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.url) > limits.max_url_bytes:
            self._stop_parser(414, "a URL over max_url_bytes")
        # Counted only when the head spanned reads or came in one larger than the limit; else it is within.
        if (self.head_read >= 0 or self.read_bytes > limits.max_header_bytes) and sum(
                len(name) + len(value) + 4 for name, value in self.headers) > limits.max_header_bytes:  # ": ", CRLF
            self._stop_parser(431, "headers over max_header_bytes")
        self.phase = BODY
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self.phase = DONE
        HttpToolsProtocol.on_message_complete(self)

    def _stop_parser(self, status: int, reason: str) -> NoReturn:
        """Stop parsing mid-read: the parser turns a callback's exception into the error uvicorn answers below."""
        self.refusal = (status, reason)
        raise ValueError(reason)

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self.refusal)

    # -- timeouts and refusals ----------------------------------------------------------------------

    def _arm(self, phase: int, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_phase = phase
        self.timer = self.loop.call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_phase = DONE

    def _expire(self) -> None:
        self.timer = None
        self.timer_phase = DONE
        if self.flow.read_paused:
            # The server stopped reading (a pipelined request waits its turn, or the app has yet to take
            # the body it has): the wait is not the client's.
            self._arm(self.phase, self.limits.body_timeout_s if self.phase == BODY else self.limits.header_timeout_s)
        elif self.phase == HEAD:
            self._refuse(408, "a request head slower than header_timeout_s")
        elif self.phase == BODY:
            # The body may take any time in all, as long as it never pauses longer than the timeout: bodies
            # go up to 64 MiB on the ClickHouse port, too much to promise within one deadline on a slow link.
            left = self.body_read_at + self.limits.body_timeout_s - self.loop.time()
            if left > 0:
                self._arm(BODY, left)
            else:
                self._refuse(408, "a request body paused longer than body_timeout_s")
        else:
            self.transport.close()  # silent since it opened: nothing to answer

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and close, or just close where an answer would be taken for another request's."""
        if self.transport.is_closing():
            return
        self.limits.report(reason)
        cycle = self.cycle
        if self.phase == BODY:
            answer = not cycle.response_started and not self.pipeline
        else:
            answer = cycle is None or cycle.response_complete
        if answer:
            text = HTTPStatus(status).phrase.encode()
            self.transport.write(b"".join([
                STATUS_LINE[status],
                *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
                b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n",
                b"content-length: %d\r\n\r\n" % len(text),
                text,
            ]))
        self.transport.close()


def protocol(server: ServerConfig) -> type[LimitedProtocol]:
    """A protocol class bound to ``server``'s limits, for ``uvicorn.Config(http=...)``; raises RLIMIT_NOFILE to fit."""
    return type("Protocol", (LimitedProtocol,), {"limits": Limits(server)})
