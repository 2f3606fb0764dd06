"""Who may send what: write keys to sites, allowed origins, and rate limits."""

from __future__ import annotations

import hmac
import time
from itertools import islice
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
        self._site_origins = {s.id: frozenset(o.rstrip("/") for o in s.allowed_origins) for s in sites}
        self._origins = frozenset().union(*self._site_origins.values())

    def authenticate(self, key: str) -> Credential | None:
        found = self._by_key.get(key)
        # The dict finds the candidate; compare_digest keeps the final check constant-time. Bytes: on str it
        # takes ASCII only (TypeError), and a key in the config may be any text.
        if found is None or not hmac.compare_digest(key.encode(), _key_of(found).encode()):
            return None
        return found

    def origin_allowed(self, site: SiteConfig, origin: str) -> bool:
        """Requests without an Origin (servers, the pixel in mail clients) are not browsers' cross-site calls."""
        if not origin:
            return True
        allowed = self._site_origins[site.id]
        return "*" in allowed or origin.rstrip("/") in allowed

    def cors_origin(self, site: SiteConfig | None, origin: str) -> str | None:
        """The Access-Control-Allow-Origin that answers ``origin``: the origin itself where ``site`` lists it,
        ``*`` where the site allows any, else None. Without a site (a preflight carries no key, and a request
        may be refused before its key is read), any site's origins count.

        Only an ASCII origin is echoed (browsers send IDN hosts in punycode), so the answer's header always
        encodes; ``*`` echoes nothing of the caller's.
        """
        allowed = self._origins if site is None else self._site_origins[site.id]
        if origin.isascii() and origin.rstrip("/") in allowed:
            return origin
        return "*" if "*" in allowed and origin else None

    def admit(self, site: SiteConfig, events: int) -> float:
        """0 if the site may send ``events`` now, else the seconds to wait."""
        bucket = self._limits.get(site.id)
        return 0.0 if bucket is None else bucket.take(events)


def _key_of(credential: Credential) -> str:
    return credential.site.write_key if credential.kind == "write" else credential.site.secret_key


class TokenBucket:
    """``rate`` tokens a second, bursts up to ``capacity`` (default: two seconds' worth).

    A request larger than the burst is let through when the bucket is full and leaves it in debt,
    so a big batch is slowed down, never refused forever.
    """

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity or max(rate * 2, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def wait(self, n: float) -> float:
        """0 if ``n`` tokens (at most a full bucket) are there now, else the seconds until they are; takes none."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(n, self.capacity)
        return 0.0 if self.tokens >= needed else (needed - self.tokens) / self.rate

    def take(self, n: int) -> float:
        wait = self.wait(n)
        if not wait:
            self.tokens -= n
        return wait

    def idle(self, now: float) -> bool:
        """Full again by ``now``: no different from a new bucket, so it may be forgotten."""
        return self.tokens + (now - self.updated) * self.rate >= self.capacity


class AddressBuckets:
    """A token bucket per client address, created full on first use.

    Memory stays bounded however many addresses come by: buckets full again (no different from new
    ones) are forgotten at a sweep, once a minute or when MAX_ADDRESSES are held. A sweep keeps at most
    three quarters of that, the newest, so that a map full of busy addresses is not swept again at the
    next new one; dropping a busy bucket only forgives its address.
    """

    MAX_ADDRESSES = 100_000

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity
        self._buckets: dict[str, TokenBucket] = {}
        self._swept = time.monotonic()

    def get(self, address: str) -> TokenBucket | None:
        return self._buckets.get(address)

    def bucket(self, address: str) -> TokenBucket:
        found = self._buckets.get(address)
        if found is not None:
            return found
        now = time.monotonic()
        if now - self._swept > 60 or len(self._buckets) >= self.MAX_ADDRESSES:
            self._swept = now
            busy = {k: b for k, b in self._buckets.items() if not b.idle(now)}
            self._buckets = dict(islice(busy.items(), max(0, len(busy) - self.MAX_ADDRESSES * 3 // 4), None))
        bucket = self._buckets[address] = TokenBucket(self.rate, self.capacity)
        return bucket


class IpLimiter:
    """Requests per second per client address (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self._buckets = AddressBuckets(rate) if rate > 0 else None

    def admit(self, ip: str) -> float:
        return 0.0 if self._buckets is None else self._buckets.bucket(ip).take(1)


class AuthThrottle:
    """Failed authentications per client address: ``limit`` of them within ``window_s``, then the address
    is refused, without its key being checked, until its failures age out (one every window_s / limit).

    A guesser gets ``limit`` tries and then one per window_s / limit seconds (10 in a minute by default,
    against the thousands a second the ports answer); a correct key from another address is unaffected.
    Callers check, try the key and record a failure without an ``await`` between, or concurrent guesses
    from one address could all pass the check before the first failure counts.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self._failures = AddressBuckets(limit / window_s, float(limit))

    def wait(self, address: str) -> float:
        """0 if ``address`` may try a key now, else the seconds until it may."""
        bucket = self._failures.get(address)
        return 0.0 if bucket is None else bucket.wait(1)

    def failed(self, address: str) -> None:
        self._failures.bucket(address).take(1)
