"""The lamp driver for dimming: the logarithmic curve, limits, health faults
(mp_lamp.py under the MicroPython executable at the board's heap size), and
on the running firmware: PWM frequency, lamp_min, the persisted last command,
energy, lamp-failure reports and the fail-safe report when the link returns."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from polesim.firmware import find_micropython

from tests.firmware.conftest import RigFactory

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SRC = ROOT / "firmware" / "src"


def duty_for(level: int) -> int:
    """firmware/src/lamp.py's logarithmic curve at whole percents (that module
    needs MicroPython's time): the same integer steps."""
    c = level * 100
    if c <= 0:
        return 0
    if c >= 10000:
        return 65535
    e = (c - 100) * 3735 // 100
    f = (e & 0xFFFF) >> 4
    return min(65535, (1311 << (e >> 16)) * (4096 + (f * (2689 + (1407 * f >> 12)) >> 12)) >> 12)


def wait_for(cond: object, timeout: float = 3.0, every: float = 0.05) -> None:
    assert callable(cond)
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(every)


def test_units_under_micropython(fw_build: Path) -> None:
    res = subprocess.run(
        [find_micropython(), "-X", "heapsize=64K", str(HERE / "mp_lamp.py"), str(fw_build)],
        capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    print(out)
    assert "FAIL " not in out, out
    assert res.returncode == 0, out
    assert out.count("PASS ") >= 10, out


def test_pwm_frequency_at_least_1250_hz() -> None:
    m = re.search(r"^_PWM_HZ = const\((\d+)\)", (SRC / "hal_esp32.py").read_text(), re.M)
    assert m is not None
    assert int(m.group(1)) >= 1250  # IEEE 1789 low-risk flicker at full modulation


def test_private_setting_indices_match_settings() -> None:
    # app.py indexes lamp_min/lamp_last/lamp_rated_w by private consts (no heap).
    app = (SRC / "app.py").read_text()
    keys = re.findall(r'^    \("([a-z_]+)", ', (SRC / "settings.py").read_text(), re.M)
    for name, idx in re.findall(r"^_S_([A-Z_]+) = const\((\d+)\)", app, re.M):
        assert keys[int(idx)] == name.lower(), (name, idx, keys)


def test_curve_on_the_pin_and_lamp_min(make_rig: RigFactory) -> None:
    rig = make_rig({})
    panel = rig.fw.panel
    for level in (1, 50, 80, 100):
        assert rig.ctl.command("lamp_set", (level, 0)).name == "ack"
        assert panel.get()["lamp"]["duty_u16"] == duty_for(level), level
    rig.ctl.config_set("lamp_min", 30)
    assert rig.ctl.command("lamp_set", (10, 0)).name == "ack"
    lamp = panel.get()["lamp"]
    assert lamp["target"] == 30 and lamp["duty_u16"] == duty_for(30)
    assert rig.ctl.command("lamp_set", (0, 0)).name == "ack"  # off stays off
    assert panel.get()["lamp"]["duty_u16"] == 0
    rig.ctl.config_set("lamp_max", 20)  # max wins over min
    assert rig.ctl.command("lamp_set", (10, 0)).name == "ack"
    assert panel.get()["lamp"]["target"] == 20


def test_last_command_is_restored_after_a_restart(make_rig: RigFactory,
                                                  tmp_path: Path) -> None:
    rig = make_rig({"failsafe_timeout_ms": 60000, "failsafe_fade_ms": 300})
    assert rig.ctl.command("lamp_set", (65, 0)).name == "ack"
    path = rig.fw.settings_path
    assert path is not None
    wait_for(lambda: '"lamp_last": 65' in Path(path).read_text(), timeout=8.0)
    rig.fw.stop()  # a power cut
    rig.fw.start()
    rig.ctl.expect("board_id", timeout=3.0)
    # No command since the restart: the board brings the last level back by itself.
    wait_for(lambda: rig.fw.panel.get()["lamp"]["level"] == 65, timeout=3.0)
    assert rig.fw.panel.get()["lamp"]["failsafe"] == 0


def test_energy_integrates_power(make_rig: RigFactory) -> None:
    rig = make_rig({"report_interval_ms": 200, "failsafe_timeout_ms": 600000})
    assert rig.ctl.command("lamp_set", (100, 0)).name == "ack"
    panel = rig.fw.panel
    e0, t0 = panel.get()["energy_wh"], time.monotonic()
    time.sleep(1.5)
    e1, t1 = panel.get()["energy_wh"], time.monotonic()
    assert panel.get()["power_w"] == pytest.approx(60.0)
    assert e1 - e0 == pytest.approx(60.0 * (t1 - t0) / 3600, rel=0.1)
    # ... and the link carries it: a report taken now is within one interval of it.
    rig.ctl.pump(0.5)
    last = [f for f in rig.ctl.backlog if f.name == "sensor_report"][-1].fields()
    assert last["energy_wh"] == pytest.approx(panel.get()["energy_wh"], abs=60.0 * 0.5 / 3600)


def test_lamp_failure_raised_and_cleared(make_rig: RigFactory) -> None:
    # report_interval_ms 100: faults must hold 1 s (10 report intervals). The test
    # sends nothing for a while, so keep the fail-safe out of it.
    rig = make_rig({"report_interval_ms": 100, "failsafe_timeout_ms": 600000})
    assert rig.ctl.command("lamp_set", (90, 0)).name == "ack"
    time.sleep(1.2)
    rig.ctl.backlog.clear()
    rig.fw.panel.set(power_scale=0.0)  # the driver died: no power at 90 %
    t0 = time.monotonic()
    f = rig.ctl.expect("fault_report", timeout=4.0,
                       pred=lambda f: f.fields()["code"] == 8).fields()
    assert f["active"] == 1 and "lamp 90 %" in f["detail"]
    assert 0.9 < time.monotonic() - t0 < 3.5
    rig.fw.panel.set(power_scale=1.0)
    f = rig.ctl.expect("fault_report", timeout=4.0,
                       pred=lambda f: f.fields()["code"] == 8).fields()
    assert f["active"] == 0
    rig.fw.panel.set(power_scale=2.0)  # drawing twice what 90 % implies
    f = rig.ctl.expect("fault_report", timeout=4.0,
                       pred=lambda f: f.fields()["code"] == 9).fields()
    assert f["active"] == 1
    assert rig.fw.panel.get()["counters"]["errors"] == 0


def test_failsafe_reported_when_the_link_returns(make_rig: RigFactory) -> None:
    rig = make_rig({"failsafe_timeout_ms": 300, "failsafe_fade_ms": 0})
    rig.fw.panel.set(lux=1.0)
    rig.wire.cut(True)
    wait_for(lambda: rig.fw.panel.get()["lamp"]["failsafe"] == 1, timeout=3.0)
    time.sleep(0.5)
    rig.wire.cut(False)
    rig.ctl.backlog.clear()
    rig.ctl.send("heartbeat", (1,))
    back = rig.ctl.expect("fault_report", pred=lambda f: f.fields()["code"] == 7).fields()
    assert back["active"] == 0
    m = re.search(r"after (\d+) ms in fail-safe, lamp (\d+) %", back["detail"])
    assert m is not None, back
    assert int(m.group(1)) >= 400 and int(m.group(2)) == 100
