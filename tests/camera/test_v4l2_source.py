"""V4L2 devices. A missing device must be `camera_lost` (retried), never a crash.

Frames need a /dev/video device: a camera, or the v4l2loopback kernel module
(`modprobe v4l2loopback`, Debian package v4l2loopback-dkms) fed by ffmpeg.
Machines that cannot load kernel modules (containers, this CI) skip that test.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from edge_controller.camera.source import SourceSpec, open_capture
from edge_controller.camera.task import CameraTask
from tests.camera.conftest import (
    SAMPLE,
    SAMPLE_SHAPE,
    EventLog,
    FrameLog,
    Proc,
    cfg,
    need_tool,
    running,
    until,
)


def missing_device() -> str:
    return next(f"/dev/video{n}" for n in range(63, 0, -1)
                if not Path(f"/dev/video{n}").exists())


@pytest.mark.parametrize("form", ["path", "v4l2:path", "v4l2:N"])
async def test_missing_device_is_lost_and_retried_not_a_crash(form: str) -> None:
    dev = missing_device()
    source = {"path": dev, "v4l2:path": f"v4l2:{dev}",
              "v4l2:N": f"v4l2:{dev.removeprefix('/dev/video')}"}[form]
    ev = EventLog()
    cam = CameraTask(cfg(source), ev, lambda: None, reopen_min_s=0.05, reopen_max_s=0.1)
    async with running(cam) as task:
        lost = await ev.wait("camera_lost", within=5)
        await until(lambda: cam.sessions >= 3, 3, "reopen attempts")
        assert not task.done()
    assert lost["reason"] == "cannot open v4l2 source"
    assert ev.names == ["camera_lost"] and not cam.healthy
    assert cam.stats()["healthy"] is False and cam.stats()["fps"] == 0


def loopback(dev: str) -> bool:
    name = Path("/sys/class/video4linux", Path(dev).name, "name")
    try:
        text = name.read_text().lower()
    except OSError:
        return False
    return "dummy" in text or "loopback" in text


async def test_v4l2_device_yields_frames(tmp_path: Path) -> None:
    devices = sorted(glob.glob("/dev/video[0-9]*"), key=lambda d: not loopback(d))
    if not devices:
        pytest.skip("no /dev/video device: V4L2 frames need a camera or the v4l2loopback "
                    "kernel module, which this machine cannot load")
    dev = devices[0]
    feeder = None
    if loopback(dev):
        ffmpeg = need_tool("ffmpeg", "ffmpeg")
        feeder = Proc([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                       "-stream_loop", "-1", "-i", str(SAMPLE), "-pix_fmt", "yuyv422",
                       "-f", "v4l2", dev], tmp_path / "v4l2-feed.log")
        feeder.start()
    try:
        if not loopback(dev):
            probe = open_capture(SourceSpec("v4l2", dev))
            opened = probe.isOpened()
            probe.release()
            if not opened:
                pytest.skip(f"{dev} exists but does not open as a capture device "
                            "(busy, or not a camera)")
        ev, frames = EventLog(), FrameLog()
        cam = CameraTask(cfg(f"v4l2:{dev}"), ev, lambda: None, on_frame=frames,
                         reopen_min_s=0.2, open_timeout_s=5, stall_timeout_s=5)
        async with running(cam):
            await until(lambda: len(frames) >= 5, 15, f"5 frames from {dev}")
        if feeder is not None:
            assert frames.frames[0][3] == SAMPLE_SHAPE
        assert cam.healthy
    finally:
        if feeder is not None:
            feeder.kill()
