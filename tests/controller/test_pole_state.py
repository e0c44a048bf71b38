"""PoleState: link events in, upstream events out."""

from __future__ import annotations

import math

import pytest

from edge_controller.link import codec
from edge_controller.link.session import LinkEvent
from edge_controller.pole_state import PoleState
from tests.controller.fake_firmware import up_session

NAN = float("nan")


def frame(name: str, values: tuple[object, ...]) -> LinkEvent:
    (f,) = codec.Decoder().feed(codec.pack(name, 1, values))
    return LinkEvent("frame", f, f.fields())


def sensors(door: int = 0, mains: int = 1, tilt: float = 0.0, lux: float = 12.5,
            temp: float = 21.0, power: float = 40.0, energy: float = 1000.0) -> LinkEvent:
    return frame("sensor_report", (lux, temp, door, tilt, power, energy, mains))


def lamp(level: int = 50, failsafe: int = 0, on: int = 1) -> LinkEvent:
    return frame("lamp_state", (level, level, level * 655, on, failsafe))


def fault(code: int, active: int, detail: str = "") -> LinkEvent:
    return frame("fault_report", (code, active, detail))


def names(events: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [n for n, _ in events]


# ---- door and mains ---------------------------------------------------------------


def test_first_quiet_report_raises_nothing() -> None:
    ps = PoleState()
    assert ps.apply(sensors(door=0, mains=1)) == []
    assert ps.sensors is not None
    assert ps.sensors["door_open"] is False and ps.sensors["mains"] is True


def test_first_report_announces_only_alarming_states() -> None:
    ps = PoleState()
    assert names(ps.apply(sensors(door=1, mains=0))) == ["door_opened", "mains_lost"]


def test_door_transitions() -> None:
    ps = PoleState()
    seq = [0, 1, 1, 0, 0, 1]
    got = [names(ps.apply(sensors(door=d))) for d in seq]
    assert got == [[], ["door_opened"], [], ["door_closed"], [], ["door_opened"]]


def test_mains_transitions() -> None:
    ps = PoleState()
    seq = [1, 0, 0, 1, 1]
    got = [names(ps.apply(sensors(mains=m))) for m in seq]
    assert got == [[], ["mains_lost"], [], ["mains_restored"], []]


def test_door_and_mains_change_together() -> None:
    ps = PoleState()
    ps.apply(sensors(door=0, mains=1))
    assert sorted(names(ps.apply(sensors(door=1, mains=0)))) == ["door_opened", "mains_lost"]


# ---- tilt hysteresis -----------------------------------------------------------------


def test_tilt_alarm_at_10_clear_at_8_without_flapping() -> None:
    ps = PoleState()
    tilts = [5.0, 9.9, 10.0, 9.0, 8.5, 12.0, 9.5, 8.1, 8.0, 9.0, 9.99, 10.5, 11.0, 7.0]
    got = [names(ps.apply(sensors(tilt=t))) for t in tilts]
    assert got == [
        [], [], ["tilt_alarm"], [], [], [], [], [], ["tilt_cleared"], [], [], ["tilt_alarm"], [],
        ["tilt_cleared"],
    ]


def test_tilt_alarm_detail_and_state() -> None:
    ps = PoleState()
    ((name, detail),) = ps.apply(sensors(tilt=14.25))
    assert name == "tilt_alarm" and detail == {"tilt_deg": 14.25}
    assert ps.tilt_alarm


def test_tilt_alarm_on_the_first_report() -> None:
    ps = PoleState()
    assert names(ps.apply(sensors(tilt=30.0))) == ["tilt_alarm"]


def test_unknown_tilt_neither_raises_nor_clears() -> None:
    ps = PoleState()
    assert names(ps.apply(sensors(tilt=NAN))) == []
    ps.apply(sensors(tilt=11.0))
    assert names(ps.apply(sensors(tilt=NAN))) == []
    assert ps.tilt_alarm


# ---- NaN and friends ------------------------------------------------------------------


def test_nan_and_inf_sensor_values_become_none() -> None:
    ps = PoleState()
    ps.apply(sensors(lux=NAN, temp=NAN, tilt=NAN, power=float("inf"), energy=NAN))
    s = ps.sensors
    assert s is not None
    assert s["lux"] is None and s["temp_c"] is None and s["tilt_deg"] is None
    assert s["power_w"] is None and s["energy_wh"] is None


def test_finite_sensor_values_are_floats_rounded_for_json() -> None:
    ps = PoleState()
    ps.apply(sensors(lux=12.5, temp=-3.25, tilt=0.1, power=40.0, energy=1234.5))
    s = ps.sensors
    assert s is not None
    assert s["lux"] == 12.5 and s["temp_c"] == -3.25 and s["power_w"] == 40.0
    assert s["tilt_deg"] == pytest.approx(0.1)  # float32 on the wire
    for k in ("lux", "temp_c", "tilt_deg", "power_w", "energy_wh"):
        assert isinstance(s[k], float) and math.isfinite(s[k])  # type: ignore[arg-type]


# ---- faults ---------------------------------------------------------------------------


def test_fault_raise_and_clear_are_deduplicated() -> None:
    ps = PoleState()
    got = [ps.apply(fault(3, 1, "lux sensor silent")),
           ps.apply(fault(3, 1, "still silent")),
           ps.apply(fault(3, 0, "back")),
           ps.apply(fault(3, 0, "back again"))]
    assert [names(g) for g in got] == [["fault_raised"], [], ["fault_cleared"], []]
    assert got[0][0][1] == {"code": 3, "fault": "sensor_failure", "detail": "lux sensor silent"}
    assert got[2][0][1]["fault"] == "sensor_failure"
    assert ps.faults == {}


def test_faults_are_tracked_per_code() -> None:
    ps = PoleState()
    assert names(ps.apply(fault(1, 1))) == ["fault_raised"]
    assert names(ps.apply(fault(6, 1))) == ["fault_raised"]
    assert ps.faults == {1: "lamp_open_circuit", 6: "over_temperature"}
    assert names(ps.apply(fault(1, 0))) == ["fault_cleared"]
    assert ps.faults == {6: "over_temperature"}


def test_clearing_a_fault_never_raised_is_silent_and_unknown_codes_get_a_name() -> None:
    ps = PoleState()
    assert ps.apply(fault(4, 0)) == []
    ((name, detail),) = ps.apply(fault(999, 1, "vendor"))
    assert name == "fault_raised" and detail["fault"] == "fault_999"


# ---- lamp and fail-safe -------------------------------------------------------------------


def test_failsafe_entered_and_exited_from_lamp_state() -> None:
    ps = PoleState()
    got = [ps.apply(lamp(50, 0)), ps.apply(lamp(100, 1)), ps.apply(lamp(100, 1)),
           ps.apply(lamp(30, 0)), ps.apply(lamp(40, 0))]
    assert [names(g) for g in got] == [
        [], ["failsafe_entered"], [], ["failsafe_exited"], []]
    assert got[1][0][1] == {"level": 100}
    assert ps.lamp == {"level": 40, "target": 40, "duty": 40 * 655, "on": True, "failsafe": False}


def test_failsafe_reported_once_from_fault_report_and_lamp_state() -> None:
    # The board announces its fail-safe with fault 7 (link_lost), then its lamp_state agrees.
    ps = PoleState()
    ps.apply(lamp(50, 0))
    got = [names(ps.apply(fault(7, 1, "link silent 5000 ms"))), names(ps.apply(lamp(100, 1))),
           names(ps.apply(fault(7, 0, "link back"))), names(ps.apply(lamp(100, 0)))]
    assert got == [["failsafe_entered"], [], ["failsafe_exited"], []]


def test_first_lamp_state_in_failsafe_is_news() -> None:
    ps = PoleState()
    assert names(ps.apply(lamp(100, 1))) == ["failsafe_entered"]
    assert names(ps.apply(lamp(100, 1))) == []


# ---- link ---------------------------------------------------------------------------


def test_link_up_lost_restored_sequence() -> None:
    ps = PoleState()
    assert ps.apply(LinkEvent("up", detail="firmware 1")) == []
    assert ps.link_up
    ((name, _),) = ps.apply(LinkEvent("lost", detail="silent for 3.5 s"))
    assert name == "link_lost" and not ps.link_up
    ((name, detail),) = ps.apply(LinkEvent("up", detail="firmware 2"))
    assert name == "link_restored" and detail == {"detail": "firmware 2"} and ps.link_up
    assert names(ps.apply(LinkEvent("lost"))) == ["link_lost"]


def test_link_sequence_from_a_real_session() -> None:
    s, fw = up_session(0.0, lost_after_s=1.0, hello_timeout_s=0.5)
    ps = PoleState()
    ps.apply(LinkEvent("up"))  # what up_session drained
    s.tick(1.2)
    out = [n for ev in s.take_events() for n in names(ps.apply(ev))]
    assert out == ["link_lost"]
    fw.answer_hello(1.3)
    out = [n for ev in s.take_events() for n in names(ps.apply(ev))]
    assert out == ["link_restored"]


def test_incompatible_firmware_is_a_fault() -> None:
    ps = PoleState()
    ps.apply(LinkEvent("up"))
    ((name, detail),) = ps.apply(LinkEvent("incompatible", detail="speaks 2.0"))
    assert name == "fault_raised" and detail["fault"] == "link_incompatible"
    assert not ps.link_up


def test_other_frames_update_state_quietly() -> None:
    ps = PoleState()
    assert ps.apply(frame("digital_inputs", (0b101, 0b001))) == []
    assert ps.digital_inputs == 0b101
    stats = (1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert ps.apply(frame("stats", stats)) == []
    assert ps.firmware_stats is not None and ps.firmware_stats["rx_frames"] == 1
    assert ps.apply(frame("heartbeat", (5,))) == []
    assert ps.apply(LinkEvent("hello")) == []
