"""Who may send what: write keys to sites, allowed origins, and rate limits."""

from __future__ import annotations

import hmac
import time
from typing import NamedTuple

from gateway.config import SiteConfig


class Credential(NamedTuple):
    site: SiteConfig
    #: ``write`` (public, browsers) or ``secret`` (backend services).
    kind: str


class Sites:
    def __init__(self, sites: list[SiteConfig]) -> None:
        self._by_key: dict[str, Credential] = {}
        for site in sites:
            self._by_key[site.write_key] = Credential(site, "write")
            if site.secret_key:
                self._by_key[site.secret_key] = Credential(site, "secret")
        self._limits = {s.id: TokenBucket(s.rate_limit) for s in sites if s.rate_limit > 0}
        # A preflight carries no key, so it is answered for any origin some site allows.
        self._any_origin = any("*" in s.allowed_origins for s in sites)
        self._site_origins = {s.id: frozenset(o.rstrip("/") for o in s.allowed_origins) for s in sites}
        self._origins = frozenset().union(*self._site_origins.values())

    def authenticate(self, key: str) -> Credential | None:
        found = self._by_key.get(key)
        # The dict finds the candidate; compare_digest keeps the final check constant-time.
        if found is None or not hmac.compare_digest(key, _key_of(found)):
            return None
        return found

    def origin_allowed(self, site: SiteConfig, origin: str) -> bool:
        """Requests without an Origin (servers, the pixel in mail clients) are not browsers' cross-site calls."""
        if not origin:
            return True
        allowed = self._site_origins[site.id]
        return "*" in allowed or origin.rstrip("/") in allowed

    def preflight_allowed(self, origin: str) -> bool:
        return self._any_origin or origin.rstrip("/") in self._origins

    def admit(self, site: SiteConfig, events: int) -> float:
        """0 if the site may send ``events`` now, else the seconds to wait."""
        bucket = self._limits.get(site.id)
        return 0.0 if bucket is None else bucket.take(events)


def _key_of(credential: Credential) -> str:
    return credential.site.write_key if credential.kind == "write" else credential.site.secret_key


class TokenBucket:
    """``rate`` tokens a second, bursts up to two seconds' worth.

    A request larger than the burst is let through when the bucket is full and leaves it in debt,
    so a big batch is slowed down, never refused forever.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate * 2, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self, n: int) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(n, self.capacity)
        if self.tokens >= needed:
            self.tokens -= n
            return 0.0
        return (needed - self.tokens) / self.rate


class IpLimiter:
    """Requests per second per client address; buckets of idle clients are forgotten."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._swept = time.monotonic()

    def admit(self, ip: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        if now - self._swept > 60:
            self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < 60}
            self._swept = now
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = self._buckets[ip] = TokenBucket(self.rate)
        return bucket.take(1)
