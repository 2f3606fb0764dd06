"""The health of the gateway's background parts (committer, sealer, loader, ...).

A background part must never die silently: it catches whatever goes wrong, reports it here, and
tries again. Each report is logged, counted in ``/metrics``, and keeps ``/readyz`` at 503 until the
part's next success, so a fault that stops loading is visible the moment it starts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger("clicktrail.health")

#: While a part keeps failing, one log line per this many seconds.
LOG_EVERY_S = 10.0


class Part:
    """One background part: whether its last attempt failed, and why."""

    def __init__(self, name: str, errors: Counter[str]) -> None:
        self.name = name
        self._errors = errors
        #: The last failure's one-line description while the part is failing, else None.
        self.error: str | None = None
        #: time.monotonic() of the first failure of the current run of failures.
        self.failing_since: float | None = None
        self._logged = 0.0

    def failed(self, exc: BaseException, then: str = "retrying") -> None:
        """Record, count and log a failure; ``then`` says what happens next, for the log."""
        self._errors[self.name] += 1
        first = self.error is None
        self.error = short(exc)
        now = time.monotonic()
        if first:
            self.failing_since = now
        elif now - self._logged < LOG_EVERY_S:
            return  # a part retrying every 100 ms must not flood the log; /metrics counts every failure
        self._logged = now
        # The whole traceback once per run of failures (a bug shows where it is); one line after that.
        log.error("%s failed (%s): %s", self.name, then, self.error, exc_info=exc if first else None)

    def ok(self) -> None:
        if self.error is not None:
            log.info("%s recovered after %.1fs", self.name, time.monotonic() - (self.failing_since or 0.0))
        self.error = None
        self.failing_since = None


def short(exc: BaseException) -> str:
    """The first line of an exception's text (ClickHouse's run to pages), or its type."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
