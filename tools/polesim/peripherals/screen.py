"""An LED screen controller speaking `smartpole-ascii-v1`, over TCP or a pty serial line.

Script: `set(on=, brightness=, content_id=, temperature_c=, fault=)`,
`silent(True)` (stops answering; the connection stays open), `corrupt(n)`
(bad checksums on the next n replies), `refuse_text(True)`. Texts it was asked
to show are in `texts`; while one shows, the content id is `text`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from edge_controller.peripherals.led_screen import AsciiV1, ScreenReject
from polesim.wire import PtyWire

log = logging.getLogger(__name__)


class ScreenSim:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.on = True
        self.brightness = 80
        self.content_id: str | None = "welcome"
        self.temperature_c: float | None = 35.0
        self.fault: str | None = None
        self.texts: list[tuple[str, int]] = []
        self.requests = 0
        self._silent = False
        self._corrupt = 0
        self._refuse_text = False
        self._text_until = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.wire: PtyWire | None = None

    @property
    def address(self) -> str:
        """The controller's `screen.address` for the transport that was started."""
        if self.wire is not None:
            return f"serial:{self.wire.ctl_path}"
        return f"tcp:{self.host}:{self.port}"

    async def start(self) -> ScreenSim:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def start_serial(self) -> ScreenSim:
        """Serve on a pty "serial line" instead of TCP (`address` says serial:PATH)."""
        import serial_asyncio_fast

        self.wire = PtyWire()
        r, w = await serial_asyncio_fast.open_serial_connection(url=self.wire.fw_path,
                                                                baudrate=9600)
        t = asyncio.create_task(self._client(r, w))
        self._tasks.add(t)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        if self.wire is not None:
            self.wire.close()

    # ---- script ---------------------------------------------------------------------

    def set(self, *, on: bool | None = None, brightness: int | None = None,
            content_id: str | None = None, temperature_c: float | None = None,
            fault: str | None = "") -> None:
        if on is not None:
            self.on = on
        if brightness is not None:
            self.brightness = brightness
        if content_id is not None:
            self.content_id = content_id
        if temperature_c is not None:
            self.temperature_c = temperature_c
        if fault != "":
            self.fault = fault

    def silent(self, on: bool = True) -> None:
        self._silent = on

    def corrupt(self, n: int = 1) -> None:
        self._corrupt += n

    def refuse_text(self, on: bool = True) -> None:
        self._refuse_text = on

    # ---- protocol -------------------------------------------------------------------

    def _status_body(self) -> str:
        content = "text" if time.monotonic() < self._text_until else (self.content_id or "-")
        temp = "-" if self.temperature_c is None else f"{self.temperature_c:.1f}"
        return (f"STATUS on={int(self.on)} bri={self.brightness} content={content} "
                f"temp={temp} fault={self.fault or '0'}")

    def answer(self, frame: bytes) -> bytes | None:
        self.requests += 1
        try:
            body = AsciiV1.unframe(frame)
        except ScreenReject:
            return AsciiV1.frame("ERR checksum")
        if body == "STATUS?":
            out = self._status_body()
        elif body.startswith("TEXT "):
            _, secs, text = [*body.split(" ", 2), ""][:3]
            if self._refuse_text:
                out = "ERR busy"
            elif not secs.isdigit() or not text:
                out = "ERR syntax"
            else:
                self.texts.append((text, int(secs)))
                self._text_until = time.monotonic() + int(secs)
                out = "OK"
        else:
            out = "ERR unknown"
        good = AsciiV1.frame(out)
        if self._corrupt:  # flip the checksum
            self._corrupt -= 1
            return good[:-4] + b"%02X\r\n" % (int(good[-4:-2], 16) ^ 0xFF)
        return good

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._writers.add(w)
        try:
            while True:
                try:
                    line = await r.readuntil(b"\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ConnectionError):
                    return
                if self._silent:
                    continue
                reply = self.answer(line)
                if reply is not None:
                    w.write(reply)
                    await w.drain()
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.close()
