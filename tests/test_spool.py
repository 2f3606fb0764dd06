"""The spool on its own: group commit when a request goes away mid-commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.spool import Spool


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
