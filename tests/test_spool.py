"""The spool on its own: group commit when a request goes away mid-commit, and the free disk space it keeps."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.ingest.spool import Spool, SpoolUnavailable


def test_a_cancelled_request_does_not_stop_the_rest_of_its_group(tmp_path: Path) -> None:
    async def scenario() -> list[bytes]:
        spool = Spool(tmp_path, fsync="always")
        spool.recover()
        await spool.start()
        gone = asyncio.create_task(spool.append(b'{"n":1}\n'))
        kept = asyncio.create_task(spool.append(b'{"n":2}\n'))
        await asyncio.sleep(0)  # both are waiting on the same group commit
        gone.cancel()  # its client disconnected
        await asyncio.wait_for(kept, 5)
        later = asyncio.create_task(spool.append(b'{"n":3}\n'))
        await asyncio.wait_for(later, 5)  # the committer is still alive for the next group
        await spool.close()
        return [p.read_bytes() for p in spool.sealed()]

    # Cancelling the wait does not unwrite the line: the spool keeps what it was given.
    assert b"".join(asyncio.run(scenario())) == b'{"n":1}\n{"n":2}\n{"n":3}\n'


def test_events_are_refused_below_the_free_space_kept_and_taken_once_it_is_back(tmp_path: Path) -> None:
    """The judgement alone, on whatever disk the tests run (tests/test_faults.py fills a real small one)."""
    stat = os.statvfs(tmp_path)
    free = stat.f_bavail * stat.f_frsize

    async def scenario() -> None:
        spool = Spool(tmp_path, min_free_bytes=free + (1 << 30), segment_max_age_ms=100)
        spool.recover()
        await spool.start()
        assert spool.refusing is not None and "min_free_disk_bytes" in spool.refusing
        with pytest.raises(SpoolUnavailable, match="MiB free on disk"):
            await spool.append(b'{"n":1}\n')
        spool.min_free_bytes = 0  # as if the loader had freed space: the next look sees it
        await asyncio.sleep(0.2)
        assert spool.refusing is None
        await asyncio.wait_for(spool.append(b'{"n":2}\n'), 5)
        await spool.close()

    asyncio.run(scenario())
