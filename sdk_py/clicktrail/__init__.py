"""Clicktrail's Python SDK: server-side events for a Clicktrail gateway.

    import clicktrail

    clicktrail.init("sk_...", host="http://127.0.0.1:8000")
    clicktrail.registration("webinar-2026-12", user_id="u-42", channel="wechat_group_7")
    clicktrail.lead_stage("u-42", "mql")

or, with a client of your own (also a context manager that shuts down on leaving)::

    with clicktrail.Client("sk_...", host="http://127.0.0.1:8000") as client:
        client.track("webinar_poll", anonymous_id="a-1", props={"answer": "B"})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from clicktrail.client import DEFAULT_HOST, Client, Fields, OtherFields
from clicktrail.contract import RESERVED_EVENTS, ContractError
from clicktrail.outcome import Failure, Stats
from clicktrail.version import VERSION

__version__ = VERSION
__all__ = [
    "DEFAULT_HOST",
    "RESERVED_EVENTS",
    "Client",
    "ContractError",
    "Failure",
    "Fields",
    "OtherFields",
    "Stats",
    "default_client",
    "flush",
    "identify",
    "init",
    "lead_stage",
    "live_heartbeat",
    "page",
    "registration",
    "shutdown",
    "track",
]

_default: Client | None = None


def init(key: str, host: str = DEFAULT_HOST, **options: Any) -> Client:
    """Make the module-level client that ``clicktrail.track()`` and the others use; options as for :class:`Client`.

    Calling it again replaces the client, after shutting the previous one down (so it is flushed).
    """
    global _default
    previous, _default = _default, Client(key, host, **options)
    if previous is not None:
        previous.shutdown()
    return _default


def default_client() -> Client:
    """The client :func:`init` made; RuntimeError before that, since events would have nowhere to go."""
    if _default is None:
        raise RuntimeError("clicktrail: call clicktrail.init(key, host=...) before sending events")
    return _default


P = ParamSpec("P")
R = TypeVar("R")


def _on_default(method: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    """The method as a module function that calls it on the default client, with its signature and docs."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(default_client(), *args, **kwargs)

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = method.__doc__
    return call


track = _on_default(Client.track)
page = _on_default(Client.page)
identify = _on_default(Client.identify)
registration = _on_default(Client.registration)
live_heartbeat = _on_default(Client.live_heartbeat)
lead_stage = _on_default(Client.lead_stage)
flush = _on_default(Client.flush)
shutdown = _on_default(Client.shutdown)
