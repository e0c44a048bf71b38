# Simulated board for the MicroPython unix port: the link UART is a pty,
# the hardware is a set of variables that a test drives through a second
# pty ("panel") with JSON lines. See docs/firmware.md, "Sim panel".

import asyncio
import gc
import json
import termios
from time import sleep_ms, ticks_diff, ticks_ms

from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from halapi import Hal as _HalApi

_VMIN = const(6)  # Linux termios c_cc indices (the unix port has no names)
_VTIME = const(5)
_RATED_W = 60.0  # a typical 60 W LED street luminaire
_MAX_LINE = const(512)

# Panel "set" keys: (name, index into Hal.v, max for ints or 0 for floats).
# One list of values rather than an attribute each: every attribute name is
# a qstr, and past a threshold the qstr pool doubles on the 64K heap.
_SET_KEYS = (("lux", 0, 0), ("temp_c", 1, 0), ("tilt_deg", 2, 0), ("door", 3, 1),
             ("mains", 4, 1), ("din", 5, 0xFFFF), ("power_scale", 6, 0))
_LUX = const(0)
_TEMP = const(1)
_TILT = const(2)
_DOOR = const(3)
_MAINS = const(4)
_DIN = const(5)
_PSCALE = const(6)  # lamp faults: 0 = a dead lamp, 2 = drawing double
# Internal state in the same list (same reason): lamp power, energy, when the
# energy was last integrated, watchdog timeout and last feed, board id.
_P = const(7)
_WH = const(8)
_T_E = const(9)
_WDT_MS = const(10)
_T_WDT = const(11)
_BOARD = const(12)


def _open_raw(path: str) -> "Any":
    f = open(path, "r+b")
    fd = f.fileno()
    termios.setraw(fd)
    a = termios.tcgetattr(fd)
    # Non-blocking reads: without this, read(n) waits until n bytes arrive.
    a[6][_VMIN] = 0
    a[6][_VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, a)
    return f


class Hal:
    def __init__(self, link_path: str, panel_path: str, settings_path: str | None = None,
                 board: str = "sim-00000001") -> None:
        self.link = _open_raw(link_path)
        self._panel = _open_raw(panel_path)
        # [file path or None, text kept in memory when there is no file]
        self.settings: "list[str | None]" = [settings_path, None]
        self.app: "Any" = None
        self.duty = 0
        self.amp_on = False
        now = ticks_ms()
        # _SET_KEYS order, then _P .. _BOARD
        self.v: "list[Any]" = [500.0, 25.0, 0.0, 0, 1, 0, 1.0, 0.0, 0.0, now, 0, now, board]
        self.wdt_feeds = 0
        self.wdt_bites = 0
        self.resets = 0
        self._t0 = ticks_ms()  # log timestamps: ms since the sim started

    # ---- HAL interface --------------------------------------------------

    def board_id(self) -> str:
        return str(self.v[_BOARD])

    def link_write(self, buf: bytes) -> None:
        mv = memoryview(buf)
        off = 0
        while off < len(buf):
            n = self.link.write(mv[off:])
            off += n if n else 0

    def _energy(self) -> None:
        # Exact piecewise integration: called before every power change.
        now = ticks_ms()
        v = self.v
        v[_WH] += self.power_w() * ticks_diff(now, v[_T_E]) / 3600000.0
        v[_T_E] = now

    def lamp(self, duty: int, level_c: int) -> None:
        self._energy()  # close the interval at the old power
        self.duty = duty
        # A constant-current driver's power follows the PWM duty.
        self.v[_P] = _RATED_W * duty / 65535.0

    def amp(self, on: bool) -> None:
        self.amp_on = on

    def lux(self) -> float:
        return float(self.v[_LUX])

    def temp_c(self) -> float:
        return float(self.v[_TEMP])

    def door(self) -> int:
        return int(self.v[_DOOR])

    def tilt_deg(self) -> float:
        return float(self.v[_TILT])

    def mains(self) -> int:
        return int(self.v[_MAINS])

    def din(self) -> int:
        return int(self.v[_DIN])

    def power_w(self) -> float:
        # No mains, no light: the driver's output is gone whatever the PWM says.
        v = self.v
        return float(v[_P] * v[_PSCALE]) if v[_MAINS] else 0.0

    def energy_wh(self) -> float:
        self._energy()
        return float(self.v[_WH])

    def wdt_start(self, timeout_ms: int) -> None:
        self.v[_WDT_MS] = timeout_ms
        self.v[_T_WDT] = ticks_ms()

    def wdt_feed(self) -> None:
        # No hardware to bite, so count the times a real one would have reset
        # the board (a feed that comes later than the timeout).
        now = ticks_ms()
        v = self.v
        if v[_WDT_MS] and ticks_diff(now, v[_T_WDT]) > v[_WDT_MS]:
            self.wdt_bites += 1
            self.log("watchdog: fed %d ms late, the board would have reset"
                     % ticks_diff(now, v[_T_WDT]))
        self.wdt_feeds += 1
        v[_T_WDT] = now

    def load_settings(self) -> str | None:
        path = self.settings[0]
        if path is None:
            return self.settings[1]
        try:
            with open(path) as f:
                return str(f.read())
        except OSError:
            return None

    def save_settings(self, text: str) -> None:
        path = self.settings[0]
        if path is None:
            self.settings[1] = text
            return
        with open(path, "w") as f:
            f.write(text)

    def reset(self) -> None:
        # A soft restart: the app re-runs boot() on return, the process lives.
        self.resets += 1
        self.log("reset (soft)")

    def tasks(self, app: "Any") -> "list[Coroutine[Any, Any, None]]":
        self.app = app
        return [self._serve()]

    def log(self, msg: str) -> None:
        print("[%d] %s" % (ticks_diff(ticks_ms(), self._t0), msg))

    # ---- panel ----------------------------------------------------------

    async def _serve(self) -> None:
        r = asyncio.StreamReader(self._panel)
        line = b""
        while True:
            chunk = await r.readline()
            if not chunk:
                await asyncio.sleep_ms(50)
                continue
            line += chunk
            if len(line) > _MAX_LINE:
                line = b""
                self._reply({"ok": False, "error": "line too long"})
                continue
            if line[-1] != 10:
                continue  # partial line; wait for the rest
            req = line
            line = b""
            try:
                out = self._handle(req)
            except Exception as e:  # the panel must never take the board down
                out = {"ok": False, "error": "internal: %r" % (e,)}
            self._reply(out)

    def _reply(self, d: "dict[str, Any]") -> None:
        # The full-state reply is the biggest thing the sim sends: stream it, so
        # a fragmented 64K heap never needs one block for the whole line.
        try:
            json.dump(d, self._panel)
        except MemoryError:
            gc.collect()
            self._panel.write(b'\n{"ok": false, "error": "out of memory"}')
        self._panel.write(b"\n")

    def _handle(self, line: bytes) -> "dict[str, Any]":
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "bad json"}
        if not isinstance(req, dict):
            return {"ok": False, "error": "request must be an object"}
        op = req.get("op")
        if op == "get":
            return self._state()
        if op == "set":
            return self._set(req)
        if op == "fault":
            return self._fault(req)
        if op == "trace":  # log every command the board runs (exactly-once tests)
            if self.app is not None:
                self.app.trace = bool(req.get("on"))
            return {"ok": True}
        if op == "mem":
            gc.collect()
            return {"ok": True, "mem_alloc": gc.mem_alloc(), "mem_free": gc.mem_free()}
        return {"ok": False, "error": "unknown op %r" % (op,)}

    def _fault(self, req: "dict[str, Any]") -> "dict[str, Any]":
        # Watchdog tests: {"hang_ms": N} blocks the whole event loop for N ms
        # (a task stuck in a blocking call); {"kill": "rx"|"tick"} ends a task.
        hang = req.get("hang_ms")
        if isinstance(hang, int) and 0 < hang <= 60000:
            sleep_ms(hang)
            return {"ok": True}
        kill = req.get("kill")
        if kill in ("rx", "tick") and self.app is not None:
            self.app.tasks[0 if kill == "rx" else 1].cancel()
            return {"ok": True}
        return {"ok": False, "error": "fault needs hang_ms (1..60000) or kill (rx|tick)"}

    def _set(self, req: "dict[str, Any]") -> "dict[str, Any]":
        # Validate everything first so a bad request changes nothing.
        vals = []
        for k in req:
            if k == "op":
                continue
            v = req[k]
            spec = None
            for s in _SET_KEYS:
                if s[0] == k:
                    spec = s
            if spec is None:
                return {"ok": False, "error": "unknown key %r" % (k,)}
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return {"ok": False, "error": "%s must be a number" % k}
            hi = spec[2]
            if hi and (not isinstance(v, int) or v < 0 or v > hi):
                return {"ok": False, "error": "%s must be an int 0..%d" % (k, hi)}
            vals.append((spec[1], v if hi else float(v)))
        self._energy()  # mains may change: close the interval at the old power
        for i, v in vals:
            self.v[i] = v
        return {"ok": True}

    def _state(self) -> "dict[str, Any]":
        app = self.app
        lamp = app.lamp_info() if app else {}
        lamp["duty_u16"] = self.duty  # what the "pin" really carries
        return {
            "ok": True,
            "lamp": lamp,
            "amp": 1 if self.amp_on else 0,
            "lux": self.v[_LUX],
            "temp_c": self.v[_TEMP],
            "door": self.v[_DOOR],
            "tilt_deg": self.v[_TILT],
            "mains": self.v[_MAINS],
            "din": self.v[_DIN],
            "power_w": self.power_w(),
            "energy_wh": self.energy_wh(),
            "wdt_timeout_ms": self.v[_WDT_MS],
            "wdt_feeds": self.wdt_feeds,
            "wdt_age_ms": ticks_diff(ticks_ms(), self.v[_T_WDT]),
            "wdt_bites": self.wdt_bites,
            "uptime_ms": app.uptime_ms if app else 0,
            "resets": self.resets,
            "counters": app.counters() if app else None,
        }


if TYPE_CHECKING:
    def _conforms(h: Hal) -> _HalApi:
        return h  # mypy: the sim implements the whole HAL interface
