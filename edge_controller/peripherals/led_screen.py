"""LED information screen: status (on/off, brightness, content, temperature, fault) and
short texts, over TCP or a serial line, in a protocol defined by a profile.

A profile is a `ScreenProfile` subclass registered in `PROFILES`: it builds the
request frames and parses the reply frames (sans-I/O); the adapter does the
I/O. Two profiles ship (docs/peripherals.md describes them and how to add
another): `smartpole-ascii-v1` (text only; size from config; ASCII glyphs) and
`smartpole-utf8-v1` (the device reports its size, CJK glyphs, brightness and
colours; multi-line text; clear).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from edge_controller.api.commands import CommandOutcome
from edge_controller.peripherals.adapter import Adapter, Sink
from edge_controller.peripherals.config import SCREEN_PROFILES, DeviceConfig
from edge_controller.peripherals.screen_arbiter import pages, width
from edge_controller.peripherals.status import ScreenStatus

log = logging.getLogger(__name__)

MAX_FRAME = 512


class ScreenReject(Exception):
    """A reply that does not parse: `reason` is a REASONS code, the message the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class ScreenInfo:
    """What the screen can show: its size, glyphs, and what a text may set."""

    cols: int
    rows: int
    cjk: bool = False  # has East Asian glyphs (two columns each)
    brightness: bool = False  # a text may set the brightness
    colours: tuple[str, ...] = ()  # colours a text may choose; () none
    scroll: bool = False  # scrolls a text longer than the screen by itself

    def showable(self, line: str, charset: str) -> bool:
        """Whether every character of `line` has a glyph on this screen."""
        if charset == "ascii":
            return line.isascii()
        return self.cjk or width(line) == len(line)

    def layout(self, text: str) -> list[str]:
        """Pages of `text` (lines joined by \n) for this screen; one page when it scrolls."""
        if self.scroll:
            return [text]
        return pages(text, self.cols, self.rows)


class ScreenProfile(ABC):
    """A screen controller's protocol: one request, one reply frame ending in `terminator`."""

    name: ClassVar[str]
    terminator: ClassVar[bytes] = b"\n"
    # The glyphs the device has: "ascii", or "utf-8" (then ScreenInfo.cjk says whether CJK).
    charset: ClassVar[Literal["ascii", "utf-8"]] = "ascii"

    @abstractmethod
    def status_request(self) -> bytes: ...

    @abstractmethod
    def parse_status(self, frame: bytes) -> ScreenStatus:
        """The status in a reply frame; raises ScreenReject when it does not parse."""

    @abstractmethod
    def text_request(self, text: str, seconds: float, brightness: int | None = None,
                     colour: str | None = None) -> bytes:
        """Show `text` (lines joined by \n) for `seconds`; brightness and colour where the
        device has them (a profile without them ignores them)."""

    @abstractmethod
    def parse_ack(self, frame: bytes) -> str | None:
        """None when the screen accepted a command, else its error code;
        raises ScreenReject when the frame does not parse."""

    def info_request(self) -> bytes | None:
        """The request for the device's size and features; None: the device cannot
        say, the adapter uses `cols`/`rows` from config."""
        return None

    def parse_info(self, frame: bytes) -> ScreenInfo:
        raise ScreenReject("malformed_reply", f"{self.name} has no info reply")

    def clear_request(self) -> bytes | None:
        """Give the screen back to its own content now; None: the profile cannot (a text
        then ends when its display time runs out)."""
        return None


def xor_checksum(body: bytes) -> int:
    c = 0
    for b in body:
        c ^= b
    return c


class AsciiV1(ScreenProfile):
    """`smartpole-ascii-v1`: ASCII lines `BODY*HH\\r\\n`, HH the XOR of BODY's bytes in hex.

        -> STATUS?*HH
        <- STATUS on=1 bri=80 content=ad-0012 temp=41.5 fault=0*HH
        -> TEXT 10 Red light - please wait*HH
        <- OK*HH            (or ERR <code>*HH)

    `content=-` and `temp=-` mean unknown; `fault=0` means none, anything else is
    the screen's fault code (e.g. `PSU`, `E12`).
    """

    name = "smartpole-ascii-v1"

    @staticmethod
    def frame(body: str) -> bytes:
        raw = body.encode("utf-8")
        return raw + b"*%02X\r\n" % xor_checksum(raw)

    @staticmethod
    def unframe(frame: bytes) -> str:
        line = frame.rstrip(b"\r\n")
        body, star, cks = line.rpartition(b"*")
        if not star or len(cks) != 2:
            raise ScreenReject("malformed_reply", f"no *HH checksum in {frame[:60]!r}")
        try:
            want = int(cks, 16)
        except ValueError:
            raise ScreenReject("malformed_reply", f"checksum {cks!r} is not hex") from None
        if xor_checksum(body) != want:
            raise ScreenReject("malformed_reply", f"checksum mismatch in {frame[:60]!r}")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise ScreenReject("malformed_reply", "reply is not UTF-8") from None

    def status_request(self) -> bytes:
        return self.frame("STATUS?")

    def parse_status(self, frame: bytes) -> ScreenStatus:
        body = self.unframe(frame)
        head, _, rest = body.partition(" ")
        if head != "STATUS":
            raise ScreenReject("malformed_reply", f"expected STATUS, got {head[:20]!r}")
        fields: dict[str, str] = {}
        for tok in rest.split():
            k, eq, v = tok.partition("=")
            if not eq:
                raise ScreenReject("malformed_reply", f"token {tok[:20]!r} is not key=value")
            fields[k] = v
        missing = {"on", "bri", "content", "temp", "fault"} - fields.keys()
        if missing:
            raise ScreenReject("malformed_reply", f"STATUS lacks {', '.join(sorted(missing))}")
        try:
            on = {"0": False, "1": True}[fields["on"]]
            bri = int(fields["bri"])
            temp = None if fields["temp"] == "-" else float(fields["temp"])
        except (KeyError, ValueError):
            raise ScreenReject("bad_value", f"bad on/bri/temp in {body[:80]!r}") from None
        if not 0 <= bri <= 100 or (temp is not None and not math.isfinite(temp)):
            raise ScreenReject("bad_value", f"brightness {bri} or temperature {temp} "
                               "out of range")
        content = None if fields["content"] == "-" else fields["content"]
        fault = None if fields["fault"] == "0" else fields["fault"]
        return ScreenStatus(on=on, brightness=bri, content_id=content, temperature_c=temp,
                            fault=fault)

    def text_request(self, text: str, seconds: float, brightness: int | None = None,
                     colour: str | None = None) -> bytes:
        # One line: the v1 screen wraps by itself; no brightness or colour in v1.
        return self.frame(f"TEXT {max(1, round(seconds))} {' '.join(text.splitlines())}")

    def parse_ack(self, frame: bytes) -> str | None:
        body = self.unframe(frame)
        if body == "OK":
            return None
        if body.startswith("ERR"):
            return body[3:].strip() or "unspecified"
        raise ScreenReject("malformed_reply", f"expected OK or ERR, got {body[:40]!r}")


def _kv(rest: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for tok in rest.split():
        k, eq, v = tok.partition("=")
        if not eq:
            raise ScreenReject("malformed_reply", f"token {tok[:20]!r} is not key=value")
        fields[k] = v
    return fields


class Utf8V1(AsciiV1):
    """`smartpole-utf8-v1`: v1's framing and STATUS, plus INFO, multi-line text with
    brightness and colour, and CLEAR; UTF-8 text with CJK where the device has it.

        -> INFO?*HH
        <- INFO cols=24 rows=2 cjk=1 bri=1 colours=red,amber,white scroll=0*HH
        -> TEXT 8 80 red Red light: please wait\\n红灯 请勿通行*HH
        <- OK*HH            (or ERR <code>, e.g. ERR too_long, ERR charset)
        -> CLEAR*HH
        <- OK*HH

    TEXT is `TEXT <seconds> <brightness|-> <colour|-> <text>`: `-` keeps the screen's
    own; in the text `\\n` separates lines and `\\\\` is a backslash. A text must fit
    (`cols` columns, a CJK character two, `rows` lines) unless the screen scrolls.
    """

    name = "smartpole-utf8-v1"
    charset = "utf-8"

    @staticmethod
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\n", "\\n")

    @staticmethod
    def unescape(text: str) -> str:
        out, i = [], 0
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                out.append("\n" if text[i + 1] == "n" else text[i + 1])
                i += 2
                continue
            out.append(c)
            i += 1
        return "".join(out)

    def info_request(self) -> bytes:
        return self.frame("INFO?")

    def parse_info(self, frame: bytes) -> ScreenInfo:
        body = self.unframe(frame)
        head, _, rest = body.partition(" ")
        if head != "INFO":
            raise ScreenReject("malformed_reply", f"expected INFO, got {head[:20]!r}")
        f = _kv(rest)
        missing = {"cols", "rows", "cjk", "bri", "colours", "scroll"} - f.keys()
        if missing:
            raise ScreenReject("malformed_reply", f"INFO lacks {', '.join(sorted(missing))}")
        try:
            cols, rows = int(f["cols"]), int(f["rows"])
            flags = [{"0": False, "1": True}[f[k]] for k in ("cjk", "bri", "scroll")]
        except (KeyError, ValueError):
            raise ScreenReject("bad_value", f"bad INFO values in {body[:80]!r}") from None
        if not (1 <= cols <= 1024 and 1 <= rows <= 256):
            raise ScreenReject("bad_value", f"size {cols}x{rows} out of range")
        colours = () if f["colours"] == "-" else tuple(f["colours"].split(","))
        return ScreenInfo(cols, rows, flags[0], flags[1], colours, flags[2])

    def text_request(self, text: str, seconds: float, brightness: int | None = None,
                     colour: str | None = None) -> bytes:
        bri = "-" if brightness is None else str(brightness)
        return self.frame(f"TEXT {max(1, round(seconds))} {bri} {colour or '-'} "
                          f"{self.escape(text)}")

    def clear_request(self) -> bytes:
        return self.frame("CLEAR")


PROFILES: dict[str, type[ScreenProfile]] = {}


def register_profile(cls: type[ScreenProfile]) -> type[ScreenProfile]:
    """Class decorator: make a profile selectable by its name in config."""
    PROFILES[cls.name] = cls
    SCREEN_PROFILES.add(cls.name)
    return cls


register_profile(AsciiV1)
register_profile(Utf8V1)


class LedScreenAdapter(Adapter):
    kind = "led_screen"

    def __init__(self, device: DeviceConfig, sink: Sink) -> None:
        super().__init__(device, sink)
        assert device.screen is not None
        self.settings = device.screen
        try:
            self.profile = PROFILES[self.settings.profile]()
        except KeyError:
            raise ValueError(f"unknown screen profile {self.settings.profile!r} "
                             f"(known: {', '.join(sorted(PROFILES))})") from None
        self._io: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.polls = 0
        self.texts = 0
        # Size from config until (and unless) the device reports its own.
        self.info = ScreenInfo(self.settings.cols, self.settings.rows)
        self.info_from_device = False

    # ---- I/O --------------------------------------------------------------------

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, _, rest = self.settings.address.partition(":")
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            return await asyncio.open_connection(host.strip("[]"), int(port), limit=MAX_FRAME)
        import serial_asyncio_fast

        r, w = await serial_asyncio_fast.open_serial_connection(
            url=rest, baudrate=self.settings.baudrate, limit=MAX_FRAME)
        return r, w

    async def _exchange(self, request: bytes) -> bytes:
        """Send one request, return one reply frame; raises ScreenReject."""
        t = self.settings.timeout_s
        async with self._lock:
            if self._io is None:
                try:
                    self._io = await asyncio.wait_for(self._open(), t)
                except (OSError, TimeoutError) as e:
                    raise ScreenReject("port_error", f"{self.settings.address}: "
                                       f"{type(e).__name__}: {e}") from None
                except Exception as e:  # pyserial's own exceptions
                    raise ScreenReject("port_error", f"{self.settings.address}: "
                                       f"{type(e).__name__}: {e}") from None
            r, w = self._io
            try:
                w.write(request)
                await w.drain()
                return await asyncio.wait_for(r.readuntil(self.profile.terminator), t)
            except TimeoutError:
                self._reset()  # a late reply must not answer the next request
                raise ScreenReject("no_answer", f"no reply within {t} s") from None
            except asyncio.LimitOverrunError:
                self._reset()
                raise ScreenReject("malformed_reply", f"reply longer than {MAX_FRAME} "
                                   "bytes without a terminator") from None
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
                self._reset()
                raise ScreenReject("no_answer", f"connection ended: {type(e).__name__}") from None

    def _reset(self) -> None:
        if self._io is not None:
            with contextlib.suppress(Exception):
                self._io[1].close()
            self._io = None

    async def close(self) -> None:
        self._reset()

    # ---- polling ------------------------------------------------------------------

    async def poll_once(self) -> ScreenStatus | None:
        self.polls += 1
        req = self.profile.info_request()
        if req is not None and not self.info_from_device:
            # Asked until it answers: a screen that was off at start still gets laid out
            # for its own size.
            try:
                self.info = self.profile.parse_info(await self._exchange(req))
                self.info_from_device = True
                log.info("screen %s: %dx%d, cjk=%s, brightness=%s, colours=%s, scroll=%s",
                         self.device.id, self.info.cols, self.info.rows, self.info.cjk,
                         self.info.brightness, ",".join(self.info.colours) or "-",
                         self.info.scroll)
            except ScreenReject as e:
                self.sink.error(e.reason, f"INFO: {e}")
                return None
        try:
            status = self.profile.parse_status(await self._exchange(
                self.profile.status_request()))
        except ScreenReject as e:
            self.sink.error(e.reason, str(e))
            return None
        self.sink.reading(status)
        return status

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        nxt = loop.time()
        while True:
            await self.poll_once()
            nxt = max(nxt + self.device.poll_s, loop.time())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), nxt - loop.time())

    # ---- commands -----------------------------------------------------------------

    def check_text(self, text: str, seconds: float) -> CommandOutcome | None:
        """Why a backend text is refused (None: it is acceptable)."""
        s = self.settings
        if not s.text_enabled:
            return CommandOutcome("rejected", "unsupported",
                                  f"text is not enabled for {self.device.id}")
        if not text or len(text) > s.max_text_len or any(
                not ch.isprintable() for ch in text):
            return CommandOutcome("rejected", "schema", f"text must be 1..{s.max_text_len} "
                                  "printable characters")
        if not (0 < seconds <= s.max_text_s) or not math.isfinite(seconds):
            return CommandOutcome("rejected", "schema",
                                  f"seconds must be in (0, {s.max_text_s}]")
        return None

    async def show_text(self, text: str, seconds: float) -> CommandOutcome:
        refused = self.check_text(text, seconds)
        if refused is not None:
            return refused
        return await self.put(text, seconds)

    async def put(self, text: str, seconds: float, brightness: int | None = None,
                  colour: str | None = None) -> CommandOutcome:
        """Send one page as it is (already laid out and checked) for `seconds`."""
        i = self.info
        colour = colour if colour in i.colours else None
        brightness = brightness if i.brightness else None
        return await self._command(self.profile.text_request(text, seconds, brightness, colour),
                                   f"showing {len(text)} characters for {seconds:g} s on "
                                   f"{self.device.id}", text=True)

    async def clear(self) -> CommandOutcome | None:
        """Back to the screen's own content; None when the profile cannot."""
        req = self.profile.clear_request()
        if req is None:
            return None
        return await self._command(req, f"{self.device.id} shows its own content")

    async def _command(self, request: bytes, done: str, text: bool = False) -> CommandOutcome:
        try:
            err = self.profile.parse_ack(await self._exchange(request))
        except ScreenReject as e:
            self.sink.error(e.reason, str(e))
            reason = "timeout" if e.reason == "no_answer" else "device_unreachable" \
                if e.reason == "port_error" else "device_error"
            return CommandOutcome("failed", reason, str(e))
        if err is not None:
            return CommandOutcome("failed", "device_nak", f"screen refused the text: {err}")
        if text:
            self.texts += 1
        self._wake.set()  # poll now: the status shows the new content
        return CommandOutcome("ok", "done", done)


def describe_profiles() -> dict[str, Any]:
    """Name -> first line of each profile's doc (for `polectl` or docs)."""
    return {n: (c.__doc__ or "").strip().splitlines()[0] for n, c in PROFILES.items()}
