"""Modbus profile decoding (sans-I/O): read plans, normalisation, rejected replies."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from polesim.peripherals.modbus_charger import (
    crc16_modbus,
    encode_register,
    with_crc,
)

from edge_controller.peripherals.config import ModbusProfileConfig, RegisterConfig
from edge_controller.peripherals.modbus_charger import (
    ModbusReject,
    decode,
    decode_register,
    read_plan,
)

DEFAULT = ModbusProfileConfig()


def image(**values: float) -> dict[int, int]:
    base = {"connector_state": 0, "fault_code": 0, "voltage": 230.0, "current": 0.0,
            "power": 0.0, "session_energy": 0.0, "meter_total": 1000.0, **values}
    regs: dict[int, int] = {}
    for name, r in DEFAULT.registers().items():
        for i, w in enumerate(encode_register(r, base[name])):
            regs[r.address + i] = w
    return regs


def test_default_profile_is_one_read_of_ten_registers() -> None:
    assert read_plan(DEFAULT) == [(0, 10)]


def test_read_plan_splits_far_apart_registers_and_bridges_small_gaps() -> None:
    p = ModbusProfileConfig(
        connector_state=RegisterConfig(address=0), fault_code=RegisterConfig(address=5),
        voltage=RegisterConfig(address=1000, type="float32"),
        current=RegisterConfig(address=1002, type="float32"),
        power=RegisterConfig(address=1004, type="float32"),
        session_energy=RegisterConfig(type="none"),
        meter_total=RegisterConfig(address=2000, type="uint32"))
    assert read_plan(p) == [(0, 6), (1000, 6), (2000, 2)]


def test_decode_normalises_to_ocpp_states_and_engineering_units() -> None:
    s = decode(DEFAULT, image(connector_state=2, voltage=231.4, current=32.01, power=7400,
                              session_energy=1234, meter_total=1_250_000))
    assert s.connector_state == "Charging" and s.error_code is None
    assert s.voltage_v == pytest.approx(231.4) and s.current_a == pytest.approx(32.01)
    assert (s.power_w, s.session_energy_wh, s.meter_total_wh) == (7400, 1234, 1_250_000)
    assert s.fault is None


def test_fault_code_becomes_the_error_code_and_a_fault() -> None:
    s = decode(DEFAULT, image(connector_state=8, fault_code=12))
    assert s.connector_state == "Faulted" and s.error_code == "12" and s.fault == "12"
    # A fault code with a non-faulted state is still the charger's error (e.g. a warning).
    assert decode(DEFAULT, image(fault_code=3)).fault == "3"


def test_unknown_state_code_is_rejected_as_bad_value() -> None:
    with pytest.raises(ModbusReject) as e:
        decode(DEFAULT, image(connector_state=99))
    assert e.value.reason == "bad_value" and "99" in str(e.value)


def test_missing_registers_are_rejected_as_malformed() -> None:
    regs = image()
    del regs[9]
    with pytest.raises(ModbusReject) as e:
        decode(DEFAULT, regs)
    assert e.value.reason == "malformed_reply"


def test_out_of_range_word_is_rejected() -> None:
    regs = image()
    regs[2] = 70000
    with pytest.raises(ModbusReject, match="16-bit"):
        decode(DEFAULT, regs)


def test_signed_little_endian_and_float_registers() -> None:
    r16 = RegisterConfig(address=0, type="int16")
    assert decode_register(r16, {0: 0xFFFE}) == -2
    r32 = RegisterConfig(address=0, type="int32", word_order="little")
    assert decode_register(r32, {0: 0xFFFE, 1: 0xFFFF}) == -2
    f = RegisterConfig(address=0, type="float32")
    assert decode_register(f, {0: 0x4366, 1: 0x6666}) == pytest.approx(230.4, abs=1e-4)
    with pytest.raises(ModbusReject, match="not finite"):
        decode_register(f, {0: 0x7FC0, 1: 0})  # NaN


def test_absent_quantities_are_null() -> None:
    p = ModbusProfileConfig(voltage=RegisterConfig(type="none"),
                            meter_total=RegisterConfig(type="none"))
    regs = {a: 0 for a in range(10)}
    s = decode(p, regs)
    assert s.voltage_v is None and s.meter_total_wh is None and s.power_w == 0


@given(st.sampled_from(["uint16", "int16", "uint32", "int32", "float32"]),
       st.sampled_from(["big", "little"]), st.integers(-30000, 30000))
def test_encode_decode_roundtrip(typ: str, order: str, value: int) -> None:
    r = RegisterConfig.model_validate({"address": 3, "type": typ, "word_order": order})
    if typ.startswith("uint"):
        value = abs(value)
    words = encode_register(r, float(value))
    got = decode_register(r, {3 + i: w for i, w in enumerate(words)})
    assert got is not None and math.isclose(got, value, abs_tol=1e-3)


def test_crc_of_a_known_frame() -> None:
    # Read holding registers 0..9 of unit 1: 01 03 00 00 00 0A C5 CD
    assert with_crc(bytes.fromhex("01030000000A")) == bytes.fromhex("01030000000AC5CD")
    assert crc16_modbus(bytes.fromhex("01030000000AC5CD")) == 0
