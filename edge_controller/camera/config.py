"""`[camera]`: what the camera task captures."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_controller.configbase import Section as _Section


class CameraConfig(_Section):
    enabled: bool = Field(True, description="Run the camera task.")
    source: str = Field(
        "v4l2:0",
        description="'v4l2:N' or a /dev/videoN path, an rtsp:// or http(s):// stream URL, or "
        "'file:PATH' for a recorded video.",
    )
    realtime: bool = Field(
        True, description="Pace a video file at its own frame rate (as a live camera would); "
        "when false the file is read as fast as analysis takes frames, losing none."
    )
    on_end: Literal["loop", "stop", "exit"] = Field(
        "loop",
        description="When a video file ends: play it again, stop the camera task, or shut the "
        "controller down cleanly (used by the simulated pole).",
    )
    queue_size: int = Field(
        2, ge=1, le=64, description="Frames buffered between capture and analysis; the oldest "
        "is dropped when full (live sources and real-time files).",
    )
    open_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Time a V4L2 device or stream may take to open "
        "(and deliver its first frame, with stall_timeout_s) before it counts as lost.",
    )
    stall_timeout_s: float = Field(
        5.0, gt=0, le=120, description="A live source (V4L2 or stream) silent this long "
        "counts as lost (camera_lost) and is reopened with backoff.",
    )
