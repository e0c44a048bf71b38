"""A serial port that stops draining (nobody reads the other end of a real pty) must not
grow the link's output buffer without bound: past WRITE_BUFFER_MAX output is dropped and
counted, and the session's retries recover once the port drains again."""

from __future__ import annotations

import asyncio
import os

import pytest

from edge_controller.link import client as link_client
from edge_controller.link.client import LinkClient
from edge_controller.link.config import LinkConfig


async def test_a_port_that_does_not_drain_leaves_the_buffer_at_its_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bound = 2048
    monkeypatch.setattr(link_client, "WRITE_BUFFER_MAX", bound)
    master, slave = os.openpty()  # the master end is never read: the kernel's buffer fills
    try:
        # A heartbeat every ms and hellos every 10 ms: about 7 KB/s of output, so the
        # kernel's pty buffer fills in seconds instead of the hours 1 s heartbeats take.
        cfg = LinkConfig(port=os.ttyname(slave), heartbeat_s=0.001, hello_timeout_s=0.01)
        c = LinkClient(cfg, "test", lambda ev: None)
        task = asyncio.create_task(c.run())
        try:
            async with asyncio.timeout(60):
                while c.dropped_bytes == 0:  # noqa: ASYNC110 - polls a counter
                    await asyncio.sleep(0.05)
            sizes = []
            for _ in range(20):
                await asyncio.sleep(0.02)
                assert c._writer is not None
                sizes.append(c._writer.transport.get_write_buffer_size())
            dropped = c.dropped_bytes
            await asyncio.sleep(0.2)
            assert c.dropped_bytes > dropped  # still dropping, not buffering
            # one pump's output (a few frames) may land on top of the bound, no more
            assert max(sizes) <= bound + 512, sizes
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        os.close(master)
        os.close(slave)
