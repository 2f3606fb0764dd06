"""The real gateway with faults switched on and off from outside while it runs:
``python -m tests.faults serve --config DIR/clicktrail.toml``.

A fault is on while a file of its name exists in ``DIR/faults/`` (next to the config):
- ``write``, ``fsync``: the spool's write() / fdatasync() fail with EIO (a failing disk);
- ``hang``: the spool's fdatasync() blocks for as long as the file exists (a hung disk);
- ``rename``: renames in the spool fail with EIO (sealing segments);
- ``listing``: listing the spool fails with EMFILE (file descriptors exhausted by connections);
- ``insert``: every ClickHouse insert fails with an error of a kind the loader has never seen;
- ``stall``: ClickHouse inserts block for as long as the file exists (a stuck engine);
- ``poison``: inserts holding an event whose id starts with ``poison-`` fail the same way, always;
- ``enrich``: User-Agent parsing raises;
- ``accept``: encoding accepted rows raises (a bug on the request path).
Everything else is the gateway as shipped: these wrap the operating system's and the engine's
calls at the seams where those faults happen, and nothing of the code under test.
"""

from __future__ import annotations

import errno
import os
import pathlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gateway.ingest.receive
import gateway.ingest.spool
import gateway.warehouse.store
from gateway.__main__ import main


def _on(name: str) -> bool:
    return (FAULTS / name).exists()


def _failing(name: str, code: int, real: Callable[..., Any], applies: Callable[..., bool] = lambda *a: True
             ) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if _on(name) and applies(*args):
            raise OSError(code, f"{os.strerror(code)} (injected: {name})")
        return real(*args, **kwargs)
    return call


class _SpoolOs:
    """The os module as the spool sees it."""

    write = staticmethod(_failing("write", errno.EIO, os.write))

    @staticmethod
    def fdatasync(fd: int) -> None:
        while _on("hang"):
            time.sleep(0.05)
        _failing("fsync", errno.EIO, os.fdatasync)(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def _in_spool(path: pathlib.Path, *_: Any) -> bool:
    return "spool" in path.parts


def _poisoned(_store: Any, segments: list[Path]) -> bool:
    return any(b'"event_id":"poison-' in s.read_bytes() for s in segments)


def _stalling(real: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        while _on("stall"):
            time.sleep(0.05)
        return real(*args, **kwargs)
    return call


def _unexpected(name: str, real: Callable[..., Any], applies: Callable[..., bool] = lambda *a: True
                ) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if _on(name) and applies(*args):
            raise RuntimeError(f"injected: {name}")
        return real(*args, **kwargs)
    return call


if __name__ == "__main__":
    FAULTS = Path(sys.argv[sys.argv.index("--config") + 1]).resolve().parent / "faults"
    gateway.ingest.spool.os = _SpoolOs()  # type: ignore[assignment]
    pathlib.Path.rename = _failing("rename", errno.EIO, pathlib.Path.rename, _in_spool)  # type: ignore[method-assign]
    pathlib.Path.glob = _failing("listing", errno.EMFILE, pathlib.Path.glob, _in_spool)  # type: ignore[method-assign]
    store = gateway.warehouse.store.Store
    inserts = _stalling(_unexpected("insert", store.insert_segments))
    store.insert_segments = _unexpected("poison", inserts, _poisoned)  # type: ignore[method-assign]
    gateway.ingest.receive.parse_user_agent = _unexpected("enrich", gateway.ingest.receive.parse_user_agent)
    gateway.ingest.receive.rows.encode = _unexpected("accept", gateway.ingest.receive.rows.encode)
    sys.exit(main(sys.argv[1:]))
