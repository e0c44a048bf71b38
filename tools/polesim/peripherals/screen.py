"""An LED screen controller speaking `smartpole-ascii-v1` or `smartpole-utf8-v1`, over TCP
or a pty serial line.

Script: `set(on=, brightness=, content_id=, temperature_c=, fault=)`,
`silent(True)` (stops answering; the connection stays open), `corrupt(n)`
(bad checksums on the next n replies), `refuse_text(True)`. Texts it was asked
to show are in `texts` (text, seconds) and, with the time, brightness and colour,
in `shown` (a CLEAR is an empty text); `showing()` is what is on it now (None:
its own content); while a text shows, the content id is `text`.

Like a device, it checks what it is sent: a text that does not fit its
`cols` x `rows` (a CJK character takes two columns) is `ERR too_long` unless it
scrolls, and one with characters it has no glyphs for is `ERR charset`
(utf8-v1 without `cjk`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from edge_controller.peripherals.led_screen import AsciiV1, ScreenReject, Utf8V1
from edge_controller.peripherals.screen_arbiter import width
from polesim.wire import PtyWire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shown:
    t: float  # time.time() when the request arrived
    text: str  # lines joined by "\n"; "" for a CLEAR
    seconds: int
    brightness: int | None = None
    colour: str | None = None


class ScreenSim:
    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 profile: str = AsciiV1.name, cols: int = 32, rows: int = 2,
                 cjk: bool = True, brightness: bool = True,
                 colours: tuple[str, ...] = ("red", "amber", "green", "white"),
                 scroll: bool = False) -> None:
        if profile not in (AsciiV1.name, Utf8V1.name):
            raise ValueError(f"ScreenSim speaks {AsciiV1.name} or {Utf8V1.name}, not {profile}")
        self.host = host
        self.port = port
        self.profile = profile
        self.cols, self.rows = cols, rows
        self.cjk, self.has_brightness, self.colours, self.scroll = cjk, brightness, colours, scroll
        self.shown: list[Shown] = []
        self._text: tuple[str, int | None] | None = None  # text and its brightness
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

    def showing(self) -> str | None:
        """The text on the screen now; None while it shows its own content."""
        if self._text is None or time.monotonic() >= self._text_until:
            return None
        return self._text[0]

    def _status_body(self) -> str:
        up = self.showing() is not None
        content = "text" if up else (self.content_id or "-")
        bri = self._text[1] if up and self._text and self._text[1] is not None \
            else self.brightness
        temp = "-" if self.temperature_c is None else f"{self.temperature_c:.1f}"
        return (f"STATUS on={int(self.on)} bri={bri} content={content} "
                f"temp={temp} fault={self.fault or '0'}")

    def _info_body(self) -> str:
        return (f"INFO cols={self.cols} rows={self.rows} cjk={int(self.cjk)} "
                f"bri={int(self.has_brightness)} colours={','.join(self.colours) or '-'} "
                f"scroll={int(self.scroll)}")

    def _fits(self, text: str) -> str | None:
        """The device's error code for a text it cannot show; None when it can."""
        if not self.cjk and width(text) != len(text):
            return "charset"
        if self.scroll:
            return None
        if self.profile == AsciiV1.name:  # one line, wrapped by the screen
            return None if width(text) <= self.cols * self.rows else "too_long"
        lines = text.split("\n")
        if len(lines) > self.rows or any(width(ln) > self.cols for ln in lines):
            return "too_long"
        return None

    def _show(self, text: str, secs: int, bri: int | None = None,
              colour: str | None = None) -> str:
        if self._refuse_text:
            return "ERR busy"
        err = self._fits(text)
        if err is not None:
            return f"ERR {err}"
        self.texts.append((text, secs))
        self.shown.append(Shown(time.time(), text, secs, bri, colour))
        self._text = (text, bri)
        self._text_until = time.monotonic() + secs
        return "OK"

    def _utf8_text(self, rest: str) -> str:
        secs, bri, colour, text = [*rest.split(" ", 3), "", "", ""][:4]
        if not secs.isdigit() or not text:
            return "ERR syntax"
        b: int | None = None
        if bri != "-":
            if not bri.isdigit() or not 0 <= int(bri) <= 100:
                return "ERR syntax"
            b = int(bri) if self.has_brightness else None
        c = colour if colour != "-" and colour in self.colours else None
        return self._show(Utf8V1.unescape(text), int(secs), b, c)

    def answer(self, frame: bytes) -> bytes | None:
        self.requests += 1
        try:
            body = AsciiV1.unframe(frame)
        except ScreenReject:
            return AsciiV1.frame("ERR checksum")
        utf8 = self.profile == Utf8V1.name
        if body == "STATUS?":
            out = self._status_body()
        elif body == "INFO?" and utf8:
            out = self._info_body()
        elif body == "CLEAR" and utf8:
            self._text_until = 0.0
            self.shown.append(Shown(time.time(), "", 0))
            out = "OK"
        elif body.startswith("TEXT ") and utf8:
            out = self._utf8_text(body[5:])
        elif body.startswith("TEXT "):
            _, secs, text = [*body.split(" ", 2), ""][:3]
            if not secs.isdigit() or not text:
                out = "ERR busy" if self._refuse_text else "ERR syntax"
            else:
                out = self._show(text, int(secs))
        else:
            out = "ERR unknown"
        good = AsciiV1.frame(out)  # the same framing in both profiles
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
