"""A local HTTP sink for the SDK benchmark: answers every POST at once with 200, then counts its events.

Run in its own process (``python -m loadtests.sink PORT``), so serving does not compete with the SDK
under test for the benchmark process's interpreter lock. It prints ``ready`` once listening.
``GET /count`` answers the number of events received so far (the length of each body's ``batch``,
gzipped or not), so the benchmark checks what each SDK delivered without trusting its own counters;
the counting happens after the answer is sent, so it does not slow the SDKs down.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = b'{"accepted":0,"rejected":[]}'

_count = 0
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as both SDKs use it
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would hold the second 40 ms

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(ANSWER)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        events = len(json.loads(body).get("batch", ()))
        global _count
        with _lock:
            _count += events

    def do_GET(self) -> None:
        with _lock:
            self._answer(str(_count).encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per request would cost more than answering it


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
