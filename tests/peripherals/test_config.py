"""Peripheral config: defaults, kind sections, profiles and cross-checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edge_controller.peripherals.config import (
    DEFAULT_STATE_MAP,
    DeviceConfig,
    ModbusProfileConfig,
    PeripheralsConfig,
)


def cfg(**kw: Any) -> PeripheralsConfig:
    return PeripheralsConfig.model_validate(kw)


def test_empty_config_is_valid_and_has_no_devices() -> None:
    c = PeripheralsConfig()
    assert c.devices == [] and c.refresh_s == 60.0 and c.profile("default").name == "default"


def test_the_kind_section_defaults_when_left_out() -> None:
    d = DeviceConfig.model_validate({"id": "screen-1", "kind": "led_screen"})
    assert d.screen is not None and d.modbus is None and d.ocpp is None
    assert d.screen.profile == "smartpole-ascii-v1"
    m = DeviceConfig.model_validate({"id": "c1", "kind": "modbus_charger"})
    assert m.modbus is not None and m.modbus.unit_id == 1 and m.modbus.profile == "default"


def test_a_section_of_another_kind_is_an_error() -> None:
    with pytest.raises(ValidationError, match="does not apply"):
        DeviceConfig.model_validate({"id": "c1", "kind": "modbus_charger",
                                     "ocpp": {"listen_port": 9000}})


@pytest.mark.parametrize("bad", ["Charger", "a/b", "x+", "-x", "a" * 33, ""])
def test_device_ids_are_topic_safe(bad: str) -> None:
    with pytest.raises(ValidationError):
        DeviceConfig.model_validate({"id": bad, "kind": "led_screen"})


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        DeviceConfig.model_validate({"id": "c1", "kind": "modbus_charger",
                                     "modbus": {"prot": "/dev/x"}})


def test_default_profile_is_the_documented_map() -> None:
    p = ModbusProfileConfig()
    regs = {k: (r.address, r.type, r.scale) for k, r in p.registers().items()}
    assert regs == {"connector_state": (0, "uint16", 1.0), "fault_code": (1, "uint16", 1.0),
                    "voltage": (2, "uint16", 0.1), "current": (3, "uint16", 0.01),
                    "power": (4, "uint32", 1.0), "session_energy": (6, "uint32", 1.0),
                    "meter_total": (8, "uint32", 1.0)}
    assert p.state_map == DEFAULT_STATE_MAP and p.table == "holding"
    assert PeripheralsConfig().profile("default").name == "default"


def test_custom_profile_from_toml_like_data() -> None:
    c = cfg(modbus_profiles=[{"name": "acme-ac22", "table": "input",
                              "voltage": {"address": 0x100, "type": "float32"},
                              "state_map": {"1": "Available", "2": "Charging"}}],
            devices=[{"id": "c1", "kind": "modbus_charger",
                      "modbus": {"profile": "acme-ac22"}}])
    p = c.profile("acme-ac22")
    assert p.voltage.type == "float32" and p.state_map == {1: "Available", 2: "Charging"}
    with pytest.raises(KeyError):
        c.profile("nope")


def test_overlapping_registers_are_rejected() -> None:
    with pytest.raises(ValidationError, match="overlap"):
        ModbusProfileConfig(power={"address": 5, "type": "uint32"})


def test_state_map_values_must_be_ocpp_states() -> None:
    with pytest.raises(ValidationError):
        ModbusProfileConfig(state_map={0: "Idle"})


def test_connector_state_register_is_required() -> None:
    with pytest.raises(ValidationError, match="connector_state"):
        ModbusProfileConfig(connector_state={"type": "none"})


@pytest.mark.parametrize("data, match", [
    ({"devices": [{"id": "a", "kind": "led_screen"}, {"id": "a", "kind": "led_screen"}]},
     "unique"),
    ({"devices": [{"id": "a", "kind": "modbus_charger", "modbus": {"profile": "x"}}]},
     "unknown modbus profile"),
    ({"modbus_profiles": [{"name": "default"}]}, "built in"),
    ({"devices": [{"id": "a", "kind": "modbus_charger", "modbus": {"port": "/dev/p"}},
                  {"id": "b", "kind": "modbus_charger", "modbus": {"port": "/dev/p"}}]},
     "unit_id 1 is used twice"),
    ({"devices": [{"id": "a", "kind": "modbus_charger", "modbus": {"port": "/dev/p"}},
                  {"id": "b", "kind": "modbus_charger",
                   "modbus": {"port": "/dev/p", "unit_id": 2, "baudrate": 19200}}]},
     "must share"),
    ({"devices": [{"id": "a", "kind": "ocpp_charger", "ocpp": {"listen_port": 9000}},
                  {"id": "b", "kind": "ocpp_charger", "ocpp": {"listen_port": 9000}}]},
     "used twice"),
    ({"devices": [{"id": "a", "kind": "ocpp_charger",
                   "ocpp": {"upstream_url": "http://cs.example"}}]}, "ws://"),
    ({"devices": [{"id": "a", "kind": "led_screen", "screen": {"address": "udp:x:1"}}]},
     "tcp:HOST:PORT"),
    ({"devices": [{"id": "a", "kind": "led_screen", "screen": {"profile": "novastar"}}]},
     "unknown screen profile"),
])
def test_cross_checks(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        PeripheralsConfig.model_validate(data)


def test_two_chargers_share_one_bus_with_distinct_units() -> None:
    c = cfg(devices=[{"id": "a", "kind": "modbus_charger", "modbus": {"port": "/dev/p"}},
                     {"id": "b", "kind": "modbus_charger",
                      "modbus": {"port": "/dev/p", "unit_id": 2}}])
    assert [d.modbus.unit_id for d in c.devices if d.modbus] == [1, 2]


def test_upstream_url_trailing_slash_is_dropped() -> None:
    d = DeviceConfig.model_validate({"id": "a", "kind": "ocpp_charger",
                                     "ocpp": {"upstream_url": "wss://cs.example/ocpp/"}})
    assert d.ocpp is not None and d.ocpp.upstream_url == "wss://cs.example/ocpp"
