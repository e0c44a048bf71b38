"""`polectl flash`: MicroPython onto the pole's ESP32 I/O board with esptool.

    polectl flash ESP32_GENERIC-v1.24.1.bin            # finds the board's USB serial port
    polectl flash firmware.bin --port /dev/ttyUSB0 --chip esp32s3

Steps, each one esptool run (v5 command names):

    esptool --chip CHIP --port PORT --baud BAUD erase-flash
    esptool --chip CHIP --port PORT --baud BAUD write-flash OFFSET FIRMWARE
    esptool --chip CHIP --port PORT --baud BAUD verify-flash OFFSET FIRMWARE

OFFSET is where MicroPython's image starts for the chip (0x1000 for the ESP32 and
ESP32-S2, 0x0 for the S3, C3 and C6). `--no-erase` keeps the filesystem (and the
deployed application) when only MicroPython changes. The plan is built by
`build_plan()` and run by `run_plan()`, so tests check the exact invocations.
After flashing, `polectl deploy` puts the pole's application on the board.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from polectl.console import err, fail, out

# MicroPython's firmware image offset per chip (micropython.org/download, "Installation").
OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0,
           "esp32c6": 0x0}
# USB serial bridges and native USB found on ESP32 boards: (vid, pid) -> name.
KNOWN_USB = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "Espressif USB JTAG/serial",
    (0x303A, 0x0002): "Espressif USB CDC",
}
ESP_IMAGE_MAGIC = 0xE9
DEFAULT_BAUD = 460800


class FlashError(Exception):
    """Something the installer can fix; the message says what and how."""


@dataclass(frozen=True)
class Port:
    device: str
    vid: int | None = None
    pid: int | None = None
    description: str = ""

    @property
    def known(self) -> str | None:
        return KNOWN_USB.get((self.vid or -1, self.pid or -1))


def list_ports() -> list[Port]:
    from serial.tools import list_ports as lp

    return [Port(p.device, p.vid, p.pid, p.description or "") for p in lp.comports()]


def detect_port(ports: Sequence[Port]) -> Port:
    """The one port that looks like an ESP32 board, or a FlashError saying what to do."""
    boards = [p for p in ports if p.known]
    if len(boards) == 1:
        return boards[0]
    if not boards:
        seen = ", ".join(f"{p.device} ({p.description or 'unknown'})" for p in ports) or "none"
        raise FlashError(
            f"no ESP32 board found on USB (serial ports: {seen}). Plug the board in with a "
            "data cable (not a charge-only one), check `dmesg | tail` for a ttyUSB/ttyACM "
            "device, or pass --port.")
    listed = ", ".join(f"{p.device} ({p.known})" for p in boards)
    raise FlashError(f"several ESP32 boards are connected ({listed}); pass --port to choose "
                     "one")


@dataclass(frozen=True)
class Step:
    name: str  # erase | write | verify
    argv: list[str]
    title: str


def esptool_command() -> list[str]:
    """esptool from this interpreter's environment (the polectl venv)."""
    return [sys.executable, "-m", "esptool"]


def build_plan(firmware: Path, port: str, chip: str = "esp32", baud: int = DEFAULT_BAUD,
               erase: bool = True, verify: bool = True, offset: int | None = None,
               esptool: Sequence[str] | None = None) -> list[Step]:
    if chip not in OFFSETS:
        raise FlashError(f"--chip {chip!r}: use one of {', '.join(OFFSETS)}")
    off = f"0x{(OFFSETS[chip] if offset is None else offset):x}"
    base = [*(esptool or esptool_command()), "--chip", chip, "--port", port, "--baud", str(baud)]
    fw = str(firmware)
    steps = []
    if erase:
        steps.append(Step("erase", [*base, "erase-flash"], "erasing flash"))
    steps.append(Step("write", [*base, "write-flash", off, fw], f"writing {firmware.name}"))
    if verify:
        steps.append(Step("verify", [*base, "verify-flash", off, fw], "verifying"))
    return steps


def check_firmware(path: Path) -> dict[str, Any]:
    """Size, SHA-256, and that it is an ESP image (first byte 0xE9)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FlashError(f"firmware {path}: {e.strerror or e}; download the .bin for your "
                         "board from micropython.org/download (ESP32_GENERIC)") from None
    if len(data) < 1024 or data[0] != ESP_IMAGE_MAGIC:
        first = f"0x{data[0]:02X}" if data else "empty file"
        raise FlashError(f"firmware {path} is not an ESP32 firmware image (first byte {first}, "
                         f"expected 0x{ESP_IMAGE_MAGIC:02X}, {len(data)} bytes): use the .bin "
                         "from micropython.org/download, not the .uf2/.elf/.hex or a zip")
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# esptool failure text -> what the installer should do.
HINTS = [
    ("Failed to connect", "hold the board's BOOT (IO0) button while pressing EN/RESET, then "
     "run again; or try a lower --baud (115200)"),
    ("No serial data received", "hold BOOT while pressing EN/RESET, then run again"),
    ("Permission denied", "add yourself to the dialout group (sudo usermod -aG dialout $USER) "
     "and log in again, or run with sudo"),
    ("could not open port", "check --port and that no other program (a serial monitor, "
     "mpremote) holds it"),
    ("does not match", "verification failed: reflash; if it keeps failing, the flash chip or "
     "the cable is bad (try a shorter cable and --baud 115200)"),
    ("Wrong boot mode", "hold BOOT while pressing EN/RESET, then run again"),
    ("This chip is", "the board is another chip type: pass the matching --chip"),
    ("No module named esptool", "install esptool into polectl's environment: pip install "
     "esptool"),
]


def hint_for(text: str) -> str:
    for needle, hint in HINTS:
        if needle.lower() in text.lower():
            return hint
    return "see esptool's output above; check the cable and --port, then run again"


_PCT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s?%")


@dataclass
class StepResult:
    name: str
    argv: list[str]
    rc: int
    seconds: float
    output_tail: str = ""


def run_step(step: Step, on_progress: Callable[[float], None] | None = None) -> StepResult:
    """Run one esptool invocation, feeding percentages it prints to `on_progress`."""
    t = time.monotonic()
    try:
        proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise FlashError(f"cannot run {step.argv[0]}: {e.strerror or e}; install esptool "
                         "(pip install esptool) or pass --esptool") from None
    assert proc.stdout is not None
    tail = bytearray()
    buf = bytearray()
    while True:
        chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
        if not chunk:
            break
        tail += chunk
        del tail[:-8000]
        buf += chunk
        *lines, rest = re.split(rb"[\r\n]", bytes(buf))
        buf = bytearray(rest)
        for line in lines:
            m = _PCT.findall(line.decode(errors="replace"))
            if m and on_progress is not None:
                on_progress(min(100.0, float(m[-1])))
    rc = proc.wait()
    return StepResult(step.name, step.argv, rc, round(time.monotonic() - t, 2),
                      tail.decode(errors="replace"))


@dataclass
class FlashReport:
    ok: bool
    port: str
    chip: str
    firmware: str
    image: dict[str, Any]
    steps: list[StepResult] = field(default_factory=list)
    error: str = ""
    fix: str = ""


def flash(firmware: Path, port: str | None = None, chip: str = "esp32",
          baud: int = DEFAULT_BAUD, erase: bool = True, verify: bool = True,
          esptool: Sequence[str] | None = None,
          ports: Callable[[], Sequence[Port]] = list_ports,
          on_step: Callable[[Step, int, int], None] | None = None,
          on_progress: Callable[[float], None] | None = None) -> FlashReport:
    image = check_firmware(firmware)
    device = port or detect_port(ports()).device
    plan = build_plan(firmware, device, chip, baud, erase, verify, esptool=esptool)
    rep = FlashReport(True, device, chip, str(firmware), image)
    for i, step in enumerate(plan):
        if on_step is not None:
            on_step(step, i, len(plan))
        res = run_step(step, on_progress)
        rep.steps.append(res)
        if res.rc != 0:
            rep.ok = False
            rep.error = f"{step.name} failed (esptool exit code {res.rc})"
            rep.fix = hint_for(res.output_tail)
            break
    return rep


# Long: most of it is the option list typer turns into the command line.
def flash_command(
    firmware: Annotated[Path, typer.Argument(help="MicroPython image for the board (.bin from "
                                             "micropython.org/download).")],
    port: Annotated[str | None, typer.Option(help="Serial port; default: the one ESP32 board "
                                             "found on USB.")] = None,
    chip: Annotated[str, typer.Option(help=f"Chip: {', '.join(OFFSETS)}.")] = "esp32",
    baud: Annotated[int, typer.Option(help="Baud rate for writing (115200 if it keeps "
                                      "failing).")] = DEFAULT_BAUD,
    erase: Annotated[bool, typer.Option(help="Erase the whole flash first (--no-erase keeps "
                                        "the board's filesystem).")] = True,
    verify: Annotated[bool, typer.Option(help="Read the flash back and compare.")] = True,
    esptool: Annotated[str | None, typer.Option(help="esptool command to run (default: "
                                                "python -m esptool from polectl's "
                                                "environment).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the esptool commands, "
                                          "run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Flash MicroPython onto the pole's ESP32 I/O board: find the port, erase, write,
    verify (esptool)."""
    tool = shlex.split(esptool) if esptool else None
    try:
        if dry_run:
            check_firmware(firmware)
            device = port or detect_port(list_ports()).device
            plan = build_plan(firmware, device, chip, baud, erase, verify, esptool=tool)
            if as_json:
                out.print_json(json.dumps({"ok": True, "dry_run": True, "port": device,
                                           "steps": [{"name": s.name, "argv": s.argv}
                                                     for s in plan]}))
            else:
                for s in plan:
                    out.print(shlex.join(s.argv), highlight=False)
            return
        if as_json:
            rep = flash(firmware, port, chip, baud, erase, verify, tool)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                          TimeElapsedColumn(), console=err) as prog:
                bar = prog.add_task("connecting", total=100)

                def on_step(step: Step, i: int, n: int) -> None:
                    prog.reset(bar, total=100, description=f"[{i + 1}/{n}] {step.title}")

                rep = flash(firmware, port, chip, baud, erase, verify, tool,
                            on_step=on_step,
                            on_progress=lambda pct: prog.update(bar, completed=pct))
                if rep.ok:
                    prog.update(bar, completed=100)
    except FlashError as e:
        fail("flash", e, as_json)
    if as_json:
        doc = {"ok": rep.ok, "port": rep.port, "chip": rep.chip, "firmware": rep.firmware,
               **rep.image, "error": rep.error, "fix": rep.fix,
               "steps": [{"name": s.name, "argv": s.argv, "rc": s.rc, "seconds": s.seconds}
                         for s in rep.steps]}
        out.print_json(json.dumps(doc))
    elif rep.ok:
        out.print(f"[green]OK[/] {firmware.name} ({rep.image['bytes']} bytes, sha256 "
                  f"{rep.image['sha256'][:16]}...) on {rep.chip} at {rep.port}: "
                  + ", ".join(f"{s.name} {s.seconds} s" for s in rep.steps))
        out.print("next: `polectl deploy` puts the pole's application on the board")
    else:
        last = rep.steps[-1]
        err.print(last.output_tail[-2000:], markup=False, highlight=False)
        err.print(f"[red]flash failed[/]: {rep.error} on {rep.port}")
        err.print(f"fix: {rep.fix}")
    if not rep.ok:
        raise typer.Exit(1)
