# Lamp fade state machine. Sans-I/O: the caller passes `now` (a ticks_ms
# value) and writes `duty` to the PWM itself, so the fade logic is tested on
# the host without a clock or a pin.
#
# Levels are kept in centi-percent (0..10000) so that every product below
# stays a small int on a 32-bit port (10000 * 65535 < 2**30): no floats, no
# heap allocation in the 20 ms step.

from time import ticks_diff  # pure arithmetic; handles the ticks wrap-around

from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from _mpy_shed.time_mp import _TicksMs  # opaque ticks type of the stubs

SCALE = const(100)  # centi-percent per percent
FULL = const(10000)  # 100 % in centi-percent
DUTY_MAX = const(65535)
# LED drivers on a PWM dimming input drop out below a few percent of duty, so
# any level above 0 gets at least this much; the rest of the curve is linear
# because light output and input power of a constant-current driver are
# close to linear in duty.
DUTY_MIN = const(1311)  # 2 % of 65535


def duty_for(level_c: int) -> int:
    """Duty (0..65535) for a level in centi-percent (0..10000)."""
    if level_c <= 0:
        return 0
    if level_c >= FULL:
        return DUTY_MAX
    return DUTY_MIN + (DUTY_MAX - DUTY_MIN) * level_c // FULL


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
        """Start a linear fade from the current level; returns the clamped target.

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
