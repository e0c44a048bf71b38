"""`polectl flash`: the exact esptool invocations (no ESP32 emulator exists), port
detection, image checks, and the command end to end against a fake esptool."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import typer
from polectl.flash import FlashError, Port, build_plan, check_firmware, detect_port, hint_for
from typer.testing import CliRunner

FW = "ESP32_GENERIC-v1.24.1.bin"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / FW
    p.write_bytes(bytes([0xE9, 0x03, 0x02, 0x20]) + bytes(8188))
    return p


def test_plan_for_an_esp32_erases_writes_at_0x1000_and_verifies(image: Path) -> None:
    plan = build_plan(image, "/dev/ttyUSB0", esptool=["esptool"])
    base = ["esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800"]
    assert [s.name for s in plan] == ["erase", "write", "verify"]
    assert plan[0].argv == [*base, "erase-flash"]
    assert plan[1].argv == [*base, "write-flash", "0x1000", str(image)]
    assert plan[2].argv == [*base, "verify-flash", "0x1000", str(image)]


def test_plan_variants(image: Path) -> None:
    plan = build_plan(image, "/dev/ttyACM0", chip="esp32s3", baud=115200, erase=False,
                      verify=False, esptool=["esptool"])
    assert [s.argv for s in plan] == [["esptool", "--chip", "esp32s3", "--port", "/dev/ttyACM0",
                                       "--baud", "115200", "write-flash", "0x0", str(image)]]
    # The default runs esptool from polectl's own environment.
    assert build_plan(image, "p")[0].argv[:3] == [sys.executable, "-m", "esptool"]
    with pytest.raises(FlashError, match="--chip"):
        build_plan(image, "p", chip="esp8266")


def test_port_detection() -> None:
    cp2102 = Port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART")
    modem = Port("/dev/ttyS0", None, None, "ttyS0")
    assert detect_port([modem, cp2102]) == cp2102
    with pytest.raises(FlashError, match=r"no ESP32 board found.*--port"):
        detect_port([modem])
    with pytest.raises(FlashError, match=r"several ESP32 boards.*--port"):
        detect_port([cp2102, Port("/dev/ttyACM0", 0x303A, 0x1001)])


def test_firmware_image_check(tmp_path: Path, image: Path) -> None:
    info = check_firmware(image)
    assert info["bytes"] == 8192 and len(info["sha256"]) == 64
    uf2 = tmp_path / "fw.uf2"
    uf2.write_bytes(b"UF2\n" + bytes(4096))
    with pytest.raises(FlashError, match=r"not an ESP32 firmware image.*0x55"):
        check_firmware(uf2)
    with pytest.raises(FlashError, match=r"micropython\.org"):
        check_firmware(tmp_path / "missing.bin")


def test_error_hints() -> None:
    assert "BOOT" in hint_for("A fatal error occurred: Failed to connect to ESP32: No serial "
                              "data received.")
    assert "dialout" in hint_for("could not open port /dev/ttyUSB0: [Errno 13] Permission "
                                 "denied")


FAKE = """
import json, sys, time
log, fail_on = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
with open(log, "a") as fh:
    fh.write(json.dumps(args) + "\\n")
cmd = next(a for a in args if a.endswith("-flash"))
if cmd == fail_on:
    print("A fatal error occurred: Failed to connect to ESP32: No serial data received.")
    sys.exit(2)
for pct in (10, 55, 100):
    print(f"Writing at 0x{0x1000 + pct * 100:08x}... ({pct} %)", end="\\r", flush=True)
print("\\nHash of data verified.")
"""


def _fake(tmp_path: Path, fail_on: str = "none") -> tuple[str, Path]:
    script = tmp_path / "fake_esptool.py"
    script.write_text(FAKE)
    log = tmp_path / "esptool.log"
    return shlex.join([sys.executable, str(script), str(log), fail_on]), log


def test_flash_command_runs_the_plan(polectl_app: typer.Typer, tmp_path: Path,
                                     image: Path) -> None:
    tool, log = _fake(tmp_path)
    r = CliRunner().invoke(polectl_app, ["flash", str(image), "--port", "/dev/ttyFAKE",
                                         "--esptool", tool, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and [s["name"] for s in doc["steps"]] == ["erase", "write", "verify"]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    base = ["--chip", "esp32", "--port", "/dev/ttyFAKE", "--baud", "460800"]
    assert calls == [[*base, "erase-flash"], [*base, "write-flash", "0x1000", str(image)],
                     [*base, "verify-flash", "0x1000", str(image)]]


def test_flash_command_failure_names_the_fix(polectl_app: typer.Typer, tmp_path: Path,
                                             image: Path) -> None:
    tool, log = _fake(tmp_path, fail_on="write-flash")
    r = CliRunner().invoke(polectl_app, ["flash", str(image), "--port", "/dev/ttyFAKE",
                                         "--esptool", tool])
    assert r.exit_code == 1
    assert "write failed" in r.output and "BOOT" in r.output
    assert len(log.read_text().splitlines()) == 2  # erase, then the failing write: no verify


def test_flash_dry_run_and_bad_image(polectl_app: typer.Typer, tmp_path: Path,
                                     image: Path) -> None:
    r = CliRunner().invoke(polectl_app, ["flash", str(image), "--port", "/dev/ttyX",
                                         "--no-erase", "--esptool", "esptool", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"esptool --chip esp32 --port /dev/ttyX --baud 460800 write-flash 0x1000 {image}",
        f"esptool --chip esp32 --port /dev/ttyX --baud 460800 verify-flash 0x1000 {image}"]
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"\x00" * 2048)
    r = CliRunner().invoke(polectl_app, ["flash", str(bad), "--port", "/dev/ttyX"])
    assert r.exit_code == 2 and "not an ESP32 firmware image" in r.output
