"""float32 registers are read at the meter's resolution (sans-I/O): the shortest decimal
that float32 stores as the same value, never a different value."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_controller.peripherals.config import ModbusProfileConfig
from edge_controller.peripherals.modbus_charger import ModbusReject, decode, float32_decimal


def f32(x: float) -> bytes:
    return struct.pack(">f", x)


@pytest.mark.parametrize("written, read", [
    (1255.12, 1255.12), (230.7, 230.7), (0.1, 0.1), (-12.34, -12.34), (16777216.0, 16777216.0),
    (1255.1234, 1255.1234), (0.0, 0.0), (3.4028234663852886e38, 3.4028235e38),
])
def test_the_decimal_the_meter_wrote_comes_back(written: float, read: float) -> None:
    assert float32_decimal(f32(written)) == read


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_never_a_different_float32_and_never_more_than_9_digits(x: float) -> None:
    raw = f32(x)
    got = float32_decimal(raw)
    assert f32(got) == raw
    mantissa = f"{abs(got):e}".split("e")[0] if got else "0"
    assert got == float(f"{got:.9g}") and len(mantissa.replace(".", "").rstrip("0")) <= 9


def test_a_negative_session_energy_is_a_bad_value() -> None:
    p = ModbusProfileConfig(name="signed", session_energy={"address": 6, "type": "int32"})
    regs = dict.fromkeys(range(10), 0)
    regs[6], regs[7] = 0xFFFF, 0xFFF6  # -10 Wh
    with pytest.raises(ModbusReject) as e:
        decode(p, regs)
    assert e.value.reason == "bad_value" and e.value.heard
    assert decode(p, dict.fromkeys(range(10), 0)).session_energy_wh == 0.0
