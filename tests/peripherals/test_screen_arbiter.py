"""The screen arbiter (sans-I/O): priorities, expiries, cooldown, quiet hours, fog
hysteresis, and text layout that never cuts a character (CJK takes two columns)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edge_controller.peripherals.screen_arbiter import (
    ScreenArbiter,
    ScreenWarningsConfig,
    pages,
    width,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()


def arb(**kw: object) -> ScreenArbiter:
    return ScreenArbiter(ScreenWarningsConfig(**kw), "UTC")  # type: ignore[arg-type]


def test_priority_crossing_over_fog_over_backend_over_idle() -> None:
    a = arb(fog_on_s=0.0, idle_text="Welcome")
    assert a.current(T0).source == "idle" and a.current(T0).text == "Welcome"
    a.backend_text("Market on Sunday", 300, T0)
    assert a.current(T0 + 1).source == "backend"
    a.visibility("50-200", 0.8, T0 + 2)
    fog = a.current(T0 + 2)
    assert fog.source == "fog" and "< 200 m" in fog.text and "大雾" in fog.text
    assert a.violation("mid-road", T0 + 3)
    cur = a.current(T0 + 3)
    assert cur.source == "crossing" and cur.text.splitlines() == [
        "Red light: please wait", "红灯 请勿通行"]
    assert "mid-road" in cur.reason
    assert a.current(T0 + 3 + 8.1).source == "fog"  # the warning ends: fog again


def test_backend_message_is_restored_after_a_warning_and_expires_on_its_own() -> None:
    a = arb()
    a.backend_text("Road works", 30, T0)
    a.violation("z", T0 + 5)
    assert a.current(T0 + 6).source == "crossing"
    assert a.current(T0 + 14).text == "Road works"  # 8 s warning over, 30 s not yet
    assert a.current(T0 + 31).source == "idle"


def test_changed_reports_each_change_once() -> None:
    a = arb()
    assert a.changed(T0) is not None  # the first content
    assert a.changed(T0 + 1) is None
    a.violation("z", T0 + 2)
    first = a.changed(T0 + 2)
    assert first is not None and first.source == "crossing"
    assert a.changed(T0 + 3) is None
    back = a.changed(T0 + 11)
    assert back is not None and back.source == "idle"


def test_crossing_cooldown_and_extension() -> None:
    a = arb(crossing_s=8.0, crossing_cooldown_s=20.0)
    assert a.violation("z", T0)
    assert a.violation("z", T0 + 5)  # still shown: extended to T0 + 13
    assert a.current(T0 + 12).source == "crossing"
    assert not a.violation("z", T0 + 15)  # ended at 13, but the cooldown runs to 20
    assert a.current(T0 + 15).source == "idle"
    assert a.violation("z", T0 + 21)


def test_audio_quiet_hours_do_not_silence_the_screen_unless_configured() -> None:
    night = datetime(2026, 6, 1, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert arb().violation("z", night)  # no screen quiet hours by default
    a = arb(crossing_quiet_hours=("22:00", "06:00"))
    assert not a.violation("z", night)
    assert a.current(night).source == "idle"
    assert a.violation("z", T0)  # noon


def test_fog_warning_hysteresis_and_unknown_never_warns() -> None:
    a = arb(fog_on_s=10.0, fog_off_s=60.0, fog_min_confidence=0.5)
    for k in range(30):
        a.visibility("unknown", 0.0, T0 + k)
    assert a.current(T0 + 30).source == "idle"
    a.visibility("<50", 0.3, T0 + 31)  # too little confidence
    a.visibility("<50", 0.3, T0 + 45)
    assert a.current(T0 + 45).source == "idle"
    a.visibility("50-200", 0.7, T0 + 50)
    a.visibility("50-200", 0.7, T0 + 55)
    assert a.current(T0 + 55).source == "idle"  # not yet 10 s
    a.visibility("50-200", 0.7, T0 + 61)
    assert a.current(T0 + 61).source == "fog"
    a.visibility("<50", 0.7, T0 + 62)
    assert "< 50 m" in a.current(T0 + 62).text
    a.visibility("200-1000", 0.9, T0 + 70)
    a.visibility("unknown", 0.0, T0 + 100)  # unknown holds the warning as it is
    a.visibility("200-1000", 0.9, T0 + 110)
    a.visibility("200-1000", 0.9, T0 + 150)
    assert a.current(T0 + 150).source == "fog"  # clear only since 110
    a.visibility("200-1000", 0.9, T0 + 171)
    assert a.current(T0 + 171).source == "idle"


def test_disabled_shows_only_backend_and_idle() -> None:
    a = arb(enabled=False, fog_on_s=0.0)
    a.visibility("<50", 0.9, T0)
    assert not a.violation("z", T0)
    assert a.current(T0).source == "idle"


def test_layout_wraps_words_and_breaks_cjk_between_characters() -> None:
    assert width("红灯") == 4 and width("ab") == 2
    assert pages("Red light: please wait", 12, 2) == ["Red light:\nplease wait"]
    p = pages("大雾 能见度低 减速慢行", 6, 1)
    assert p == ["大雾", "能见度", "低", "减速慢", "行"]
    for page in p:
        assert all(width(line) <= 6 for line in page.splitlines())
    assert "".join(p) == "大雾能见度低减速慢行"  # nothing lost, nothing cut


def test_config_rejects_empty_texts() -> None:
    with pytest.raises(ValueError):
        ScreenWarningsConfig(crossing_text=[])


def test_an_extended_warning_or_a_resent_text_is_a_change() -> None:
    a = arb(crossing_s=8.0)
    a.changed(T0)
    a.violation("z", T0 + 1)
    first = a.changed(T0 + 1)
    assert first is not None and first.until == T0 + 9
    a.violation("z", T0 + 4)  # extended: the screen's display time must follow
    ext = a.changed(T0 + 4)
    assert ext is not None and ext.source == "crossing" and ext.until == T0 + 12
    a.backend_text("News", 60, T0 + 5)
    assert a.backend_pending(T0 + 5) and a.changed(T0 + 5) is None
    back = a.changed(T0 + 12)
    assert back is not None and back.source == "backend" and back.until == T0 + 65
    assert not a.backend_pending(T0 + 12)


def test_fog_has_no_end_and_a_warning_keeps_its_band_limit() -> None:
    a = arb(fog_on_s=0.0)
    a.visibility("<50", 0.9, T0)
    cur = a.current(T0)
    assert cur.source == "fog" and cur.until is None and "< 50 m" in cur.text
    assert cur.colour == "red" and cur.brightness is None


def test_empty_backend_text_clears_it_and_margin_must_be_below_hold() -> None:
    a = arb()
    a.backend_text("x", 60, T0)
    a.backend_text("", 60, T0 + 1)
    assert a.current(T0 + 1).source == "idle"
    with pytest.raises(ValueError):
        ScreenWarningsConfig(hold_s=5.0, refresh_margin_s=5.0)
