"""Counters the gateway keeps, rendered in Prometheus' text format at /metrics.

Plain attributes rather than a client library: the request path only increments integers, and
the whole exposition is a dozen lines.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

#: Upper bounds (seconds) of the insert-latency histogram buckets.
INSERT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()  # by site
        self.rejected: Counter[str] = Counter()  # by reason
        self.loaded_rows = 0
        self.loader_errors = 0
        self.quarantined_segments = 0
        self.quarantined_rows = 0
        #: Unexpected failures, by part (committer, sealer, loader, enrichment, ...); each one survived.
        self.internal_errors: Counter[str] = Counter()
        self.insert_seconds_sum = 0.0
        self.insert_count = 0
        self.insert_buckets = [0] * len(INSERT_BUCKETS)

    #: The counters by label and the totals: what a process's ``state()`` carries and ``plus`` adds up.
    LABELLED = ("accepted", "rejected", "internal_errors")
    TOTALS = ("loaded_rows", "loader_errors", "quarantined_segments", "quarantined_rows", "insert_seconds_sum",
              "insert_count")

    def state(self) -> dict[str, object]:
        """The counters as JSON-ready values, for another process to add up (gateway/processes.py)."""
        return {name: getattr(self, name) for name in (*self.LABELLED, *self.TOTALS, "insert_buckets")}

    def plus(self, states: list[dict[str, Any]]) -> Metrics:
        """A copy of these counters with other processes' ``state()`` added."""
        total = Metrics()
        for state in (self.state(), *states):
            for name in self.LABELLED:
                getattr(total, name).update(state[name])
            for name in self.TOTALS:
                setattr(total, name, getattr(total, name) + state[name])
            total.insert_buckets = [a + b for a, b in zip(total.insert_buckets, state["insert_buckets"], strict=True)]
        return total

    def observe_insert(self, rows: int, seconds: float) -> None:
        self.loaded_rows += rows
        self.insert_count += 1
        self.insert_seconds_sum += seconds
        for i, bound in enumerate(INSERT_BUCKETS):
            if seconds <= bound:
                self.insert_buckets[i] += 1

    def render(self, gauges: dict[str, tuple[str, float]], lag: float | None) -> str:
        """The exposition; ``gauges`` maps a metric name to (help, value) for state owned elsewhere,
        ``lag`` is the wait of the oldest event not yet in ClickHouse (None: none waits)."""
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP clicktrail_{name} {help_}")
            out.append(f"# TYPE clicktrail_{name} {kind}")
            out.extend(f"clicktrail_{name}{labels} {value!r}" for labels, value in samples)

        metric("events_accepted_total", "counter", "Events made durable, by site.",
               [(f'{{site="{k}"}}', v) for k, v in sorted(self.accepted.items())] or [("", 0)])
        metric("events_rejected_total", "counter", "Events or requests refused, by reason.",
               [(f'{{reason="{k}"}}', v) for k, v in sorted(self.rejected.items())] or [("", 0)])
        metric("loaded_rows_total", "counter", "Rows the loader inserted into ClickHouse (before dedup).",
               [("", self.loaded_rows)])
        metric("loader_errors_total", "counter", "Failed load attempts (retried).", [("", self.loader_errors)])
        metric("quarantined_segments_total", "counter", "Spool segments with rows ClickHouse kept refusing.",
               [("", self.quarantined_segments)])
        metric("quarantined_rows_total", "counter", "Rows ClickHouse kept refusing, set aside in the spool's "
               "quarantine/.", [("", self.quarantined_rows)])
        metric("internal_errors_total", "counter", "Unexpected failures by part, each survived (retried, or the "
               "event stored without that enrichment).",
               [(f'{{part="{k}"}}', v) for k, v in sorted(self.internal_errors.items())] or [("", 0)])
        metric("loader_lag_seconds", "gauge", "Age of the oldest event not yet in ClickHouse (0: none waiting).",
               [("", lag or 0.0)])
        cumulative = [(f'{{le="{b}"}}', n) for b, n in zip(INSERT_BUCKETS, self.insert_buckets, strict=True)]
        metric("insert_seconds", "histogram", "Latency of loader inserts into ClickHouse.",
               [*((f"_bucket{lb}", n) for lb, n in cumulative),
                ('_bucket{le="+Inf"}', self.insert_count),
                ("_sum", self.insert_seconds_sum), ("_count", self.insert_count)])
        for name, (help_, value) in gauges.items():
            metric(name, "gauge", help_, [("", value)])
        return "\n".join(out) + "\n"
