# Lamp fade state machine, dimming curve and lamp health. Sans-I/O: the
# caller passes `now` (a ticks_ms value) and writes `duty` to the PWM itself,
# so the logic is tested on the host without a clock or a pin.
#
# Levels are kept in centi-percent (0..10000) so that every product below
# stays a small int on a 32-bit port (10000 * 65535 < 2**30): no floats, no
# heap allocation in the 20 ms step.

from time import ticks_diff  # pure arithmetic; handles the ticks wrap-around

from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from typing import Any

    from _mpy_shed.time_mp import _TicksMs  # opaque ticks type of the stubs

SCALE = const(100)  # centi-percent per percent
FULL = const(10000)  # 100 % in centi-percent
DUTY_MAX = const(65535)
# LED drivers on a PWM dimming input drop out below a few percent of duty, so
# any level above 0 gets at least this much.
DUTY_MIN = const(1311)  # 2 % of 65535


def duty_for(level_c: int) -> int:
    """Duty (0..65535) for a level in centi-percent (0..10000).

    Logarithmic (DALI-like) curve: equal level steps are equal ratios of light
    (+4.03 % per percent), which the eye sees as equal steps. 1 % -> DUTY_MIN
    (2 %), 100 % -> full: duty = DUTY_MIN * 2 ** ((level - 1) * 5.6435 / 99).
    Integer maths only (every product < 2**30, no heap), with 2 ** f for the
    fraction f of an octave from a quadratic (error under 0.2 %); no table.
    """
    if level_c <= 0:
        return 0
    if level_c >= FULL:
        return DUTY_MAX
    if level_c < SCALE:
        return DUTY_MIN
    e = (level_c - SCALE) * 3735 // SCALE  # log2(65535 / 1311) / 99 in Q16 per percent
    f = (e & 0xFFFF) >> 4  # fraction of the octave, Q12
    d = (DUTY_MIN << (e >> 16)) * (4096 + (f * (2689 + (1407 * f >> 12)) >> 12)) >> 12
    return d if d < DUTY_MAX else DUTY_MAX


class Lamp:
    def __init__(self, now: "_TicksMs") -> None:
        self.level_c = 0  # current output, centi-percent
        self.target = 0  # percent
        self.duty = 0
        self._from_c = 0
        self._t0 = now
        self._fade_ms = 0
        self.fading = False

    @property
    def level(self) -> int:
        """Current level in whole percent (rounded), as lamp_state reports it."""
        return (self.level_c + SCALE // 2) // SCALE

    @property
    def on(self) -> bool:
        return self.duty > 0

    def set(self, target: int, fade_ms: int, now: "_TicksMs", max_level: int = 100) -> int:
        """Start a linear fade (in level, so a log curve in light) from the current
        level; returns the clamped target.

        Output does not move until the next step(): the caller steps at once
        so that a zero-length fade is applied and reported like any other.
        """
        if target > max_level:
            target = max_level
        if target < 0:
            target = 0
        self.target = target
        self._from_c = self.level_c
        self._t0 = now
        self._fade_ms = fade_ms
        self.fading = True
        return target

    def hold(self, now: "_TicksMs") -> None:
        """Freeze at the present output (fail-safe left: wait for the controller)."""
        self.target = self.level
        self.level_c = self.target * SCALE
        self.duty = duty_for(self.level_c)
        self._from_c = self.level_c
        self._t0 = now
        self.fading = False

    def step(self, now: "_TicksMs") -> bool:
        """Advance the fade to `now`; True exactly once, when a fade completes."""
        if not self.fading:
            return False
        end_c = self.target * SCALE
        el = ticks_diff(now, self._t0)
        if el < 0:
            el = 0
        if el >= self._fade_ms:
            self.level_c = end_c
            self.fading = False
        else:
            self.level_c = self._from_c + (end_c - self._from_c) * el // self._fade_ms
        self.duty = duty_for(self.level_c)
        return not self.fading


# ---- lamp health ------------------------------------------------------------
#
# fault_report codes (docs/link.md): 8 lamp failure (power below half of what
# the duty implies), 9 power above 1.5 times it (or drawn while off), 10
# day-burning (lit with over 1000 lux of daylight on the sensor), 11 cycling
# (the light dropped out 3 times within a window at a steady command). A
# condition must hold `b` ms to raise or clear a fault (day-burning and the
# cycling window: 60 x b).
#
# State lives in one list (the app's `health`), indexed by these constants:
# no attributes, so no new names on the board's heap.
_ACTIVE = const(0)  # raised faults: bit (code - 8)
_RAW = const(1)  # conditions seen at the last check
_SINCE = const(2)  # 2..5: when each condition last flipped
_DROPS = const(6)  # light drop-outs in the current cycling window
_WIN = const(7)  # start of the cycling window
_LIT = const(8)  # light present at the last check
# 9..12 are the app's: last check, level waiting to be persisted, since when,
# fail-safe start. The app builds the list (13 entries).


def health(h: "list[Any]", now: "_TicksMs", duty: int, on: bool, w: float, lux: float,
           mains: int, c: int, b: int) -> int:
    """One lamp health check (about once a second): `duty` output, `on` True once
    the output has settled, `w` measured watts, `c` rated watts at full duty (0:
    no power checks), `b` debounce ms. Returns the fault bits that changed;
    h[0] holds the raised ones."""
    x = c * duty / DUTY_MAX  # expected watts
    r = 1 if c and on and mains and duty and w < x / 2 else 0
    if c and on and mains and w > x * 1.5 + c / 50:
        r |= 2
    y = w > c / 100 if c else duty > 0  # lit
    if y and lux > 1000:
        r |= 4
    if c and on and mains and duty and h[_LIT] and not y:
        h[_DROPS] += 1
    h[_LIT] = y
    if h[_DROPS] >= 3 or (h[_RAW] & 8 and h[_DROPS]):
        r |= 8
    if ticks_diff(now, h[_WIN]) >= 60 * b:
        h[_DROPS] = 0
        h[_WIN] = now
    d = 0
    for i in range(4):
        m = 1 << i
        if (r ^ h[_RAW]) & m:
            h[_SINCE + i] = now
        if (r ^ h[_ACTIVE]) & m and ticks_diff(now, h[_SINCE + i]) >= (
                60 * b if i == 2 else b):
            h[_ACTIVE] ^= m
            d |= m
    h[_RAW] = r
    return d
