# Board settings: keys, defaults, ranges, validation and persistence.
#
# One table of tuples instead of a dict per key: it is built once from the
# .mpy constant pool and the values live in a flat list indexed by the
# constants below, so reading a setting in the 20 ms loop costs no lookup
# by name and no allocation.

import json

from micropython import const

# (key, default, min, max); every value is an int.
KEYS = (
    ("failsafe_timeout_ms", 5000, 100, 3600000),
    ("failsafe_level", 100, 0, 100),
    ("failsafe_lux_on", 20, 0, 100000),
    ("failsafe_lux_off", 50, 0, 100000),
    ("failsafe_fade_ms", 2000, 0, 60000),
    ("report_interval_ms", 1000, 100, 3600000),
    ("heartbeat_ms", 1000, 100, 60000),
    ("lamp_max", 100, 0, 100),
    ("wdt_timeout_ms", 8000, 1000, 60000),
    ("tilt_alarm_deg", 10, 1, 90),
    ("stats_frames", 1000, 10, 1000000),
    ("lamp_min", 0, 0, 100),
    ("lamp_last", 0, 0, 100),
    ("lamp_rated_w", 60, 0, 2000),
)

# Indices into Settings.v, in KEYS order.
FAILSAFE_TIMEOUT_MS = const(0)
FAILSAFE_LEVEL = const(1)
FAILSAFE_LUX_ON = const(2)
FAILSAFE_LUX_OFF = const(3)
FAILSAFE_FADE_MS = const(4)
REPORT_INTERVAL_MS = const(5)
HEARTBEAT_MS = const(6)
LAMP_MAX = const(7)
WDT_TIMEOUT_MS = const(8)
TILT_ALARM_DEG = const(9)
STATS_FRAMES = const(10)
# 11 lamp_min: a lit level below it is raised to it (lamp_max wins if they
#    cross). 12 lamp_last: the controller's last lamp_set once it held 5 s,
#    restored at boot. 13 lamp_rated_w: power at full duty (W) for the lamp
#    health checks, 0 turns them off. app.py indexes these with private consts
#    (_S_LAMP_*): public names would each cost a qstr on the board's heap.


def index(key: str) -> int:
    """Position of `key` in KEYS, or -1."""
    for i in range(len(KEYS)):
        if KEYS[i][0] == key:
            return i
    return -1


def parse(text: str) -> int | None:
    """Decimal integer text to int; None if it is not one."""
    try:
        return int(text.strip(), 10)
    except (ValueError, TypeError, AttributeError):
        return None


class Settings:
    def __init__(self) -> None:
        self.v = [k[1] for k in KEYS]

    def defaults(self) -> None:
        for i in range(len(KEYS)):
            self.v[i] = KEYS[i][1]

    def get(self, key: str) -> int | None:
        i = index(key)
        return None if i < 0 else self.v[i]

    def valid(self, i: int, val: int) -> bool:
        k = KEYS[i]
        if val < k[2] or val > k[3]:
            return False
        # Hysteresis needs on <= off, or the lamp would flap between them.
        if i == FAILSAFE_LUX_ON and val > self.v[FAILSAFE_LUX_OFF]:
            return False
        if i == FAILSAFE_LUX_OFF and val < self.v[FAILSAFE_LUX_ON]:
            return False
        return True

    def set(self, key: str, text: str) -> int:
        """Apply `key=text`. Returns the index changed, or -1 if rejected."""
        i = index(key)
        if i < 0:
            return -1
        val = parse(text)
        if val is None or not self.valid(i, val):
            return -1
        self.v[i] = val
        return i

    def dumps(self) -> str:
        d = {}
        for i in range(len(KEYS)):
            d[KEYS[i][0]] = self.v[i]
        return json.dumps(d)

    def loads(self, text: str | None) -> int:
        """Take values from stored JSON; returns how many were rejected.

        Flash can hold a file from another firmware version or a torn write:
        unknown keys and bad values are skipped, never fatal.
        """
        self.defaults()
        if not text:
            return 0
        try:
            d = json.loads(text)
        except ValueError:
            return 1
        if not isinstance(d, dict):
            return 1
        bad = 0
        # Order-independent: apply the lux pair without the cross check first.
        for key in d:
            i = index(key)
            val = d[key]
            if i < 0 or not isinstance(val, int) or val < KEYS[i][2] or val > KEYS[i][3]:
                bad += 1
            else:
                self.v[i] = val
        if self.v[FAILSAFE_LUX_ON] > self.v[FAILSAFE_LUX_OFF]:
            self.v[FAILSAFE_LUX_ON] = KEYS[FAILSAFE_LUX_ON][1]
            self.v[FAILSAFE_LUX_OFF] = KEYS[FAILSAFE_LUX_OFF][1]
            bad += 1
        return bad
