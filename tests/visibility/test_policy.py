"""The dimming policy (sans-I/O): the table in docs/dimming.md, row by row, and
hypothesis properties: the level never leaves {0} U [floor, design], and noisy
inputs do not make it oscillate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_controller.visibility.config import DimmingConfig, SchedulePeriod
from edge_controller.visibility.policy import (
    Decision,
    DimmingPolicy,
    Inputs,
    Override,
    Schedule,
    Visibility,
)

LONDON = (51.5, -0.12)


def ts(h: float, day: int = 15) -> float:
    """UTC epoch seconds on 2026-10-(day) at hour h (sunset 17:07, dusk 17:41 UTC)."""
    base = datetime(2026, 10, day, tzinfo=UTC).timestamp()
    return base + h * 3600


DAY = ts(12.0)
TWILIGHT = ts(17.3)
NIGHT = ts(21.0)
CLEAR = Visibility(">=1000", 0.9)
FOG = Visibility("200-1000", 0.8)
UNKNOWN = Visibility("unknown", 0.0)


def cfg(**kw: object) -> DimmingConfig:
    base: dict[str, object] = {"enabled": True, "fall_hold_s": 300.0, "fall_time_s": 180.0,
                               "unknown_hold_s": 600.0, "presence_hold_s": 60.0}
    base.update(kw)
    return DimmingConfig.model_validate(base)


def policy(c: DimmingConfig | None = None, where: tuple[float, float] | None = LONDON,
           tz: str = "Europe/London") -> DimmingPolicy:
    c = c or cfg()
    return DimmingPolicy(c, where[0] if where else None, where[1] if where else None, tz)


def run(p: DimmingPolicy, t0: float, seconds: float, step: float = 5.0,
        **inp: object) -> list[Decision]:
    out = []
    t = t0
    while t <= t0 + seconds + 1e-9:
        out.append(p.step(Inputs(now=t, **inp)))  # type: ignore[arg-type]
        t += step
    return out


# ---- the table --------------------------------------------------------------------


def test_off_by_day_design_in_twilight_night_level_at_night() -> None:
    p = policy()
    d = p.step(Inputs(DAY, lux=20000.0, visibility=CLEAR))
    assert (d.level, d.reason, d.regime) == (0, "day", "day")
    d = policy().step(Inputs(TWILIGHT, lux=40.0, visibility=CLEAR))
    assert (d.level, d.reason, d.regime) == (100, "twilight", "twilight")
    d = policy().step(Inputs(NIGHT, lux=1.0, visibility=CLEAR))
    assert (d.level, d.reason) == (80, "night")


def test_rise_is_immediate_with_a_short_fade() -> None:
    p = policy()
    run(p, NIGHT, 60, lux=1.0, visibility=CLEAR)
    d = p.step(Inputs(NIGHT + 65, lux=1.0, visibility=FOG))
    assert (d.level, d.reason, d.fade_ms) == (100, "low_visibility", 2000)


def test_fall_waits_for_the_hold_then_ramps_slowly() -> None:
    p = policy()
    run(p, NIGHT, 10, lux=1.0, visibility=FOG)
    ds = run(p, NIGHT + 15, 700, lux=1.0, visibility=CLEAR)
    levels = [d.level for d in ds]
    # Held at design for fall_hold_s (300 s), then down 20 points at 100 %/180 s: 36 s.
    first_drop = next(i for i, lv in enumerate(levels) if lv < 100)
    assert 295 <= first_drop * 5 <= 310
    assert levels[-1] == 80
    ramp = [d for d in ds if d.falling and d.level < 100]
    assert 30 <= len(ramp) * 5 <= 45
    assert all(d.fade_ms == 5000 for d in ramp if d.level > 80)  # each step fades into the next
    assert ds[-1].reason == "night" and not ds[-1].falling


def test_a_blip_restarts_the_hold() -> None:
    p = policy()
    run(p, NIGHT, 10, lux=1.0, visibility=FOG)
    run(p, NIGHT + 15, 250, lux=1.0, visibility=CLEAR)
    p.step(Inputs(NIGHT + 270, lux=1.0, visibility=FOG))  # fog back for a moment
    ds = run(p, NIGHT + 275, 280, lux=1.0, visibility=CLEAR)
    assert all(d.level == 100 for d in ds)  # the hold started again at the blip


def test_unknown_visibility_holds_then_goes_to_design() -> None:
    p = policy()
    run(p, NIGHT, 700, lux=1.0, visibility=CLEAR)  # settled at night level
    ds = run(p, NIGHT + 705, 590, lux=1.0, visibility=UNKNOWN)
    assert all(d.level == 80 and d.visibility == "unknown" for d in ds)
    d = p.step(Inputs(NIGHT + 705 + 600, lux=1.0, visibility=UNKNOWN))
    assert (d.level, d.reason) == (100, "visibility_unknown")
    # Low confidence counts as unknown too.
    p2 = policy()
    run(p2, NIGHT, 700, lux=1.0, visibility=CLEAR)
    d = run(p2, NIGHT + 705, 605, lux=1.0, visibility=Visibility("50-200", 0.2))[-1]
    assert d.reason == "visibility_unknown"


def test_night_starts_at_design_until_visibility_is_known() -> None:
    p = policy()
    d = p.step(Inputs(NIGHT, lux=1.0, visibility=UNKNOWN))
    assert (d.level, d.reason) == (100, "visibility_pending")
    ds = run(p, NIGHT + 5, 500, lux=1.0, visibility=CLEAR)
    assert ds[-1].level == 80


def test_no_visibility_source_means_plain_night_level() -> None:
    d = policy().step(Inputs(NIGHT, lux=1.0, visibility=None))
    assert (d.level, d.reason) == (80, "night")


def test_pedestrians_raise_and_hold() -> None:
    p = policy()
    run(p, NIGHT, 700, lux=1.0, visibility=CLEAR)
    d = p.step(Inputs(NIGHT + 705, lux=1.0, visibility=CLEAR, presence=True))
    assert (d.level, d.reason) == (100, "pedestrians")
    d = p.step(Inputs(NIGHT + 750, lux=1.0, visibility=CLEAR))
    assert d.reason == "pedestrians"  # presence_hold_s (60 s)
    d = p.step(Inputs(NIGHT + 770, lux=1.0, visibility=CLEAR))
    assert d.reason == "night" and d.level == 100 and d.falling  # then the fall hold


def test_override_clamped_and_expires() -> None:
    p = policy(cfg(floor_level=30))
    run(p, NIGHT, 700, lux=1.0, visibility=CLEAR)
    ov = Override(10, NIGHT + 1000)
    d = p.step(Inputs(NIGHT + 705, lux=1.0, visibility=CLEAR, override=ov))
    assert (d.level, d.reason, d.fade_ms) == (30, "override", 1000)  # floor
    d = p.step(Inputs(NIGHT + 710, lux=1.0, visibility=CLEAR, override=Override(0, ov.until)))
    assert d.level == 0  # off is allowed
    d = p.step(Inputs(NIGHT + 1005, lux=1.0, visibility=CLEAR, override=ov))
    assert (d.level, d.reason) == (80, "night")  # expired: back at once
    over = policy(cfg(design_level=90))
    d = over.step(Inputs(NIGHT, lux=1.0, override=Override(100, NIGHT + 10)))
    assert d.level == 90  # never above design


def test_night_schedule_in_local_time() -> None:
    sched = [SchedulePeriod(start="00:30", end="05:00", level=50)]
    p = policy(cfg(schedule=sched), tz="Europe/London")
    # 2026-10-15 is BST (UTC+1): 00:30 local = 23:30 UTC the day before.
    d = run(p, ts(23.0, 14), 600, lux=1.0, visibility=CLEAR)[-1]  # 00:10 local
    assert d.reason == "night" and d.level == 80
    ds = run(p, ts(23.0, 14) + 605, 1800, lux=1.0, visibility=CLEAR)
    assert ds[-1].reason == "night_schedule" and ds[-1].level == 50
    p.set_schedule(Schedule(60, ()))
    assert p.step(Inputs(ts(23.0, 14) + 2410, lux=1.0, visibility=CLEAR)).target == 60


def test_dark_by_day_and_day_fog() -> None:
    d = policy().step(Inputs(DAY, lux=5.0, visibility=CLEAR))
    assert (d.level, d.reason) == (100, "dark_by_day")
    d = policy().step(Inputs(DAY, lux=20000.0, visibility=Visibility("50-200", 0.9)))
    assert (d.level, d.reason) == (0, "day")
    d = policy(cfg(day_fog=True)).step(Inputs(DAY, lux=20000.0,
                                              visibility=Visibility("50-200", 0.9)))
    assert (d.level, d.reason) == (100, "day_fog")


def test_without_sun_position_lux_decides() -> None:
    p = policy(where=None)
    assert p.step(Inputs(DAY, lux=500.0)).reason == "day"
    p = policy(where=None)
    assert p.step(Inputs(DAY, lux=10.0)).reason == "twilight"
    p = policy(where=None)
    d = p.step(Inputs(DAY, lux=1.0, visibility=CLEAR))
    assert (d.level, d.reason) == (80, "night")
    d = policy(where=None).step(Inputs(DAY, lux=None))
    assert (d.level, d.reason) == (100, "no_light_info")
    # A stale or failed lux reading is no reading.
    d = policy(where=None).step(Inputs(DAY, lux=500.0, lux_age_s=120.0))
    assert d.reason == "no_light_info"
    d = policy(where=None).step(Inputs(DAY, lux=float("nan")))
    assert d.reason == "no_light_info"


def test_lux_hysteresis() -> None:
    p = policy(where=None)
    assert p.step(Inputs(DAY, lux=500.0)).reason == "day"
    for i, lux in enumerate([45.0, 31.0, 59.0, 40.0]):  # between lux_on 30 and lux_off 60
        assert p.step(Inputs(DAY + 5 * (i + 1), lux=lux)).reason == "day"
    assert p.step(Inputs(DAY + 30, lux=25.0)).reason == "twilight"
    for i, lux in enumerate([35.0, 59.0, 31.0]):
        assert p.step(Inputs(DAY + 35 + 5 * i, lux=lux)).regime == "twilight"
    assert p.step(Inputs(DAY + 60, lux=61.0)).regime == "day"


def test_decision_as_dict() -> None:
    d = policy().step(Inputs(NIGHT, lux=1.0, visibility=CLEAR))
    assert d.as_dict()["reason"] == "night" and isinstance(d.as_dict()["sun_elevation"], float)


def test_config_validates_orders() -> None:
    with pytest.raises(ValueError, match="floor_level"):
        DimmingConfig(floor_level=90, design_level=80)
    with pytest.raises(ValueError, match="lux_on"):
        DimmingConfig(lux_on=100.0, lux_off=50.0)
    with pytest.raises(ValueError, match="empty"):
        DimmingConfig(schedule=[SchedulePeriod(start="01:00", end="01:00", level=50)])


# ---- properties --------------------------------------------------------------------------

BANDS = [">=1000", "200-1000", "50-200", "<50", "unknown"]

step_inputs = st.tuples(
    st.floats(min_value=1.0, max_value=30.0),  # seconds since the last step
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=2000.0)),  # lux
    st.sampled_from(BANDS),
    st.floats(min_value=0.0, max_value=1.0),  # confidence
    st.booleans(),  # presence
    st.one_of(st.none(), st.integers(min_value=0, max_value=100)),  # override level
)


@settings(max_examples=150, deadline=None)
@given(
    start=st.sampled_from([DAY, TWILIGHT, NIGHT, ts(6.3), ts(17.6)]),
    floor=st.integers(min_value=1, max_value=60),
    design=st.integers(min_value=60, max_value=100),
    night=st.integers(min_value=0, max_value=100),
    steps=st.lists(step_inputs, min_size=1, max_size=60),
)
def test_level_never_leaves_floor_and_design(start: float, floor: int, design: int,
                                              night: int, steps: list[tuple]) -> None:
    p = policy(cfg(floor_level=floor, design_level=design, night_level=night))
    t = start
    for dt, lux, band, conf, presence, ov in steps:
        t += dt
        d = p.step(Inputs(t, lux=lux, visibility=Visibility(band, conf), presence=presence,
                          override=None if ov is None else Override(ov, t + 10)))
        assert d.level == 0 or floor <= d.level <= design, d
        assert d.target == 0 or floor <= d.target <= design, d
        assert 0 <= d.fade_ms <= 65535


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31),
    flip=st.floats(min_value=0.05, max_value=0.6),
    start=st.sampled_from([NIGHT, ts(17.6), ts(6.3)]),
)
def test_no_oscillation_under_noisy_inputs(seed: int, flip: float, start: float) -> None:
    """Three hours of noisy inputs every 5 s: lux jittering, visibility flickering
    between clear, fog and unknown, people coming and going. The level may rise
    at any moment but only falls after fall_hold_s of wanting less, so between a
    rise and the next fall there are always fall_hold_s: at most one up-down cycle
    per fall_hold_s."""
    import random

    rnd = random.Random(seed)
    c = cfg()
    p = policy(c)
    t = start
    last_rise = -1e9
    prev = None
    cycles = 0
    falling = False
    for _ in range(int(3 * 3600 / 5)):
        t += 5
        band = rnd.choices([">=1000", "200-1000", "unknown"], [1 - flip, flip / 2, flip / 2])[0]
        d = p.step(Inputs(t, lux=max(0.0, rnd.gauss(20.0, 15.0)),
                          visibility=Visibility(band, rnd.uniform(0.3, 1.0)),
                          presence=rnd.random() < 0.01))
        if prev is not None:
            if d.level > prev:
                last_rise = t
                if falling:
                    cycles += 1
                falling = False
            elif d.level < prev:
                assert t - last_rise >= c.fall_hold_s - 1e-6, (t - last_rise, d)
                falling = True
        prev = d.level
    assert cycles <= 3 * 3600 / c.fall_hold_s


def test_noisy_lux_inside_the_hysteresis_never_switches() -> None:
    import random

    rnd = random.Random(1)
    p = policy(where=None)
    p.step(Inputs(DAY, lux=1000.0))
    levels = {p.step(Inputs(DAY + 5 * i, lux=rnd.uniform(31.0, 59.0))).level
              for i in range(1, 2000)}
    assert levels == {0}
