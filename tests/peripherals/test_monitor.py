"""Health, change-of-value and events of one device (DeviceMonitor), on a fake clock."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from edge_controller.peripherals.monitor import DeviceMonitor, Output, RateLimitedLog
from edge_controller.peripherals.status import ChargerStatus, ScreenStatus

from .conftest import validate_status


def mon(listener: bool = False, lost_after_s: float = 5.0, degraded_hold_s: float = 10.0,
        refresh_s: float = 60.0) -> DeviceMonitor:
    return DeviceMonitor("charger-1", "ocpp_charger" if listener else "modbus_charger",
                         lost_after_s=lost_after_s, degraded_hold_s=degraded_hold_s,
                         refresh_s=refresh_s, deadband_pct=5.0, started=0.0,
                         wall=lambda: "2026-11-28T23:10:07.123Z", listener=listener)


def statuses(out: list[Output]) -> list[dict[str, Any]]:
    for o in out:
        if o.kind == "status":
            validate_status(o.body)
    return [o.body for o in out if o.kind == "status"]


def events(out: list[Output]) -> list[str]:
    return [o.name for o in out if o.kind == "event"]


CH = ChargerStatus("Available", voltage_v=230.0, power_w=0.0, session_energy_wh=0.0,
                   meter_total_wh=1000.0)


def test_pending_until_first_reading_then_ok() -> None:
    m = mon()
    assert m.evaluate(1.0) == []
    m.reading(CH, 1.5)
    (s,) = statuses(m.evaluate(1.5))
    assert s["health"] == "ok" and s["reasons"] == []
    assert s["charger"]["connector_state"] == "Available"
    assert s["seen_at"] == "2026-11-28T23:10:07.123Z" and s["screen"] is None


def test_never_answering_is_lost_after_lost_after_s_with_an_event() -> None:
    m = mon()
    m.error("no_answer", 1.0)
    assert m.evaluate(4.99) == []
    out = m.evaluate(5.0)
    (s,) = statuses(out)
    assert s["health"] == "lost" and s["reasons"] == ["no_answer"] and s["charger"] is None
    assert events(out) == ["periph_lost"]
    assert m.evaluate(5.1) == []  # announced once


def test_errors_degrade_then_lost_then_restored_ok() -> None:
    m = mon()
    m.reading(CH, 0.0)
    m.evaluate(0.0)
    m.error("malformed_reply", 1.0)
    (s,) = statuses(m.evaluate(1.0))
    assert s["health"] == "degraded" and s["reasons"] == ["malformed_reply"]
    m.error("no_answer", 2.0)
    (s,) = statuses(m.evaluate(2.0))
    assert s["reasons"] == ["malformed_reply", "no_answer"]
    assert statuses(m.evaluate(4.9)) == []
    out = m.evaluate(5.0)  # last good reading at 0.0
    assert statuses(out)[0]["health"] == "lost" and events(out) == ["periph_lost"]
    assert statuses(out)[0]["charger"]["connector_state"] == "Available"  # last known
    m.reading(CH, 8.0)
    out = m.evaluate(8.0)
    (s,) = statuses(out)
    assert s["health"] == "ok" and s["reasons"] == []  # the loss's errors do not linger
    assert events(out) == ["periph_restored"]
    ev = next(o for o in out if o.kind == "event")
    assert ev.body["lost_for_s"] == pytest.approx(3.0)


def test_degraded_clears_after_the_hold_time() -> None:
    m = mon(degraded_hold_s=3.0)
    m.reading(CH, 0.0)
    m.evaluate(0.0)
    m.error("exception_response", 1.0)
    m.reading(CH, 1.5)
    assert statuses(m.evaluate(1.5))[0]["health"] == "degraded"
    m.reading(CH, 3.9)
    assert statuses(m.evaluate(3.9)) == []
    m.reading(CH, 4.0)
    assert statuses(m.evaluate(4.0))[0]["health"] == "ok"


def test_listener_follows_its_connection() -> None:
    m = mon(listener=True)
    out = m.evaluate(5.0)
    assert statuses(out)[0]["reasons"] == ["never_connected"] and events(out) == ["periph_lost"]
    m.set_connected(True, 6.0)
    out = m.evaluate(6.0)
    assert statuses(out)[0]["health"] == "ok" and events(out) == ["periph_restored"]
    # An open connection counts as contact however long it is quiet.
    assert statuses(m.evaluate(50.0)) == []
    m.set_connected(False, 50.0)
    (s,) = statuses(m.evaluate(50.0))
    assert s["health"] == "degraded" and s["reasons"] == ["disconnected"]
    assert statuses(m.evaluate(54.9)) == []
    out = m.evaluate(55.0)
    assert statuses(out)[0]["health"] == "lost" and statuses(out)[0]["reasons"] == ["disconnected"]
    assert events(out) == ["periph_lost"]


def test_conditions_hold_until_cleared() -> None:
    m = mon(listener=True)
    m.set_connected(True, 0.0)
    m.set_condition("upstream_unreachable", True)
    assert statuses(m.evaluate(0.0))[0]["reasons"] == ["upstream_unreachable"]
    assert statuses(m.evaluate(50.0)) == []
    m.set_condition("upstream_unreachable", False)
    assert statuses(m.evaluate(51.0))[0]["health"] == "ok"


def test_change_of_value_with_deadband_and_refresh() -> None:
    m = mon(refresh_s=30.0, lost_after_s=100.0)
    m.reading(CH, 0.0)
    assert len(statuses(m.evaluate(0.0))) == 1
    m.reading(ChargerStatus("Available", voltage_v=230.9, power_w=0.0,
                            session_energy_wh=0.0, meter_total_wh=1000.0), 1.0)
    assert statuses(m.evaluate(1.0)) == []  # within 1 V
    m.reading(ChargerStatus("Charging", voltage_v=230.9, power_w=7000.0,
                            session_energy_wh=0.0, meter_total_wh=1000.0), 2.0)
    assert len(statuses(m.evaluate(2.0))) == 1  # state change
    m.reading(ChargerStatus("Charging", voltage_v=230.9, power_w=7300.0,
                            session_energy_wh=5.0, meter_total_wh=1005.0), 3.0)
    assert statuses(m.evaluate(3.0)) == []  # +4.3 % power, +5 Wh: inside the deadband
    m.reading(ChargerStatus("Charging", voltage_v=230.9, power_w=7400.0,
                            session_energy_wh=40.0, meter_total_wh=1040.0), 4.0)
    assert len(statuses(m.evaluate(4.0))) == 1  # energy +40 Wh > floor 10 Wh
    assert statuses(m.evaluate(33.9)) == []
    assert len(statuses(m.evaluate(34.0))) == 1  # refresh after 30 s


def test_fault_raised_and_cleared_once_each() -> None:
    m = mon()
    m.reading(CH, 0.0)
    assert events(m.evaluate(0.0)) == []
    m.reading(ChargerStatus("Faulted", error_code="12"), 1.0)
    out = m.evaluate(1.0)
    assert [o.kind for o in out] == ["status", "event"]  # the status first, then the event
    assert events(out) == ["periph_fault_raised"]
    ev = out[1].body
    assert ev == {"device_id": "charger-1", "kind": "modbus_charger", "fault": "12",
                  "connector_state": "Faulted", "error_code": "12"}
    m.reading(ChargerStatus("Faulted", error_code="12"), 2.0)
    assert events(m.evaluate(2.0)) == []
    m.reading(ChargerStatus("Faulted", error_code="13"), 3.0)
    assert events(m.evaluate(3.0)) == ["periph_fault_raised"]  # a different fault
    m.reading(CH, 4.0)
    out = m.evaluate(4.0)
    assert events(out) == ["periph_fault_cleared"] and out[-1].body["fault"] == "13"


def test_screen_faults_too() -> None:
    m = DeviceMonitor("screen-1", "led_screen", 5.0, 10.0, 60.0, 5.0, 0.0)
    m.reading(ScreenStatus(True, 80, "a", 40.0, None), 0.0)
    m.evaluate(0.0)
    m.reading(ScreenStatus(True, 80, "a", 40.0, "PSU"), 1.0)
    out = m.evaluate(1.0)
    assert events(out) == ["periph_fault_raised"] and statuses(out)[0]["screen"]["fault"] == "PSU"


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    t = [0.0]
    rl = RateLimitedLog(logging.getLogger("t"), every_s=10.0, burst=2, clock=lambda: t[0])
    with caplog.at_level(logging.WARNING):
        assert rl.warning("dev", "no_answer", "a")
        assert rl.warning("dev", "no_answer", "b")
        assert not rl.warning("dev", "no_answer", "c")
        assert not rl.warning("dev", "no_answer", "d")
        assert rl.warning("dev", "bad_value", "e")
        t[0] = 10.0
        assert rl.warning("dev", "no_answer", "f")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["dev: no_answer: a", "dev: no_answer: b", "dev: bad_value: e",
                    "dev: no_answer: f (2 more since the last report)"]
