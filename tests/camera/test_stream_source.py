"""Network streams through OpenCV's FFmpeg backend, served locally on loopback.

HTTP: ffmpeg itself serves the sample clip as a live MPEG-TS stream.
RTSP: ffmpeg cannot serve RTSP to a player by itself, so ffmpeg publishes the
clip (RTSP ANNOUNCE/RECORD) to Debian's rtsp-server-perl, which relays it to
players. That server speaks RTP over UDP only, so the test asks OpenCV's
FFmpeg for UDP transport (OpenCV's default is TCP).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from edge_controller.camera.source import SourceSpec, open_capture
from edge_controller.camera.task import CameraTask
from tests.camera.conftest import (
    SAMPLE,
    SAMPLE_SHAPE,
    EventLog,
    FrameLog,
    HttpStream,
    Proc,
    cfg,
    free_port,
    need_tool,
    running,
    until,
    wait_listening,
)


class RecordingOpener:
    """The real opener, with the start time and outcome of every call kept."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool]] = []

    def __call__(self, spec: SourceSpec, open_timeout_s: float, read_timeout_s: float) -> Any:
        t = time.monotonic()
        cap = open_capture(spec, open_timeout_s, read_timeout_s)
        self.calls.append((t, bool(cap.isOpened())))
        return cap


async def test_http_stream_opens_and_yields_frames(http_stream: HttpStream) -> None:
    ev, frames = EventLog(), FrameLog()
    cam = CameraTask(cfg(http_stream.url), ev, lambda: None, on_frame=frames,
                     open_timeout_s=5, stall_timeout_s=3)
    async with running(cam):
        await until(lambda: len(frames) >= 5, 10, "5 frames from the HTTP stream")
    assert all(f[3] == SAMPLE_SHAPE for f in frames.frames)
    ts = [f[1] for f in frames.frames]
    assert ts == sorted(ts) and ts[0] >= 0
    assert ev.events == [] and cam.healthy
    assert (cam.stats()["width"], cam.stats()["height"]) == (768, 576)


async def test_http_server_killed_is_lost_then_restored_with_backoff(
        http_stream: HttpStream) -> None:
    ev, frames, opener = EventLog(), FrameLog(), RecordingOpener()
    cam = CameraTask(cfg(http_stream.url), ev, lambda: None, on_frame=frames,
                     reopen_min_s=0.2, reopen_max_s=0.8, open_timeout_s=3,
                     stall_timeout_s=2, opener=opener)
    async with running(cam):
        await until(lambda: len(frames) >= 3, 10, "frames before the kill")
        http_stream.kill()
        t_kill = time.monotonic()
        lost = await ev.wait("camera_lost", within=5)
        assert not cam.healthy
        assert ev.named("camera_lost")[0][2] - t_kill < 2.5
        # Three failed reopens while the server is down: 0.2, 0.4, 0.8 s apart.
        await until(lambda: sum(not ok for _, ok in opener.calls) >= 3, 5,
                    "3 failed reopen attempts")
        http_stream.start()
        restored = await ev.wait("camera_restored", within=5)
        n = len(frames)
        await until(lambda: len(frames) >= n + 3, 5, "frames after the restart")
    assert lost["reason"] == "stream returned no frame"
    assert restored["down_s"] >= 1.0
    assert ev.names == ["camera_lost", "camera_restored"]
    t_lost = ev.named("camera_lost")[0][2]
    attempts = [t for t, _ in opener.calls[1:]]  # after the first, successful open
    gaps = [b - a for a, b in zip([t_lost, *attempts], attempts, strict=False)]
    for gap, want in zip(gaps, [0.2, 0.4, 0.8], strict=False):
        assert want - 0.05 <= gap <= want + 0.5, (gaps, want)
    assert cam.healthy and cam.sessions == len(opener.calls)


async def test_http_server_that_stalls_is_lost(http_stream: HttpStream) -> None:
    """A server that stops sending without closing: OpenCV's read would block; the
    read timeout (and behind it the watchdog) turns that into camera_lost."""
    ev, frames = EventLog(), FrameLog()
    cam = CameraTask(cfg(http_stream.url), ev, lambda: None, on_frame=frames,
                     reopen_min_s=5, open_timeout_s=3, stall_timeout_s=1)
    async with running(cam):
        await until(lambda: len(frames) >= 3, 10, "frames before the stall")
        http_stream.proc.signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        lost = await ev.wait("camera_lost", within=5)
        took = ev.named("camera_lost")[0][2] - t_stop
    assert lost["reason"] in ("stream returned no frame", "no frame for 1 s")
    assert 0.5 <= took <= 3.0, took


# ---- RTSP ------------------------------------------------------------------------


def rtsp_describe_ok(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"DESCRIBE rtsp://127.0.0.1:{port}/{path} RTSP/1.0\r\nCSeq: 1\r\n"
                      "Accept: application/sdp\r\n\r\n".encode())
            return s.recv(200).startswith(b"RTSP/1.0 200")
    except OSError:
        return False


@pytest.fixture
def rtsp_stream(tmp_path: Path) -> Any:
    ffmpeg = need_tool("ffmpeg", "ffmpeg")
    server = need_tool("rtsp-server-perl", "rtsp-server-perl")
    client_port, source_port = free_port(), free_port()
    relay = Proc([server, "--clientport", str(client_port), "--serverport", str(source_port),
                  "--client_listen_address", "127.0.0.1",
                  "--source_listen_address", "127.0.0.1",
                  "--rtp_start_port", str(20000 + client_port % 20000), "--loglevel", "2"],
                 tmp_path / "rtsp-server.log")
    pusher = Proc([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                   "-stream_loop", "-1", "-i", str(SAMPLE), "-c:v", "copy", "-an",
                   "-f", "rtsp", f"rtsp://127.0.0.1:{source_port}/cam"],
                  tmp_path / "rtsp-push.log")
    try:
        relay_proc = relay.start()
        wait_listening(client_port, relay_proc)
        wait_listening(source_port, relay_proc)
        push = pusher.start()
        deadline = time.monotonic() + 10
        while not rtsp_describe_ok(client_port, "cam"):
            if push.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the RTSP relay never offered the stream:\n"
                            + pusher.log_tail() + relay.log_tail())
            time.sleep(0.05)
        yield f"rtsp://127.0.0.1:{client_port}/cam"
    finally:
        pusher.kill()
        relay.kill()


async def test_rtsp_stream_opens_and_yields_frames(rtsp_stream: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp")
    ev, frames = EventLog(), FrameLog()
    cam = CameraTask(cfg(rtsp_stream), ev, lambda: None, on_frame=frames,
                     open_timeout_s=5, stall_timeout_s=3)
    async with running(cam):
        await until(lambda: len(frames) >= 5, 10, "5 frames from the RTSP stream")
    assert all(f[3] == SAMPLE_SHAPE for f in frames.frames)
    assert ev.events == [] and cam.healthy
