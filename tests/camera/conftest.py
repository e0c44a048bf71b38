"""Helpers for the camera tests: an event recorder, a running-task context,
deadline polls, fake captures, and local stream servers (ffmpeg serving HTTP,
rtsp-server-perl relaying RTSP) on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_controller.camera.source import Frame, SourceSpec
from edge_controller.camera.task import CameraTask
from edge_controller.config import CameraConfig
from tests.support import IN_CI

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pets09-s2l1-0-119.mp4"
SAMPLE_FRAMES = 120
SAMPLE_FPS = 10.0
SAMPLE_SHAPE = (576, 768, 3)


def cfg(source: str, **kw: Any) -> CameraConfig:
    return CameraConfig(source=source, **kw)


class EventLog:
    """Records on_event calls (name, detail, monotonic time); awaitable."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], float]] = []
        self._changed = asyncio.Event()

    def __call__(self, name: str, detail: dict[str, Any]) -> None:
        self.events.append((name, detail, time.monotonic()))
        self._changed.set()

    def named(self, name: str) -> list[tuple[str, dict[str, Any], float]]:
        return [e for e in self.events if e[0] == name]

    @property
    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    async def wait(self, name: str, count: int = 1, within: float = 5.0) -> dict[str, Any]:
        """Detail of the count-th `name` event; fails after `within` seconds."""
        async with asyncio.timeout(within):
            while len(self.named(name)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.named(name)[count - 1][1]


class FrameLog:
    """An on_frame callback that keeps (index, t, arrival time, shape)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, float, float, tuple[int, ...]]] = []

    def __call__(self, f: Frame) -> None:
        self.frames.append((f.index, f.t, time.monotonic(), f.image.shape))

    def __len__(self) -> int:
        return len(self.frames)


async def until(cond: Callable[[], bool], within: float, what: str,
                every: float = 0.01) -> None:
    """Poll `cond` until it holds; fail with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(cam: CameraTask) -> AsyncIterator[asyncio.Task[None]]:
    """Run the camera task; cancel it on exit (and re-raise if it crashed)."""
    task = asyncio.create_task(cam.run())
    try:
        yield task
    finally:
        if task.done():
            task.result()  # surface a crash
        else:
            task.cancel()
            async with asyncio.timeout(2.0):  # cancellation never waits on OpenCV
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def blank(h: int = 4, w: int = 6) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.zeros((h, w, 3), np.uint8)


class FakeCap:
    """A stand-in for cv2.VideoCapture driven by a script.

    `frames` frames `every` seconds apart, then either EOF (read -> False) or,
    with `hang=True`, a read that blocks until `unblock` is set (a stream that
    stalls without returning).
    """

    def __init__(self, frames: int = 0, every: float = 0.0, hang: bool = False,
                 opened: bool = True, fps: float = 25.0) -> None:
        self.left = frames
        self.every = every
        self.hang = hang
        self.opened = opened
        self.fps = fps
        self.unblock = threading.Event()
        self.released = threading.Event()
        self.reads = 0

    def isOpened(self) -> bool:  # OpenCV's name
        return self.opened

    def get(self, prop: int) -> float:
        return self.fps

    def read(self) -> tuple[bool, Any]:
        self.reads += 1
        if self.left > 0:
            self.left -= 1
            if self.every:
                time.sleep(self.every)
            return True, blank()
        if self.hang:
            self.unblock.wait()
        return False, None

    def release(self) -> None:
        self.released.set()


class ScriptedOpener:
    """An opener returning the given FakeCaps in turn (then unopened ones), timing each call."""

    def __init__(self, *caps: FakeCap) -> None:
        self.caps = list(caps)
        self.calls: list[float] = []
        self.handed: list[FakeCap] = []

    def __call__(self, spec: SourceSpec, open_timeout_s: float, read_timeout_s: float) -> Any:
        self.calls.append(time.monotonic())
        cap = self.caps.pop(0) if self.caps else FakeCap(opened=False)
        self.handed.append(cap)
        return cap

    def unblock_all(self) -> None:
        for c in self.handed + self.caps:
            c.unblock.set()


# ---- local servers -------------------------------------------------------------


def need_tool(name: str, package: str) -> str:
    """Path of a tool; skipped with the reason when missing (a failure in CI, which
    installs it in .ci/run)."""
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} is not installed (Debian package {package})"
    if IN_CI:
        pytest.fail(f"{why}; .ci/run must install it")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on TCP `port` (read from /proc: connecting to a
    one-client server would use up its only client)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return True
    return False


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if proc.poll() is not None:
            pytest.fail(f"server on port {port} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listens on port {port} after {timeout:g} s")
        time.sleep(0.02)


class Proc:
    """A child process we started, stopped (SIGKILL) by its own pid only."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as fh:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=fh,
                                      stderr=subprocess.STDOUT)
        return self.p

    def signal(self, sig: int) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(sig)

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.kill()
            self.p.wait(5)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


class HttpStream:
    """ffmpeg serving the sample clip as a live MPEG-TS stream over HTTP (one client).

    `-c:v copy` keeps the MPEG-4 video as it is (no CPU spent on encoding);
    `dump_extra` repeats its headers in-band, which a transport stream needs.
    """

    def __init__(self, ffmpeg: str, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = Proc([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
                          "-re", "-stream_loop", "-1", "-i", str(SAMPLE),
                          "-c:v", "copy", "-bsf:v", "dump_extra", "-an",
                          "-f", "mpegts", "-listen", "1", self.url], tmp / "http-server.log")

    def start(self) -> None:
        wait_listening(self.port, self.proc.start())

    def kill(self) -> None:
        self.proc.kill()


@pytest.fixture
def http_stream(tmp_path: Path) -> Iterator[HttpStream]:
    srv = HttpStream(need_tool("ffmpeg", "ffmpeg"), tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()
