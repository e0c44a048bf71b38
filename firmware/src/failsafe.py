# Fail-safe decision: when the controller falls silent the pole must still
# light the street at night. Sans-I/O: the caller passes `now` (ticks_ms) and
# the ambient lux and acts on the answers, so the policy is tested on a host.

from time import ticks_diff  # pure arithmetic; handles the ticks wrap-around

from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from _mpy_shed.time_mp import _TicksMs  # opaque ticks type of the stubs


class FailSafe:
    def __init__(self, now: "_TicksMs") -> None:
        self.active = False
        # A light that is dark when it should be lit is the worse failure, so
        # a lux reading between the thresholds at entry counts as dark.
        self.dark = True
        self._seen = now

    def seen(self, now: "_TicksMs") -> bool:
        """A valid controller frame arrived. True when this ends fail-safe."""
        self._seen = now
        if self.active:
            self.active = False
            return True
        return False

    def silent_ms(self, now: "_TicksMs") -> int:
        return ticks_diff(now, self._seen)

    def due(self, now: "_TicksMs", timeout_ms: int) -> bool:
        """True once, at the moment the link has been silent for timeout_ms."""
        if self.active or ticks_diff(now, self._seen) < timeout_ms:
            return False
        self.active = True
        self.dark = True
        return True

    def level(self, lux: float, lux_on: int, lux_off: int, on_level: int) -> int:
        """Lamp level for this lux, with hysteresis between lux_on and lux_off."""
        if lux < lux_on:
            self.dark = True
        elif lux > lux_off:
            self.dark = False
        return on_level if self.dark else 0
