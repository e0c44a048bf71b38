"""Asyncio adapter around LinkSession: the serial port, the clock, and awaitables."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import serial_asyncio_fast

from edge_controller.link.config import LinkConfig
from edge_controller.link.session import LinkEvent, LinkSession, Outcome

log = logging.getLogger(__name__)


# Bytes left unsent in the port's buffer beyond which output is dropped (and counted):
# a port that stops draining (a hung USB bridge, flow control held, a simulator's pty
# with no reader) would otherwise grow it by every heartbeat and retry for as long as it
# lasts. 64 KiB is over 5 s of output at 115,200 baud; the session's retries and
# timeouts recover what is dropped.
WRITE_BUFFER_MAX = 64 * 1024


class LinkIncompatibleError(RuntimeError):
    """The firmware speaks another major version of the link protocol."""


class LinkClient:
    def __init__(
        self, cfg: LinkConfig, ctl_version: str, on_event: Callable[[LinkEvent], None]
    ) -> None:
        self.cfg = cfg
        self.session = LinkSession(
            ctl_version=ctl_version,
            ack_timeout_s=cfg.ack_timeout_s,
            retries=cfg.retries,
            heartbeat_s=cfg.heartbeat_s,
            hello_timeout_s=cfg.hello_timeout_s,
            lost_after_s=cfg.lost_after_s,
        )
        self._on_event = on_event
        self._waiters: dict[int, asyncio.Future[Outcome]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._wake = asyncio.Event()
        self.dropped_bytes = 0  # output dropped because the port did not drain

    @property
    def up(self) -> bool:
        return self.session.up

    async def run(self) -> None:
        """Task body: open the port and pump bytes until it fails (the supervisor restarts)."""
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=self.cfg.port, baudrate=self.cfg.baudrate
        )
        self._writer = writer
        log.info("link: opened %s at %d baud", self.cfg.port, self.cfg.baudrate)
        try:
            self.session.start(time.monotonic())
            self._pump()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(reader), name="link.read")
                tg.create_task(self._tick_loop(), name="link.tick")
        finally:
            self._writer = None
            self.session.up = False
            writer.close()
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_result(Outcome(0, False, "link_down"))
            self._waiters.clear()

    async def command(self, name: str, values: tuple[object, ...]) -> Outcome:
        token = self.session.command(name, values, time.monotonic())
        return await self._await(token)

    async def request(self, name: str, values: tuple[object, ...] = ()) -> Outcome:
        token = self.session.request(name, values, time.monotonic())
        return await self._await(token)

    async def _await(self, token: int) -> Outcome:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[token] = fut
        if self._writer is None:
            self._waiters.pop(token)
            self.session.take_events()
            return Outcome(token, False, "link_down")
        self._pump()
        self._wake.set()  # the tick loop re-plans its sleep around the new deadline
        return await fut

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(4096)
            if not data:
                raise ConnectionError(f"serial port {self.cfg.port} closed")
            self.session.receive(data, time.monotonic())
            self._pump()

    async def _tick_loop(self) -> None:
        while True:
            delay = max(0.0, self.session.next_deadline() - time.monotonic())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 1.0))
            self.session.tick(time.monotonic())
            self._pump()
            if self.session.incompatible:
                raise LinkIncompatibleError(self.session.incompatible)

    def _pump(self) -> None:
        out = self.session.take_outgoing()
        if out and self._writer is not None:
            if self._writer.transport.get_write_buffer_size() > WRITE_BUFFER_MAX:
                if not self.dropped_bytes:
                    log.warning("link: %s is not draining (over %d bytes unsent); dropping "
                                "output until it does", self.cfg.port, WRITE_BUFFER_MAX)
                self.dropped_bytes += len(out)
            else:
                self._writer.write(out)
        for ev in self.session.take_events():
            if ev.kind == "outcome" and ev.outcome is not None:
                fut = self._waiters.pop(ev.outcome.token, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev.outcome)
                continue
            try:
                self._on_event(ev)
            except Exception:  # a consumer bug must not kill the link
                log.exception("link event handler failed on %s", ev.kind)
