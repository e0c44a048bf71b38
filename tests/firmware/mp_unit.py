# Unit tests of the firmware's sans-I/O modules, run UNDER MICROPYTHON:
#
#     micropython -X heapsize=64K tests/firmware/mp_unit.py BUILD_DIR [GROUP]
#
# BUILD_DIR holds the .mpy build; GROUP is lamp, failsafe or settings (all if
# omitted). Prints "PASS name" / "FAIL name: why" and exits 1 on any failure.
# No unittest on the unix port by default: a dozen lines of runner instead.

import sys

sys.path[:0] = [sys.argv[1]]
GROUP = sys.argv[2] if len(sys.argv) > 2 else ""

from time import ticks_add  # noqa: E402

import failsafe  # noqa: E402
import lamp  # noqa: E402
import settings  # noqa: E402

_failed = 0


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, what=""):
    if a != b:
        raise AssertionError(f"{what}: {a!r} != {b!r}")


def run(group, fn):
    global _failed
    if GROUP and group != GROUP:
        return
    name = group + "." + fn.__name__
    try:
        fn()
        print("PASS", name)
    except Exception as e:
        _failed += 1
        print(f"FAIL {name}: {e!r}")


# ---- lamp -----------------------------------------------------------------


def duty_curve_ends_and_floor():
    eq(lamp.duty_for(0), 0, "0 %")
    eq(lamp.duty_for(10000), 65535, "100 %")
    eq(lamp.duty_for(-5), 0, "below 0")
    eq(lamp.duty_for(20000), 65535, "above 100")
    check(lamp.duty_for(1) >= lamp.DUTY_MIN, "any level > 0 reaches the driver floor")


def duty_curve_monotonic():
    prev = -1
    for c in range(0, 10001, 7):
        d = lamp.duty_for(c)
        check(d >= prev, f"not monotonic at {c}")
        check(0 <= d <= 65535, f"out of u16 at {c}")
        prev = d


def fade_is_linear():
    t0 = 1000
    m = lamp.Lamp(t0)
    m.set(100, 1000, t0)
    check(not m.step(t0), "not done at start")
    eq(m.level_c, 0, "start")
    m.step(t0 + 250)
    eq(m.level_c, 2500, "quarter")
    m.step(t0 + 500)
    eq(m.level, 50, "half")
    check(m.fading, "still fading")
    check(m.step(t0 + 1000), "done at the end")
    eq(m.level, 100, "end")
    eq(m.duty, 65535, "end duty")
    check(not m.step(t0 + 1020), "done reported once")


def fade_down_and_zero_length():
    m = lamp.Lamp(0)
    m.set(80, 0, 0)
    check(m.step(0), "zero fade completes on the first step")
    eq(m.level, 80, "level")
    m.set(20, 600, 100)
    m.step(400)
    eq(m.level_c, 5000, "two thirds of the way down from 80 to 20")
    m.step(700)
    eq(m.level, 20, "end")
    m.set(0, 0, 800)
    m.step(800)
    check(not m.on, "off")
    eq(m.duty, 0, "duty off")


def fade_clamps_to_lamp_max():
    m = lamp.Lamp(0)
    eq(m.set(90, 0, 0, 60), 60, "clamped target")
    m.step(0)
    eq(m.level, 60, "level")
    check(m.duty < lamp.duty_for(6001), "duty under the cap")


def fade_retarget_midway():
    m = lamp.Lamp(0)
    m.set(100, 1000, 0)
    m.step(500)
    m.set(0, 500, 500)  # from 50 % down to 0 in 500 ms
    m.step(750)
    eq(m.level_c, 2500, "halfway down from 50")


def fade_across_ticks_wrap():
    t0 = ticks_add(0, -300)  # 300 ms before the tick counter wraps
    m = lamp.Lamp(t0)
    m.set(100, 1000, t0)
    m.step(ticks_add(t0, 500))
    eq(m.level, 50, "half, after the wrap")
    check(m.step(ticks_add(t0, 1000)), "done after the wrap")


def hold_freezes_output():
    m = lamp.Lamp(0)
    m.set(100, 1000, 0)
    m.step(333)
    m.hold(333)
    eq(m.target, 33, "target is the held level")
    check(not m.step(2000), "no fade left")
    eq(m.level, 33, "level stays")


# ---- failsafe -------------------------------------------------------------


def due_once_after_timeout():
    fs = failsafe.FailSafe(0)
    check(not fs.due(4999, 5000), "not before")
    check(fs.due(5000, 5000), "at timeout")
    check(fs.active, "active")
    check(not fs.due(9000, 5000), "only once")
    eq(fs.silent_ms(9000), 9000, "silence measured from the last frame")


def seen_refreshes_and_ends():
    fs = failsafe.FailSafe(0)
    check(not fs.seen(3000), "seen while not active")
    check(not fs.due(7000, 5000), "timer restarted by seen")
    check(fs.due(8000, 5000), "due 5 s after the last frame")
    check(fs.seen(8100), "seen ends fail-safe")
    check(not fs.active, "inactive")


def hysteresis():
    fs = failsafe.FailSafe(0)
    fs.due(5000, 5000)
    eq(fs.level(30.0, 20, 50, 100), 100, "between thresholds at entry: dark (safe)")
    eq(fs.level(60.0, 20, 50, 100), 0, "bright")
    eq(fs.level(30.0, 20, 50, 100), 0, "between: stays bright")
    eq(fs.level(50.0, 20, 50, 100), 0, "at lux_off: stays")
    eq(fs.level(19.9, 20, 50, 100), 100, "dark")
    eq(fs.level(49.0, 20, 50, 100), 100, "between: stays dark")
    eq(fs.level(20.0, 20, 50, 100), 100, "at lux_on: stays")
    eq(fs.level(51.0, 20, 50, 70), 0, "bright again")
    eq(fs.level(1.0, 20, 50, 70), 70, "failsafe_level")


def entry_resets_to_dark():
    fs = failsafe.FailSafe(0)
    fs.due(5000, 5000)
    fs.level(100.0, 20, 50, 100)
    fs.seen(6000)
    fs.due(11000, 5000)
    eq(fs.level(30.0, 20, 50, 100), 100, "re-entry between thresholds: dark")


def failsafe_across_ticks_wrap():
    t0 = ticks_add(0, -1000)
    fs = failsafe.FailSafe(t0)
    check(not fs.due(ticks_add(t0, 4000), 5000), "before, across the wrap")
    check(fs.due(ticks_add(t0, 5000), 5000), "due across the wrap")


# ---- settings -------------------------------------------------------------


def defaults_and_index():
    s = settings.Settings()
    eq(s.get("failsafe_timeout_ms"), 5000, "timeout")
    eq(s.get("failsafe_level"), 100, "level")
    eq(s.get("failsafe_lux_on"), 20, "lux on")
    eq(s.get("failsafe_lux_off"), 50, "lux off")
    eq(s.get("report_interval_ms"), 1000, "report")
    eq(s.get("heartbeat_ms"), 1000, "heartbeat")
    eq(s.get("lamp_max"), 100, "lamp_max")
    check(s.get("wdt_timeout_ms") is not None, "wdt")
    eq(s.get("nope"), None, "unknown key")
    eq(settings.index("lamp_max"), settings.LAMP_MAX, "index constant")
    eq(settings.index("nope"), -1, "unknown index")
    for i in range(len(settings.KEYS)):
        k = settings.KEYS[i]
        check(k[2] <= k[1] <= k[3], f"default of {k[0]} in range")


def set_validates():
    s = settings.Settings()
    eq(s.set("heartbeat_ms", "250"), settings.HEARTBEAT_MS, "valid")
    eq(s.get("heartbeat_ms"), 250, "applied")
    eq(s.set("heartbeat_ms", " 300 "), settings.HEARTBEAT_MS, "spaces")
    eq(s.set("heartbeat_ms", "99"), -1, "below range")
    eq(s.set("heartbeat_ms", "60001"), -1, "above range")
    eq(s.set("heartbeat_ms", "abc"), -1, "not a number")
    eq(s.set("heartbeat_ms", "1e3"), -1, "not an int")
    eq(s.set("heartbeat_ms", "0x10"), -1, "not decimal")
    eq(s.set("heartbeat_ms", ""), -1, "empty")
    eq(s.set("lamp_max", "-1"), -1, "negative")
    eq(s.set("nope", "1"), -1, "unknown key")
    eq(s.get("heartbeat_ms"), 300, "rejected sets change nothing")


def lux_pair_stays_ordered():
    s = settings.Settings()
    eq(s.set("failsafe_lux_on", "60"), -1, "on above off")
    eq(s.set("failsafe_lux_off", "10"), -1, "off below on")
    check(s.set("failsafe_lux_off", "80") >= 0, "raise off first")
    check(s.set("failsafe_lux_on", "60") >= 0, "then on")
    check(s.set("failsafe_lux_on", "80") >= 0, "equal is allowed")


def persist_round_trip():
    s = settings.Settings()
    s.set("heartbeat_ms", "200")
    s.set("lamp_max", "70")
    text = s.dumps()
    t = settings.Settings()
    eq(t.loads(text), 0, "nothing rejected")
    eq(t.get("heartbeat_ms"), 200, "heartbeat")
    eq(t.get("lamp_max"), 70, "lamp_max")
    eq(t.v, s.v, "all values")


def loads_survives_bad_storage():
    s = settings.Settings()
    eq(s.loads(None), 0, "no file")
    eq(s.loads(""), 0, "empty file")
    eq(s.loads("{not json"), 1, "torn write")
    eq(s.get("heartbeat_ms"), 1000, "defaults after torn write")
    eq(s.loads("[1, 2]"), 1, "not an object")
    bad = s.loads('{"heartbeat_ms": 5, "lamp_max": 50, "old_key": 1, "report_interval_ms": "x"}')
    eq(bad, 3, "three bad entries")
    eq(s.get("lamp_max"), 50, "good entry kept")
    eq(s.get("heartbeat_ms"), 1000, "bad entry -> default")
    eq(s.loads('{"failsafe_lux_on": 90, "failsafe_lux_off": 10}'), 1, "inverted pair")
    eq(s.get("failsafe_lux_on"), 20, "pair reset: on")
    eq(s.get("failsafe_lux_off"), 50, "pair reset: off")
    eq(s.loads('{"failsafe_lux_on": 70, "failsafe_lux_off": 90}'), 0, "any order")
    eq(s.get("failsafe_lux_on"), 70, "on")


for f in (duty_curve_ends_and_floor, duty_curve_monotonic, fade_is_linear,
          fade_down_and_zero_length, fade_clamps_to_lamp_max, fade_retarget_midway,
          fade_across_ticks_wrap, hold_freezes_output):
    run("lamp", f)
for f in (due_once_after_timeout, seen_refreshes_and_ends, hysteresis, entry_resets_to_dark,
          failsafe_across_ticks_wrap):
    run("failsafe", f)
for f in (defaults_and_index, set_validates, lux_pair_stays_ordered, persist_round_trip,
          loads_survives_bad_storage):
    run("settings", f)

print(f"DONE failed={_failed}")
sys.exit(1 if _failed else 0)
