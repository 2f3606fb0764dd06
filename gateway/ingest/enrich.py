"""Enrichment: what the gateway adds to an event from the request that carried it.

Everything here runs on the request path, so the costly parts (User-Agent parsing takes about a
millisecond) are cached, and per-request work is done once per request, not once per event.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

import user_agents
from starlette.types import Scope


class Agent(NamedTuple):
    browser: str
    browser_version: str
    os: str
    os_version: str
    device_type: str
    is_bot: bool


#: What is stored when there is no User-Agent, or it could not be parsed.
NO_AGENT = Agent("", "", "", "", "other", False)


@lru_cache(maxsize=8192)
def parse_user_agent(header: str) -> Agent:
    """Browser, OS and device class; a browser population has few distinct strings, so the cache hits."""
    if not header:
        return NO_AGENT
    ua = user_agents.parse(header)
    if ua.is_bot:
        device = "bot"
    elif ua.is_tablet:
        device = "tablet"
    elif ua.is_mobile:
        device = "mobile"
    elif ua.is_pc:
        device = "desktop"
    else:
        device = "other"
    return Agent(
        ua.browser.family,
        ua.browser.version_string,
        ua.os.family,
        ua.os.version_string,
        device,
        ua.is_bot,
    )


@lru_cache(maxsize=65536)
def anonymize_ip(address: str) -> str:
    """Zero the host part (last octet of IPv4, last 80 bits of IPv6), as web analytics under PIPL/GDPR expect.

    An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d: it is taken as the IPv4 address it is, whose
    /48 would be ``::`` (nothing left to count or locate)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def client_ip(scope: Scope, trusted_proxy_hops: int) -> str:
    """The client's address: the peer's, or behind ``trusted_proxy_hops`` proxies we run, the
    X-Forwarded-For entry the outermost of them added.

    Each proxy appends the address it received the request from, so the last ``trusted_proxy_hops``
    entries are our proxies' and whatever stands left of them the client wrote itself (nginx's
    real_ip_header with set_real_ip_from, counted in hops). With fewer entries than hops the request
    skipped the outer proxies, and the leftmost entry is still one of ours. An entry that is not an
    address (a proxy misconfigured) is not taken: the peer is.
    """
    client = scope.get("client")
    peer = client[0] if client else ""
    if trusted_proxy_hops <= 0:
        return peer
    # Several header lines are one comma-separated list, in order (RFC 9110, 5.3).
    forwarded = b",".join(value for name, value in scope["headers"] if name == b"x-forwarded-for")
    if not forwarded:
        return peer
    entries = forwarded.rsplit(b",", trusted_proxy_hops)
    try:
        return str(ipaddress.ip_address(entries[-min(trusted_proxy_hops, len(entries))].strip().decode()))
    except (UnicodeDecodeError, ValueError):
        return peer


class UrlParts(NamedTuple):
    host: str
    path: str
    query: str
    #: Attribution parameters found in the query (``ch``, ``utm_*``, ``sharer``).
    params: dict[str, str]


#: Query parameters that carry attribution, and the event field each fills when the event lacks it.
URL_FIELDS = {
    "ch": "channel",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_content": "utm_content",
    "utm_term": "utm_term",
    "sharer": "sharer",
}


@lru_cache(maxsize=8192)
def split_url(url: str) -> UrlParts:
    """Host, path and query of a URL, and the attribution parameters in its query.

    Cached because one page's events (page_view, heartbeats, page_leave) repeat the same URL.
    """
    if not url:
        return UrlParts("", "", "", {})
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return UrlParts("", "", "", {})
    params: dict[str, str] = {}
    if parts.query:
        for name, value in parse_qsl(parts.query):
            field = URL_FIELDS.get(name)
            if field and value and field not in params:
                params[field] = value[:200]
    return UrlParts(host, parts.path, parts.query, params)
