"""One request to the gateway: POST /v1/batch on a kept-alive connection, and its answer read."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from http.client import HTTPConnection, HTTPSConnection, RemoteDisconnected
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from clicktrail.version import VERSION

#: A reused connection that fails this way was most likely closed by the server while idle,
#: before it read this request; one new connection settles it without spending a retry.
_STALE = (RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]  # {} when the body is not a JSON object
    retry_after: float | None  # seconds, from the Retry-After header


class Connection:
    """A persistent HTTP(S) connection to one gateway; every socket operation has ``timeout``.

    Not thread-safe: each consumer thread, and the synchronous mode under a lock, uses its own.
    """

    def __init__(self, host: str, key: str, timeout: float) -> None:
        url = urlsplit(host)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"host: expected http(s)://name[:port][/path], got {host!r}")
        self._new = HTTPSConnection if url.scheme == "https" else HTTPConnection
        self._address = (url.hostname, url.port)
        self._path = url.path.rstrip("/") + "/v1/batch"
        self._timeout = timeout
        self._headers = {
            "X-Write-Key": key,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"clicktrail-python/{VERSION}",
        }
        self._conn: HTTPConnection | None = None

    def post(self, body: bytes) -> Answer:
        """Send a gzipped batch body; OSError or http.client.HTTPException when no answer came."""
        reused = self._conn is not None
        try:
            return self._post(body)
        except _STALE:
            self.close()
            if not reused:
                raise
        except BaseException:
            self.close()  # a connection in an unknown state is never reused
            raise
        try:
            return self._post(body)
        except BaseException:
            self.close()
            raise

    def _post(self, body: bytes) -> Answer:
        if self._conn is None:
            self._conn = self._new(*self._address, timeout=self._timeout)
        self._conn.request("POST", self._path, body, self._headers)
        response = self._conn.getresponse()
        data = response.read()  # read to the end, or the connection cannot carry the next request
        if response.will_close:
            self.close()
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        return Answer(response.status, parsed if isinstance(parsed, dict) else {},
                      retry_after(response.getheader("Retry-After")))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
