"""The OCPP 1.6J observer (sans-I/O): normalisation and rejection of malformed traffic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_controller.peripherals.ocpp_proxy import OcppObserver


def call(uid: str, action: str, payload: dict[str, Any]) -> str:
    return json.dumps([2, uid, action, payload])


def result(uid: str, payload: dict[str, Any]) -> str:
    return json.dumps([3, uid, payload])


def status(uid: str, state: str, cid: int = 1, error: str = "NoError", **kw: Any) -> str:
    return call(uid, "StatusNotification", {"connectorId": cid, "errorCode": error,
                                            "status": state, **kw})


def meter(uid: str, values: list[dict[str, Any]], cid: int = 1) -> str:
    return call(uid, "MeterValues", {"connectorId": cid, "meterValue": [
        {"timestamp": "2026-11-28T23:10:07.123Z", "sampledValue": values}]})


def test_a_session_is_followed_with_energy_counted() -> None:
    o = OcppObserver()
    assert o.status() is None
    assert o.feed("cp", call("1", "BootNotification", {"chargePointVendor": "V",
                                                       "chargePointModel": "M"})).rejected is None
    o.feed("cs", result("1", {"status": "Accepted", "currentTime": "2026-11-28T23:10:07Z",
                              "interval": 300}))
    assert o.boot_status == "Accepted" and o.vendor == "V"
    assert o.feed("cp", status("2", "Available")).changed
    o.feed("cs", result("2", {}))
    o.feed("cp", status("3", "Preparing"))
    o.feed("cp", call("4", "StartTransaction", {"connectorId": 1, "idTag": "T",
                                                "meterStart": 1000,
                                                "timestamp": "2026-11-28T23:10:07Z"}))
    seen = o.feed("cs", result("4", {"transactionId": 77, "idTagInfo": {"status": "Accepted"}}))
    assert seen.changed and o.transaction_id == 77
    o.feed("cp", status("5", "Charging"))
    o.feed("cp", meter("6", [
        {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "230", "measurand": "Voltage", "unit": "V"},
        {"value": "32.2", "measurand": "Current.Import", "unit": "A"}]))
    s = o.status()
    assert s is not None and s.connector_state == "Charging"
    assert (s.power_w, s.voltage_v, s.current_a) == (7400.0, 230.0, 32.2)
    assert (s.meter_total_wh, s.session_energy_wh, s.transaction_id) == (1500.0, 500.0, 77)
    o.feed("cp", call("7", "StopTransaction", {"meterStop": 1800, "transactionId": 77,
                                               "timestamp": "2026-11-28T23:20:07Z"}))
    o.feed("cp", status("8", "Finishing"))
    s = o.status()
    assert s is not None and s.connector_state == "Finishing"
    assert (s.session_energy_wh, s.transaction_id, s.power_w) == (800.0, None, 0.0)
    assert o.rejected == 0


def test_energy_default_measurand_kwh_and_per_phase_values() -> None:
    o = OcppObserver()
    o.feed("cp", status("1", "Charging"))
    o.feed("cp", meter("2", [
        {"value": "12.5", "unit": "kWh"},  # no measurand: Energy.Active.Import.Register
        {"value": "10", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "11", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
        {"value": "230", "measurand": "Voltage", "phase": "L1-N"},
        {"value": "232", "measurand": "Voltage", "phase": "L2-N"},
        {"value": "1", "measurand": "Current.Import", "phase": "N", "unit": "A"},
        {"value": "99", "measurand": "Temperature", "unit": "Celsius"}]))
    s = o.status()
    assert s is not None
    assert (s.meter_total_wh, s.current_a, s.voltage_v) == (12500.0, 21.0, 231.0)


def test_other_connectors_are_ignored_but_connector_zero_faulted_wins() -> None:
    o = OcppObserver(connector_id=1)
    o.feed("cp", status("1", "Charging", cid=2))
    assert o.status() is None
    o.feed("cp", status("2", "Available", cid=1))
    o.feed("cp", status("3", "Faulted", cid=0, error="GroundFailure", vendorErrorCode="E42"))
    s = o.status()
    assert s is not None and (s.connector_state, s.error_code, s.fault) == ("Faulted", "E42", "E42")
    o.feed("cp", status("4", "Available", cid=0))
    s = o.status()
    assert s is not None and s.connector_state == "Available" and s.fault is None


def test_a_connector_fault_carries_the_ocpp_error_code() -> None:
    o = OcppObserver()
    o.feed("cp", status("1", "Faulted", error="OverCurrentFailure"))
    s = o.status()
    assert s is not None and s.fault == "OverCurrentFailure"


@pytest.mark.parametrize("frame, why", [
    ("not json", "not valid JSON"),
    ('{"a": 1}', "should be a list"),
    ("[]", "MessageTypeId"),
    ('[9, "1", {}]', "isn't valid"),
    ('[2, "1"]', "missing elements"),
    ('[2, 5, "Heartbeat", {}]', "unique id"),
    ('[2, "1", "Heartbeat", []]', "payload object"),
    ('[2, "1", "StatusNotification", {"connectorId": "one", "errorCode": "NoError", '
     '"status": "Available"}]', "connectorId"),
    ('[2, "1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", '
     '"status": "Sleeping"}]', "status"),
    ('[2, "1", "BootNotification", {"chargePointVendor": "V"}]', "chargePointModel"),
    ('[2, "1", "Teleport", {}]', "unknown OCPP 1.6 action"),
    ('[3, "nobody-asked", {}]', "unknown unique id"),
    (b"\x00\x01", "binary frame"),
])
def test_malformed_messages_are_rejected_with_a_reason(frame: str | bytes, why: str) -> None:
    o = OcppObserver()
    o.feed("cp", status("0", "Available"))
    seen = o.feed("cp", frame)
    assert seen.rejected is not None and why in seen.rejected, seen.rejected
    s = o.status()
    assert s is not None and s.connector_state == "Available"  # nothing changed
    assert o.rejected == 1


def test_bad_meter_value_is_rejected() -> None:
    o = OcppObserver()
    seen = o.feed("cp", meter("1", [{"value": "lots", "measurand": "Power.Active.Import"}]))
    assert seen.rejected is not None and "not a number" in seen.rejected


def test_an_invalid_answer_is_rejected_and_an_answer_from_the_wrong_side_too() -> None:
    o = OcppObserver()
    o.feed("cp", call("1", "Heartbeat", {}))
    seen = o.feed("cs", result("1", {"currentTime": 5}))
    assert seen.rejected is not None and "currentTime" in seen.rejected
    o.feed("cp", call("2", "Heartbeat", {}))
    seen = o.feed("cp", result("2", {"currentTime": "2026-11-28T23:10:07Z"}))
    assert seen.rejected is not None and "side" in seen.rejected


def test_call_errors_and_central_system_calls_are_observed_quietly() -> None:
    o = OcppObserver()
    o.feed("cp", call("1", "Heartbeat", {}))
    assert o.feed("cs", json.dumps([4, "1", "InternalError", "oops", {}])).rejected is None
    assert o.feed("cs", call("x", "TriggerMessage",
                             {"requestedMessage": "StatusNotification"})).rejected is None
    assert o.feed("cp", result("x", {"status": "Accepted"})).rejected is None
    assert o.rejected == 0 and not o.pending


def test_pending_calls_are_bounded() -> None:
    o = OcppObserver()
    for i in range(1000):
        o.feed("cp", call(str(i), "Heartbeat", {}))
    assert len(o.pending) <= 256


def test_pending_calls_do_not_keep_their_payloads() -> None:
    """256 unanswered calls of 256 KiB each held 64 MiB before; only the fields an answer
    is read with are kept."""
    import tracemalloc

    big = "x" * (256 * 1024)
    tracemalloc.start()
    try:
        o = OcppObserver()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            o.feed("cp", call(f"d{i}", "DataTransfer", {"vendorId": "v", "data": big}))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(o.pending) == 256
    assert held < 1024 * 1024, held
    # and what a StartTransaction answer needs is still there
    o.feed("cp", call("st", "StartTransaction", {"connectorId": 1, "idTag": "t",
                                                 "meterStart": 1500,
                                                 "timestamp": "2026-11-28T23:10:07Z"}))
    assert o.pending["st"][2] == {"connectorId": 1, "meterStart": 1500}
