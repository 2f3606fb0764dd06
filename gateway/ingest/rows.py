"""From a validated event and its request to the row stored in ``clicktrail.events``.

``Row`` mirrors the table column for column (a test holds them together); rows are encoded as
JSONEachRow lines, which is both the spool's format and what ClickHouse reads from it.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from gateway.ingest.contract import ContractError, Event
from gateway.ingest.enrich import Agent, split_url


class Row(msgspec.Struct, omit_defaults=True):
    site_id: str
    event_id: str
    event: str
    #: Seconds since the epoch with millisecond precision: ClickHouse reads that into DateTime64(3).
    ts: float
    received_at: float
    anonymous_id: str = ""
    user_id: str = ""
    session_id: str = ""
    channel: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_content: str = ""
    utm_term: str = ""
    sharer: str = ""
    url: str = ""
    url_host: str = ""
    url_path: str = ""
    url_query: str = ""
    referrer: str = ""
    referrer_host: str = ""
    title: str = ""
    props: str = "{}"
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device_type: str = ""
    is_bot: bool = False
    ip: str = ""
    user_agent: str = ""
    #: The loader's dedup key with site_id and event_id, the same for every copy of the event (see build_row).
    #: A row without it (written by something else than build_row) takes ts.
    dedup_ts: float | None = None


class TimeWindow(NamedTuple):
    """How far from its arrival an event's (corrected) time may lie, and what to answer when it does not.

    Without it, a client could store any instant the skew correction can reach (1926, 2150): rows
    in months nobody reports on, and batches spread over more partitions than one insert may create.
    """

    past_ms: int
    future_ms: int
    too_old: str
    too_new: str

    @classmethod
    def of(cls, past_days: float, future_s: float, key: str) -> TimeWindow:
        return cls(round(past_days * 86_400_000), round(future_s * 1000),
                   f"ts: more than {past_days:g} days before the gateway received it, the limit for {key}",
                   f"ts: more than {future_s:g} s after the gateway received it; check the client's clock")


class Context(NamedTuple):
    """What one request tells about all its events."""

    site_id: str
    received_ms: int
    #: Add to a client timestamp to correct the client's clock (received_at - sent_at), 0 if unknown.
    skew_ms: int
    window: TimeWindow
    ip: str
    agent: Agent
    user_agent: str


_encoder = msgspec.json.Encoder()


def build_row(event: Event, ctx: Context, *, made_id: bool = False) -> Row:
    """The stored row; ContractError when the event's corrected time lies outside the key's window.
    ``made_id``: the gateway made the event's id, so no other request carries it."""
    if event.ts is None:
        ts_ms = ctx.received_ms
        # A retry gets another ts (the time it arrives), so the client's event_id is looked up among all the
        # site's events sent without ts (0); an id made here repeats only in the loader's retries of this row.
        dedup_ms = ts_ms if made_id else 0
    else:
        # Before the correction: the ts a client sends is the same in every retry, the corrected one is not
        # (each retry's sent_at corrects it anew, and the client's clock may have been set meanwhile).
        dedup_ms = event.ts
        ts_ms = event.ts + ctx.skew_ms
        if ts_ms < ctx.received_ms - ctx.window.past_ms:
            raise ContractError(ctx.window.too_old)
        if ts_ms > ctx.received_ms + ctx.window.future_ms:
            raise ContractError(ctx.window.too_new)
    url = split_url(event.url)
    attribution = url.params
    agent = ctx.agent
    return Row(
        site_id=ctx.site_id,
        event_id=event.event_id,
        event=event.event,
        ts=ts_ms / 1000,
        received_at=ctx.received_ms / 1000,
        anonymous_id=event.anonymous_id,
        user_id=event.user_id,
        session_id=event.session_id,
        # The event's own values win; the landing URL's fill the gaps (links carry ?ch=...&utm_...).
        channel=event.channel or attribution.get("channel", ""),
        utm_source=event.utm_source or attribution.get("utm_source", ""),
        utm_medium=event.utm_medium or attribution.get("utm_medium", ""),
        utm_campaign=event.utm_campaign or attribution.get("utm_campaign", ""),
        utm_content=event.utm_content or attribution.get("utm_content", ""),
        utm_term=event.utm_term or attribution.get("utm_term", ""),
        sharer=event.sharer or attribution.get("sharer", ""),
        url=event.url,
        url_host=url.host,
        url_path=url.path,
        url_query=url.query,
        referrer=event.referrer,
        referrer_host=split_url(event.referrer).host,
        title=event.title,
        props=event.props.decode(),
        browser=agent.browser,
        browser_version=agent.browser_version,
        os=agent.os,
        os_version=agent.os_version,
        device_type=agent.device_type,
        is_bot=agent.is_bot,
        ip=ctx.ip,
        user_agent=ctx.user_agent,
        dedup_ts=dedup_ms / 1000,
    )


def encode(rows: list[Row]) -> bytes:
    """JSONEachRow: one JSON object per line, newline-terminated."""
    return _encoder.encode_lines(rows)
