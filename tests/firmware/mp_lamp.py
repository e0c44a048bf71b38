# Lamp driver units (curve, limits, health), run UNDER MICROPYTHON:
#
#     micropython -X heapsize=64K tests/firmware/mp_lamp.py BUILD_DIR
#
# Prints "PASS name" / "FAIL name: why" and exits 1 on any failure.

import sys

sys.path[:0] = [sys.argv[1]]

import lamp  # noqa: E402

_failed = 0


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, what=""):
    if a != b:
        raise AssertionError(f"{what}: {a!r} != {b!r}")


def run(fn):
    global _failed
    try:
        fn()
        print("PASS lamp." + fn.__name__)
    except Exception as e:
        _failed += 1
        print(f"FAIL lamp.{fn.__name__}: {e!r}")


# ---- curve -------------------------------------------------------------------


def curve_ends():
    eq(lamp.duty_for(0), 0, "off")
    eq(lamp.duty_for(100), lamp.DUTY_MIN, "1 % is the driver floor")
    eq(lamp.duty_for(50), lamp.DUTY_MIN, "below 1 %: floor")
    eq(lamp.duty_for(10000), 65535, "100 %")


def curve_is_logarithmic():
    # Equal level steps are equal light ratios: +4.03 % per percent.
    prev = lamp.duty_for(100)
    for lv in range(2, 100):
        d = lamp.duty_for(lv * 100)
        r = d / prev
        check(1.035 < r < 1.046, f"step ratio {r} at {lv} %")
        prev = d
    # 50 % is about 14 % of the light, 80 % about 45 %.
    check(9000 < lamp.duty_for(5000) < 9200, f"50 % -> {lamp.duty_for(5000)}")
    check(29000 < lamp.duty_for(8000) < 30500, f"80 % -> {lamp.duty_for(8000)}")


def curve_monotonic_between_percents():
    prev = 0
    for c in range(0, 10001, 3):
        d = lamp.duty_for(c)
        check(d >= prev, f"not monotonic at {c}")
        prev = d


def fade_linear_in_level():
    m = lamp.Lamp(0)
    m.set(100, 1000, 0)
    m.step(500)
    eq(m.level, 50, "half the level half way")
    eq(m.duty, lamp.duty_for(5000), "duty on the curve")


# ---- health ------------------------------------------------------------------


def new():
    return [0, 0, 0, 0, 0, 0, 0, 0, False, 0, -1, 0, 0]


def expected(duty):
    return 60.0 * duty / 65535


def lamp_failure_after_debounce():
    h = new()
    duty = lamp.duty_for(8000)
    eq(lamp.health(h, 0, duty, True, expected(duty), 10.0, 1, 60, 1000), 0, "healthy")
    eq(lamp.health(h, 1000, duty, True, 0.5, 10.0, 1, 60, 1000), 0, "not yet")
    eq(lamp.health(h, 1500, duty, True, 0.5, 10.0, 1, 60, 1000), 0, "500 ms")
    eq(lamp.health(h, 2000, duty, True, 0.5, 10.0, 1, 60, 1000), 1, "raised after 1 s")
    eq(h[0], 1, "active")
    eq(lamp.health(h, 3000, duty, True, 0.5, 10.0, 1, 60, 1000), 0, "once")
    lamp.health(h, 4000, duty, True, expected(duty), 10.0, 1, 60, 1000)
    eq(lamp.health(h, 5000, duty, True, expected(duty), 10.0, 1, 60, 1000), 1, "cleared")
    eq(h[0], 0, "clear")


def no_power_fault_while_fading_or_without_mains():
    h = new()
    duty = 65535
    for t in range(0, 5000, 1000):
        eq(lamp.health(h, t, duty, False, 0.0, 10.0, 1, 60, 1000), 0, "fading")
    for t in range(5000, 9000, 1000):
        eq(lamp.health(h, t, duty, True, 0.0, 10.0, 0, 60, 1000) & 3, 0, "no mains")
    eq(lamp.health(h, 9000, duty, True, 0.0, 10.0, 1, 0, 1000), 0, "rated 0: checks off")


def power_high_and_drawn_while_off():
    h = new()
    for t in (0, 1000):
        lamp.health(h, t, 0, True, 5.0, 10.0, 1, 60, 1000)
    eq(h[0], 2, "5 W while off")
    h = new()
    duty = lamp.duty_for(5000)
    for t in (0, 1000):
        lamp.health(h, t, duty, True, 2.2 * expected(duty), 10.0, 1, 60, 1000)
    eq(h[0], 2, "drawing more than 1.5x")


def day_burning_after_sixty_debounces():
    h = new()
    duty = 65535
    for t in range(0, 60000, 1000):
        eq(lamp.health(h, t, duty, True, 60.0, 5000.0, 1, 60, 1000) & 4, 0, f"not yet {t}")
    eq(lamp.health(h, 60000, duty, True, 60.0, 5000.0, 1, 60, 1000), 4, "day-burning")
    eq(lamp.health(h, 61000, duty, True, 60.0, 20.0, 1, 60, 1000), 0, "dusk: not cleared yet")


def cycling_on_three_drop_outs():
    h = new()
    duty = 65535
    t = 0
    seen = 0
    for i in range(8):
        w = 60.0 if i % 2 == 0 else 0.0
        seen |= lamp.health(h, t, duty, True, w, 10.0, 1, 60, 1000)
        t += 1000
    check(h[0] & 8, f"cycling raised: {h!r}")
    check(seen & 8, "reported")
    # A quiet window (60 x 1 s) with the light steady clears it.
    for _ in range(130):
        lamp.health(h, t, duty, True, 60.0, 10.0, 1, 60, 1000)
        t += 1000
    eq(h[0] & 8, 0, "cleared after a quiet window")


def one_drop_is_not_cycling():
    h = new()
    duty = 65535
    for i, w in enumerate((60.0, 0.0, 60.0, 60.0, 60.0)):
        lamp.health(h, i * 1000, duty, True, w, 10.0, 1, 60, 1000)
    eq(h[0] & 8, 0, "one drop-out")


for f in (curve_ends, curve_is_logarithmic, curve_monotonic_between_percents,
          fade_linear_in_level, lamp_failure_after_debounce,
          no_power_fault_while_fading_or_without_mains, power_high_and_drawn_while_off,
          day_burning_after_sixty_debounces, cycling_on_three_drop_outs, one_drop_is_not_cycling):
    run(f)
print(f"DONE failed={_failed}")
sys.exit(1 if _failed else 0)
