"""docs/peripherals.md agrees with the code: its TOML examples validate, its default profile
table is the built-in profile, its protocol example frames carry the right checksums."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from edge_controller.peripherals.config import ModbusProfileConfig, PeripheralsConfig
from edge_controller.peripherals.led_screen import AsciiV1
from edge_controller.peripherals.screen_arbiter import ScreenWarningsConfig

DOC = (Path(__file__).resolve().parents[2] / "docs" / "peripherals.md").read_text()


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC, re.S)


def test_toml_examples_validate() -> None:
    blocks = toml_blocks()
    assert len(blocks) == 3
    # The [screen_warnings] example is the defaults.
    warn = tomllib.loads(blocks[2])["screen_warnings"]
    assert ScreenWarningsConfig.model_validate(warn) == ScreenWarningsConfig()
    full = tomllib.loads(blocks[0])["peripherals"]
    cfg = PeripheralsConfig.model_validate(full)
    assert [d.kind for d in cfg.devices] == ["modbus_charger", "ocpp_charger", "led_screen"]
    profiles = tomllib.loads(blocks[1])["peripherals"]
    cfg = PeripheralsConfig.model_validate(profiles)
    p = cfg.profile("acme-ac22")
    assert p.table == "input" and p.power.scale == 1000.0 and p.state_map[9] == "Faulted"


def test_default_profile_table_matches_the_code() -> None:
    rows = re.findall(r"^\| (\d+)(?:\u2013(\d+))? \| [^|]+ \| (\w+) \| ([\d.]+) \|", DOC, re.M)
    got = [(int(a), t, float(s)) for a, _b, t, s in rows]
    want = sorted((r.address, r.type, r.scale) for r in ModbusProfileConfig().registers().values())
    assert got == want
    for code, state in ModbusProfileConfig().state_map.items():
        assert f"{code} {state}" in DOC


def test_protocol_example_frames_are_valid() -> None:
    frames = re.findall(r"`([A-Z][^`]*\*[0-9A-F]{2})\\r\\n`", DOC)
    assert len(frames) == 2
    for frame in frames:
        AsciiV1.unframe(frame.encode() + b"\r\n")


def test_the_silent_charger_deadline_is_the_one_the_code_and_tests_use() -> None:
    from edge_controller.peripherals.ocpp_proxy import CLOSE_TIMEOUT_S

    assert CLOSE_TIMEOUT_S == 1.0
    assert "`ping_s + ping_s + 1 s`" in DOC and "`2 x ping_s + 1 s + lost_after_s`" in DOC


def test_mqtt_md_describes_the_periph_status_and_events() -> None:
    from edge_controller.peripherals.monitor import EVENTS

    mqtt = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text()
    assert "RESERVED" not in mqtt
    tree = mqtt[mqtt.index("## Topic tree"):mqtt.index("## Payload conventions")]
    assert "status                pole → backend   retained   charging pile" in tree
    brief = mqtt[mqtt.index("## The messages in brief"):mqtt.index("## Connection")]
    for name in EVENTS:
        assert f"`{name}`" in brief, name
