"""The camera task against scripted captures: watchdog, backoff, events, stats."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from edge_controller.camera import task as task_mod
from edge_controller.camera.source import Frame
from edge_controller.camera.task import CameraTask, _redact
from tests.camera.conftest import EventLog, FakeCap, FrameLog, ScriptedOpener, cfg, running, until

URL = "rtsp://viewer:s3cret@cam.invalid:554/stream1"


def test_redact() -> None:
    assert _redact(URL) == "rtsp://***@cam.invalid:554/stream1"
    assert _redact("rtsp://cam.invalid/a@b") == "rtsp://cam.invalid/a@b"
    assert _redact("http://u:p@h/x?y=1") == "http://***@h/x?y=1"
    assert _redact("rtsp://a:b@c@h/x") == "rtsp://***@h/x"


async def test_read_that_never_returns_is_lost_by_the_watchdog_and_reopened() -> None:
    stuck = FakeCap(frames=3, hang=True)
    opener = ScriptedOpener(stuck, FakeCap(frames=10_000, every=0.01))
    ev, frames = EventLog(), FrameLog()
    cam = CameraTask(cfg(URL, queue_size=4), ev, lambda: None, on_frame=frames,
                     reopen_min_s=0.05,
                     stall_timeout_s=0.3, open_timeout_s=1.0, opener=opener)
    try:
        async with running(cam):
            lost = await ev.wait("camera_lost", within=3)
            t_lost = ev.named("camera_lost")[0][2]
            stalled_for = t_lost - frames.frames[2][2]
            assert lost["reason"] == "no frame for 0.3 s"
            assert 0.25 <= stalled_for <= 1.0, stalled_for
            assert not cam.healthy
            restored = await ev.wait("camera_restored", within=3)
            assert cam.healthy and restored["down_s"] >= 0
            assert cam.stray_threads == 1  # still blocked in the fake read
            assert not stuck.released.is_set()
            n = len(frames)
            await until(lambda: len(frames) > n + 3, 2, "frames after the reopen")
        # The source's credentials are never published.
        assert lost["source"] == restored["source"] == "rtsp://***@cam.invalid:554/stream1"
        assert "s3cret" not in repr(ev.events) + repr(cam.stats())
    finally:
        opener.unblock_all()
    # Once OpenCV returns, the abandoned thread releases its capture and ends.
    await until(stuck.released.is_set, 2, "the stuck capture released")
    await until(lambda: cam.stray_threads == 0, 2, "the stuck thread ending")
    assert ev.names == ["camera_lost", "camera_restored"]


async def test_open_that_never_returns_is_lost() -> None:
    class HangingOpener(ScriptedOpener):
        def __call__(self, *a: object) -> object:
            self.calls.append(time.monotonic())
            gate.wait(5)
            return FakeCap(opened=False)

    gate = threading.Event()
    opener = HangingOpener()
    ev = EventLog()
    cam = CameraTask(cfg(URL), ev, lambda: None, reopen_min_s=0.05, open_timeout_s=0.2,
                     stall_timeout_s=0.2, opener=opener)
    try:
        async with running(cam):
            lost = await ev.wait("camera_lost", within=3)
    finally:
        gate.set()
    assert lost["reason"] == "source did not open within 0.4 s"
    assert ev.names == ["camera_lost"]


async def test_opened_but_silent_source_is_lost() -> None:
    silent = FakeCap(frames=0, hang=True)
    opener = ScriptedOpener(silent)
    ev = EventLog()
    cam = CameraTask(cfg(URL), ev, lambda: None, open_timeout_s=0.2, stall_timeout_s=0.2,
                     opener=opener)
    try:
        async with running(cam):
            lost = await ev.wait("camera_lost", within=3)
    finally:
        opener.unblock_all()
    assert lost["reason"] == "no first frame within 0.4 s"


def record_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The reopen delays the task asks for, exactly: timing them failed on a loaded CI
    machine (a 20 ms sleep took 66 ms in the supervisor's test). The real sleeps still
    run, so the measured gaps keep their lower bounds (a sleep never ends early)."""
    asked: list[float] = []
    real = task_mod.exponential

    def recording(lo: float, hi: float, attempt: int) -> float:
        asked.append(real(lo, hi, attempt))
        return asked[-1]

    monkeypatch.setattr(task_mod, "exponential", recording)
    return asked


async def test_reopen_backoff_doubles_to_the_cap_and_reports_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked = record_backoff(monkeypatch)
    opener = ScriptedOpener()  # never opens
    ev = EventLog()
    cam = CameraTask(cfg(URL), ev, lambda: None, reopen_min_s=0.05, reopen_max_s=0.4,
                     opener=opener)
    async with running(cam):
        await until(lambda: len(opener.calls) >= 7, 5, "7 open attempts")
    want = [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    assert asked[:6] == want
    gaps = [b - a for a, b in itertools.pairwise(opener.calls)][:6]
    assert all(g >= w - 0.01 for g, w in zip(gaps, want, strict=True)), gaps
    assert ev.names == ["camera_lost"]
    assert ev.events[0][1]["reason"] == "cannot open stream source"


async def test_backoff_restarts_after_a_session_with_frames(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked = record_backoff(monkeypatch)
    opener = ScriptedOpener(FakeCap(opened=False), FakeCap(opened=False), FakeCap(opened=False),
                            FakeCap(frames=2), FakeCap(opened=False))
    ev = EventLog()
    cam = CameraTask(cfg(URL), ev, lambda: None, reopen_min_s=0.05, reopen_max_s=5,
                     opener=opener)
    async with running(cam):
        await until(lambda: len(opener.calls) >= 6, 5, "6 open attempts")
    # 0.05, 0.1, 0.2, then frames (restored, lost again), then 0.05 again.
    assert asked[:5] == [0.05, 0.1, 0.2, 0.05, 0.1], asked
    gaps = [b - a for a, b in itertools.pairwise(opener.calls)]
    assert gaps[2] >= 0.19, gaps
    assert ev.names == ["camera_lost", "camera_restored", "camera_lost"]
    assert ev.events[2][1]["reason"] == "stream returned no frame"


async def test_stats_keys_fps_and_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_mod, "FPS_WINDOW_S", 0.3)
    cap = FakeCap(frames=40, every=0.01, hang=True)
    opener = ScriptedOpener(cap)
    busy: list[int] = []

    def slow(frame: Frame) -> None:
        busy.append(1)
        time.sleep(0.05)  # analysis slower than the camera: the queue drops

    cam = CameraTask(cfg(URL, queue_size=1), EventLog(), lambda: None, on_frame=slow,
                     stall_timeout_s=5, opener=opener)
    try:
        async with running(cam):
            await until(lambda: cap.left == 0, 3, "40 frames read")
            await until(lambda: cam.frames == 40, 1, "frames counted")
            s = cam.stats()
            assert set(s) == {"source", "frames", "fps", "width", "height", "healthy"}
            assert s["source"] == "rtsp://***@cam.invalid:554/stream1"
            assert (s["width"], s["height"], s["healthy"]) == (6, 4, True)
            assert cam.dropped > 0 and cam.delivered + cam.dropped <= 40
            # Capture stopped (the fake read hangs): fps falls to 0 within the window.
            await until(lambda: cam.fps == 0.0, 2, "fps to decay")
            assert cam.stats()["fps"] == 0
    finally:
        opener.unblock_all()


async def test_cancel_does_not_wait_for_a_stuck_read() -> None:
    stuck = FakeCap(frames=1, hang=True)
    opener = ScriptedOpener(stuck)
    cam = CameraTask(cfg(URL), EventLog(), lambda: None, stall_timeout_s=30, opener=opener)
    task = asyncio.create_task(cam.run())
    try:
        await until(lambda: cam.delivered == 1, 2, "a frame")
        task.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 0.5
        assert cam.stray_threads == 1
    finally:
        stuck.unblock.set()
    await until(stuck.released.is_set, 2, "release after the read returned")


def test_bad_timeouts_and_backoff_are_refused() -> None:
    with pytest.raises(ValueError):
        CameraTask(cfg(URL), EventLog(), lambda: None, reopen_min_s=2, reopen_max_s=1)
    with pytest.raises(ValueError):
        CameraTask(cfg(URL), EventLog(), lambda: None, stall_timeout_s=0)


async def test_lost_reason_never_quotes_credentials() -> None:
    class Leaky(ScriptedOpener):
        def __call__(self, *a: object) -> object:
            raise RuntimeError(f"could not connect to {URL}\n" + "x" * 500)

    ev = EventLog()
    cam = CameraTask(cfg(URL), ev, lambda: None, opener=Leaky())
    async with running(cam):
        lost = await ev.wait("camera_lost")
    assert lost["reason"].startswith(
        "RuntimeError: could not connect to rtsp://***@cam.invalid:554/stream1")
    assert "s3cret" not in lost["reason"] and len(lost["reason"]) == 200


async def test_no_new_capture_while_too_many_are_stuck_in_opencv() -> None:
    """A stream that stalls on every open leaves one thread stuck per stall; at MAX_STRAY
    of them the task stops opening new ones until one returns."""
    caps = [FakeCap(frames=1, hang=True) for _ in range(task_mod.MAX_STRAY + 3)]
    opener = ScriptedOpener(*caps, FakeCap(frames=10_000, every=0.01))
    ev, frames = EventLog(), FrameLog()
    cam = CameraTask(cfg(URL, queue_size=4), ev, lambda: None, on_frame=frames,
                     reopen_min_s=0.02, reopen_max_s=0.05,
                     stall_timeout_s=0.1, open_timeout_s=1.0, opener=opener)
    try:
        async with running(cam):
            await until(lambda: cam.stray_threads == task_mod.MAX_STRAY, 5, "strays")
            opened = len(opener.calls)
            await asyncio.sleep(0.5)  # ten backoffs' worth
            assert len(opener.calls) == opened == task_mod.MAX_STRAY
            assert cam.stray_threads == task_mod.MAX_STRAY
            assert "3 capture threads are stuck in OpenCV" in cam._last_reason
            opener.unblock_all()  # OpenCV returns: the strays end, opening resumes
            await until(lambda: len(opener.calls) > opened, 3, "a new open")
    finally:
        opener.unblock_all()
    await until(lambda: cam.stray_threads == 0, 2, "the stuck threads ending")
