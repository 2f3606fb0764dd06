"""What a scenario's locust workers tell the harness: one line per request, with what the gateway answered and which
events it acknowledged.

Each worker process writes its own file (``ledger-<pid>.jsonl``), so workers need no lock and no channel to the
harness, which reads the files while the run goes on (freshness samples) and after it (throughput, latency, the
exactly-once check). An event is named by its worker's pid and a sequence number the worker hands out; its
``event_id`` is the run's prefix and an MD5 of both, which looks as random as the SDKs' UUIDs (ids in the order
they are made would make the gateway's dedup lookups unrealistically cheap) and which ClickHouse computes alike
(``MD5``), so the check expands the acknowledged sequence numbers into ids inside ClickHouse instead of shipping
millions of ids to it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import orjson

#: The SQL that names event ``seq`` of worker ``pid`` as ``event_id`` does (``prefix`` is quoted by the caller).
ID_SQL = "concat({prefix}, '-', lower(hex(MD5(concat(toString({pid}), '-', toString({seq}))))))"


def event_id(prefix: str, pid: int, seq: int) -> str:
    return f"{prefix}-{hashlib.md5(b'%d-%d' % (pid, seq)).hexdigest()}"


def runs(seqs: Iterable[int]) -> list[list[int]]:
    """Sequence numbers as half-open ``[first, end)`` runs: a 500-event batch is one run, not 500 numbers."""
    out: list[list[int]] = []
    for seq in sorted(seqs):
        if out and out[-1][1] == seq:
            out[-1][1] = seq + 1
        else:
            out.append([seq, seq + 1])
    return out


def merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching runs joined, sorted: what one worker's acknowledged requests add up to."""
    out: list[tuple[int, int]] = []
    for first, end in sorted(spans):
        if out and first <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((first, end))
    return out


class Request(NamedTuple):
    """One request as a worker saw it. ``acked`` is what the gateway took: the batch's runs on a 2xx, less the
    events it rejected one by one; nothing otherwise."""

    pid: int
    answered_at: float  # wall clock (time.time()), comparable across processes
    latency_s: float
    status: int  # 0: no answer (connection refused or reset, timeout)
    events: int
    acked: list[list[int]]
    error: str  # the exception's name when status is 0


class Writer:
    """A worker's side: hands out sequence numbers and appends one line per request. Opened lazily, in the process
    that writes: locust imports the scenario before ``--processes`` forks its workers."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self._pid = 0
        self._fd = -1
        self._seq = 0

    def next_ids(self, count: int) -> list[tuple[int, str]]:
        """``count`` fresh (seq, event_id) pairs."""
        pid = os.getpid()
        first, self._seq = self._seq, self._seq + count
        return [(seq, event_id(self.prefix, pid, seq)) for seq in range(first, first + count)]

    def record(self, latency_s: float, status: int, events: int, acked: list[list[int]], error: str = "") -> None:
        pid = os.getpid()
        if pid != self._pid:
            # One write per line, appended: the reader only has to leave a line it caught half-written for later.
            self._fd = os.open(self.directory / f"ledger-{pid}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._pid = pid
        os.write(self._fd, orjson.dumps([time.time(), latency_s, status, events, acked, error]) + b"\n")


class Reader:
    """The harness's side: each call to ``read`` returns the lines written since the last one, from every file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}

    def read(self) -> Iterator[Request]:
        for path in sorted(self.directory.glob("ledger-*.jsonl")):
            pid = int(path.stem.split("-")[1])
            with path.open("rb") as file:
                file.seek(self._offsets.get(path, 0))
                data = file.read()
            whole = data[: data.rfind(b"\n") + 1]  # a line still being written is read next time
            self._offsets[path] = self._offsets.get(path, 0) + len(whole)
            for line in whole.splitlines():
                answered_at, latency_s, status, events, acked, error = orjson.loads(line)
                yield Request(pid, answered_at, latency_s, status, events, acked, error)
