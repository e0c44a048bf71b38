# The pole I/O board application: link protocol v1 over the HAL's UART,
# lamp fades, sensor reports, fail-safe and watchdog supervision.
#
# Three asyncio tasks: `_rx` (decode and answer controller frames), `_tick`
# (20 ms: fades, sensors, fail-safe, periodic messages) and the supervisor in
# `run()` that feeds the watchdog only while the other two are alive.
# Everything sent goes through `_send()`, which writes synchronously: frames
# are small and the UART/pty driver buffers them, and a single writer avoids
# two tasks awaiting the same stream.

import asyncio
import gc
from time import ticks_add, ticks_diff, ticks_ms

import linkcodec as lc
import settings as st
from failsafe import FailSafe
from lamp import Lamp, health
from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from typing import Any

    from _mpy_shed.time_mp import _TicksMs
    from halapi import Hal

FW_VERSION = "0.1.0"
# Anti-rollback counter of this image (firmware/build.py --counter replaces
# it): an update must carry a higher one (update.py, docs/security.md).
FW_COUNTER = 1
CAPS = (
    lc.CAP_LAMP | lc.CAP_LUX | lc.CAP_TEMP | lc.CAP_DOOR | lc.CAP_TILT | lc.CAP_POWER
    | lc.CAP_DIN | lc.CAP_AMP | lc.CAP_WDT | lc.CAP_FAILSAFE
)

# Message ids, mirroring linkcodec.MESSAGES (a unit test checks they agree):
# comparing small-int constants is the cheapest dispatch MicroPython has.
_T_HELLO = const(0x01)
_T_HELLO_REQ = const(0x02)
_T_HEARTBEAT = const(0x03)
_T_ACK = const(0x04)
_T_NAK = const(0x05)
_T_BOARD_ID = const(0x06)
_T_LAMP_SET = const(0x10)
_DUP_WINDOW_MS = const(3000)  # > the controller's retries x ack timeout
_T_LAMP_STATE = const(0x11)
_T_LAMP_GET = const(0x12)
_T_SENSOR_REPORT = const(0x20)
_T_DIGITAL_INPUTS = const(0x21)
_T_AMP_ENABLE = const(0x22)
_T_FAULT_REPORT = const(0x23)
_T_SENSOR_GET = const(0x24)
_T_CONFIG_GET = const(0x30)
_T_CONFIG_SET = const(0x31)
_T_CONFIG_VALUE = const(0x32)
_T_REBOOT = const(0x3F)
_T_UPDATE_BEGIN = const(0x40)
_T_UPDATE_COMMIT = const(0x42)
_T_STATS = const(0x50)

FAULT_LINK_LOST = const(7)
# App entries of the `health` list (lamp.health uses 0..8).
_H_CHECK = const(9)
_H_LEVEL = const(10)
_H_LEVEL_T = const(11)
_H_FAILSAFE = const(12)
_PERSIST_MS = const(5000)  # a lamp_set that held this long is stored (flash wear)
# Settings indices of lamp_min, lamp_last, lamp_rated_w (settings.KEYS order; a
# test checks them): private consts cost no heap, public names would.
_S_LAMP_MIN = const(11)
_S_LAMP_LAST = const(12)
_S_LAMP_RATED_W = const(13)

_TICK_MS = const(20)  # fade step and scheduler resolution
_SENSE_MS = const(100)  # door/mains/tilt/din poll: "prompt" change reports
_IDLE_MS = const(50)  # back-off when the link reads EOF (pty peer gone)
_B_TICK = const(1)


def _h(x: int) -> int:
    # u16 stats fields saturate instead of making pack() raise.
    return x if x < 0xFFFF else 0xFFFF


class App:
    # update.Updater, set by the loader on a board with slot storage (it is
    # imported at boot, on a clean heap); None: update_* get NAK unsupported.
    upd: "Any" = None

    def __init__(self, hal: "Hal") -> None:
        self.hal = hal
        self.cfg = st.Settings()
        self.boots = 0
        self.errors = 0  # exceptions caught in handlers (should stay 0)
        self._beat = 0
        self.boot(ticks_ms())

    def boot(self, now: "_TicksMs") -> None:
        """(Re)start: settings from storage, fresh state, announce to the controller."""
        self.boots += 1
        bad = self.cfg.loads(self.hal.load_settings())
        if bad:
            self.hal.log("settings: %d stored values ignored" % bad)
        self.dec = lc.Decoder()
        self.lamp = Lamp(now)
        # Lamp health state (lamp.health), then the app's: last check, a lamp_set
        # level waiting _PERSIST_MS to be stored (-1: none) and since when,
        # fail-safe start.
        self.health: "list[Any]" = [0, 0, now, now, now, now, 0, now, False, now, -1, now, now]
        self.fs = FailSafe(now)
        self.seq = 0
        self.tx = 0
        self.naks = 0
        self.dup_acks = 0
        self.executed = 0  # commands run (a retried duplicate is not run again)
        self._last_cmd_t = now  # no command yet: the window check needs a tick value
        self.trace = False  # sim/test: log every command run (see hal_sim panel "trace")
        self.version_errors = 0
        self._last_cmd = -1  # (type << 8) | seq of the last executed command
        self._stats_at = 0
        self._stats_due = False
        self._reboot_at = now
        self._reboot = False
        self._t_last = now
        self.uptime_ms = 0
        self._t_hb = now
        self._t_rep = now
        self._t_sense = now
        self._rep_on = False
        self._rep_fs = False
        self._door = -1  # -1: not read yet, so the first poll is not a "change"
        self._mains = -1
        self._alarm = -1
        self._din = -1
        self.amp_on = False
        self._duty_out = 0
        self.hal.lamp(0, 0)
        self.hal.amp(False)
        if self.cfg.v[_S_LAMP_LAST] > 0:  # the last command survives a reset
            self.lamp.set(self.cfg.v[_S_LAMP_LAST], self.cfg.v[st.FAILSAFE_FADE_MS], now,
                          self.cfg.v[st.LAMP_MAX])
        self._hello(self._next_seq())

    # ---- transmit -------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def _send(self, mtype: int, seq: int, values: "Any" = ()) -> None:
        self.hal.link_write(lc.pack(mtype, seq, values))
        self.tx += 1

    def _hello(self, seq: int) -> None:
        self._send(_T_HELLO, seq, (lc.PROTO_MINOR, FW_VERSION,
                                   CAPS | lc.CAP_UPDATE if self.upd else CAPS))
        self._send(_T_BOARD_ID, seq, (self.hal.board_id(),))
        if self.upd:
            self.upd.hello(self, seq)  # update_status: idle, receiving, pending, trial

    def _nak(self, mtype: int, seq: int, reason: int) -> None:
        self.naks += 1
        self._send(_T_NAK, seq, (seq, mtype, reason))

    def _lamp_state(self, seq: int) -> None:
        m = self.lamp
        self._send(_T_LAMP_STATE, seq,
                   (m.level, m.target, m.duty, 1 if m.on else 0, 1 if self.fs.active else 0))

    def _sensor_report(self, seq: int) -> None:
        h = self.hal
        self._send(_T_SENSOR_REPORT, seq, (h.lux(), h.temp_c(), h.door(), h.tilt_deg(),
                                           h.power_w(), h.energy_wh(), h.mains()))

    def _stats(self) -> None:
        gc.collect()
        d = self.dec
        self._send(_T_STATS, self._next_seq(), (
            d.frames & 0xFFFFFFFF, self.tx & 0xFFFFFFFF, d.dropped_bytes & 0xFFFFFFFF,
            _h(d.crc_errors), _h(d.framing_errors), _h(d.oversize), _h(self.naks),
            gc.mem_alloc(), gc.mem_free()))

    # ---- receive ----------------------------------------------------------

    async def _rx(self) -> None:
        r = asyncio.StreamReader(self.hal.link)
        buf = bytearray(256)
        mv = memoryview(buf)
        while True:
            n = await r.readinto(buf)
            if not n:
                await asyncio.sleep_ms(_IDLE_MS)
                continue
            now = ticks_ms()
            for f in self.dec.feed(mv[:n]):
                try:
                    self._frame(f, now)
                except Exception as e:  # a handler bug must not stop the link
                    self.errors += 1
                    self.hal.log("frame %r: %r" % (f, e))
            if self.dec.frames - self._stats_at >= self.cfg.v[st.STATS_FRAMES]:
                self._stats_at = self.dec.frames
                # Sent from the tick task: its shallow stack holds no stale
                # frames for the conservative GC, so mem_alloc is repeatable.
                self._stats_due = True

    def _frame(self, f: "lc.Frame", now: "_TicksMs") -> None:
        t = f.mtype
        seq = f.seq
        if f.ver >> 4 != lc.PROTO_MAJOR:
            # Not our protocol: it does not prove the controller is alive.
            self.version_errors += 1
            self._nak(t, seq, lc.NAK_VERSION)
            return
        # Any CRC-valid v1 frame shows the controller and cable are alive.
        if self.fs.seen(now):
            self._failsafe_exit(now)
        key = (t << 8) | seq
        # A repeat of the last command within a few seconds is a duplicate: a retry whose
        # first ack was lost, or a frame the line delivered twice (no RETRY flag then).
        # The window keeps a wrapped sequence number from being taken for a repeat.
        if key == self._last_cmd and ticks_diff(now, self._last_cmd_t) < _DUP_WINDOW_MS:
            # Our ack was lost: confirm again, do not run the command twice.
            self.dup_acks += 1
            self._send(_T_ACK, seq, (seq, t))
            return
        try:
            v: "dict[str, Any]" = f.fields()
        except lc.UnknownType:
            self._nak(t, seq, lc.NAK_UNSUPPORTED)
            return
        except lc.MalformedBody:
            self._nak(t, seq, lc.NAK_MALFORMED)
            return
        if t == _T_LAMP_SET:
            lvl = v["level"]
            if lvl > 100:
                self._nak(t, seq, lc.NAK_BAD_VALUE)
                return
            if 0 < lvl < self.cfg.v[_S_LAMP_MIN]:
                lvl = self.cfg.v[_S_LAMP_MIN]  # lamp_max still wins
            self.health[_H_LEVEL] = self.lamp.set(lvl, v["fade_ms"], now,
                                                  self.cfg.v[st.LAMP_MAX])
            self.health[_H_LEVEL_T] = now
            self._lamp_step(now)
        elif t == _T_AMP_ENABLE:
            on = v["on"]
            if on > 1:
                self._nak(t, seq, lc.NAK_BAD_VALUE)
                return
            self.amp_on = on == 1
            self.hal.amp(self.amp_on)
        elif t == _T_CONFIG_SET:
            i = self.cfg.set(v["key"], v["value"])
            if i < 0:
                self._nak(t, seq, lc.NAK_BAD_VALUE)
                return
            self.hal.save_settings(self.cfg.dumps())
            if i == st.LAMP_MAX and self.lamp.target > self.cfg.v[i]:
                self.lamp.set(self.cfg.v[i], 0, now, self.cfg.v[i])
                self._lamp_step(now)
        elif t == _T_REBOOT:
            self._reboot = True
            self._reboot_at = ticks_add(now, v["delay_ms"])
        elif _T_UPDATE_BEGIN <= t <= _T_UPDATE_COMMIT:
            r = self.upd.handle(self, t, seq, v) if self.upd else lc.NAK_UNSUPPORTED
            if r:
                self._nak(t, seq, r)
                return
        else:
            self._request(t, seq, v)
            return
        # A command ran: remember it for retry detection and confirm it.
        self._last_cmd = key
        self._last_cmd_t = now
        self.executed += 1
        if self.trace:
            self.hal.log("ran %d seq %d" % (t, seq))
        if f.flags & lc.F_ACK_REQ:
            self._send(_T_ACK, seq, (seq, t))

    def _request(self, t: int, seq: int, v: "dict[str, Any]") -> None:
        if t == _T_LAMP_GET:
            self._lamp_state(seq)
        elif t == _T_SENSOR_GET:
            self._sensor_report(seq)
        elif t == _T_CONFIG_GET:
            key = v["key"]
            val = self.cfg.get(key)
            if val is None and self.upd:
                val = self.upd.get(key)  # upd_floor, fw_counter: read-only
            if val is None:
                self._send(_T_CONFIG_VALUE, seq, (1, key, ""))
            else:
                self._send(_T_CONFIG_VALUE, seq, (0, key, str(val)))
        elif t == _T_HELLO_REQ:
            self._hello(seq)
        elif t == _T_HEARTBEAT or t == _T_ACK or t == _T_NAK:
            pass  # keep-alive / answers to nothing we asked: refreshing the timer was enough
        else:
            # Known to the catalogue but board-to-controller only.
            self._nak(t, seq, lc.NAK_UNSUPPORTED)

    # ---- periodic -------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            try:
                self._step(ticks_ms())
                # Only a step that completed counts as a heartbeat: a step that
                # raises every time starves the watchdog and resets the board.
                self._beat |= _B_TICK
            except Exception as e:
                self.errors += 1
                self.hal.log("tick: %r" % (e,))

    def _step(self, now: "_TicksMs") -> None:
        c = self.cfg.v
        self.uptime_ms += ticks_diff(now, self._t_last)
        self._t_last = now
        if self._reboot and ticks_diff(now, self._reboot_at) >= 0:
            self._reboot = False
            self.hal.reset()  # board: does not return
            self.boot(now)
            return
        if self.fs.due(now, c[st.FAILSAFE_TIMEOUT_MS]):
            self._failsafe_enter(now)
        if ticks_diff(now, self._t_sense) >= _SENSE_MS:
            self._t_sense = now
            self._sense(now)
        self._lamp_step(now)
        h = self.health
        if ticks_diff(now, h[_H_CHECK]) >= 1000:
            # Once a second: store a lamp_set that held, check the lamp's health.
            h[_H_CHECK] = now
            if h[_H_LEVEL] >= 0 and ticks_diff(now, h[_H_LEVEL_T]) >= _PERSIST_MS:
                if c[_S_LAMP_LAST] != h[_H_LEVEL]:
                    c[_S_LAMP_LAST] = h[_H_LEVEL]
                    self.hal.save_settings(self.cfg.dumps())
                h[_H_LEVEL] = -1
            w = self.hal.power_w()
            m = self.lamp
            d = health(h, now, m.duty, not m.fading, w, self.hal.lux(), self.hal.mains(),
                       c[_S_LAMP_RATED_W], 10 * c[st.REPORT_INTERVAL_MS])
            for i in range(4):
                if d >> i & 1:
                    self._send(_T_FAULT_REPORT, self._next_seq(), (
                        8 + i, h[0] >> i & 1, "lamp %d %%, %d W" % (m.level, w)))
        if ticks_diff(now, self._t_hb) >= c[st.HEARTBEAT_MS]:
            self._t_hb = now
            self._send(_T_HEARTBEAT, self._next_seq(), (self.uptime_ms & 0xFFFFFFFF,))
        if self._stats_due:
            self._stats_due = False
            self._stats()
        if ticks_diff(now, self._t_rep) >= c[st.REPORT_INTERVAL_MS]:
            self._t_rep = now
            self._sensor_report(self._next_seq())
            if self._din >= 0:
                self._send(_T_DIGITAL_INPUTS, self._next_seq(), (self._din, 0))

    def _lamp_step(self, now: "_TicksMs") -> None:
        m = self.lamp
        done = m.step(now)
        if m.duty != self._duty_out:
            self._duty_out = m.duty
            self.hal.lamp(m.duty, m.level_c)
        on = m.on
        fs = self.fs.active
        if done or on != self._rep_on or fs != self._rep_fs:
            self._rep_on = on
            self._rep_fs = fs
            self._lamp_state(self._next_seq())

    def _sense(self, now: "_TicksMs") -> None:
        h = self.hal
        door = h.door()
        mains = h.mains()
        alarm = 1 if h.tilt_deg() >= self.cfg.v[st.TILT_ALARM_DEG] else 0
        changed = self._door >= 0 and (
            door != self._door or mains != self._mains or alarm != self._alarm)
        self._door = door
        self._mains = mains
        self._alarm = alarm
        if changed:
            self._sensor_report(self._next_seq())
        din = h.din()
        if din != self._din:
            if self._din >= 0:
                self._send(_T_DIGITAL_INPUTS, self._next_seq(), (din, din ^ self._din))
            self._din = din
        if self.fs.active:
            self._failsafe_lamp(now)

    # ---- fail-safe ------------------------------------------------------

    def _failsafe_lamp(self, now: "_TicksMs") -> None:
        c = self.cfg.v
        lvl = self.fs.level(self.hal.lux(), c[st.FAILSAFE_LUX_ON], c[st.FAILSAFE_LUX_OFF],
                            c[st.FAILSAFE_LEVEL])
        if min(lvl, c[st.LAMP_MAX]) != self.lamp.target:
            self.lamp.set(lvl, c[st.FAILSAFE_FADE_MS], now, c[st.LAMP_MAX])

    def _failsafe_enter(self, now: "_TicksMs") -> None:
        self.health[_H_FAILSAFE] = now
        self._send(_T_FAULT_REPORT, self._next_seq(),
                   (FAULT_LINK_LOST, 1, "link silent %d ms" % self.fs.silent_ms(now)))
        self._failsafe_lamp(now)
        self.hal.log("fail-safe: on")

    def _failsafe_exit(self, now: "_TicksMs") -> None:
        # Hold the present output; the controller decides what comes next.
        self.lamp.hold(now)
        # Sent once the link is back (the "active" report went into the silence).
        self._send(_T_FAULT_REPORT, self._next_seq(), (
            FAULT_LINK_LOST, 0, "link back after %d ms in fail-safe, lamp %d %%" % (
                ticks_diff(now, self.health[_H_FAILSAFE]), self.lamp.level)))
        self._lamp_step(now)
        self.hal.log("fail-safe: off")

    # ---- supervision ----------------------------------------------------

    async def run(self) -> None:
        h = self.hal
        wdt_ms = self.cfg.v[st.WDT_TIMEOUT_MS]
        h.wdt_start(wdt_ms)
        rx = asyncio.create_task(self._rx())
        tick = asyncio.create_task(self._tick())
        # Kept: (rx, tick) are checked below and cancelled by the sim panel's
        # fault injection; the HAL's own tasks ride along.
        self.tasks = [rx, tick]
        for coro in h.tasks(self):
            self.tasks.append(asyncio.create_task(coro))
        # Check several times per watchdog period so one late check cannot bite.
        period = min(wdt_ms // 4, 1000)
        while True:
            await asyncio.sleep_ms(period)
            # The rx task may legitimately sleep in a read for hours, so for it
            # "alive" means "has not ended"; the tick task must have completed
            # a step since the last check. A task stuck in a blocking call stops
            # the whole loop, and this coroutine with it.
            if self._beat & _B_TICK and not rx.done() and not tick.done():
                h.wdt_feed()
            self._beat = 0

    # ---- introspection (sim panel, tests) -----------------------------------

    def lamp_info(self) -> "dict[str, int]":
        m = self.lamp
        return {"level": m.level, "target": m.target, "duty_u16": self._duty_out,
                "on": 1 if m.on else 0, "failsafe": 1 if self.fs.active else 0}

    def counters(self) -> "dict[str, int]":
        d = self.dec
        return {"rx_frames": d.frames, "tx_frames": self.tx, "rx_dropped": d.dropped_bytes,
                "crc_errors": d.crc_errors, "framing_errors": d.framing_errors,
                "oversize": d.oversize, "resyncs": d.resyncs, "naks_sent": self.naks,
                "dup_acks": self.dup_acks, "version_errors": self.version_errors,
                "executed": self.executed,
                "errors": self.errors, "boots": self.boots}
