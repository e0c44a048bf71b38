"""Camera sources behind one interface: V4L2 device, network stream, video file.

Capture is blocking OpenCV work, so it runs in a thread; frames reach the
event loop through a bounded queue that drops the oldest frame when full (a
late frame is worth less than a fresh one).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

Kind = Literal["v4l2", "stream", "file"]


@dataclass(frozen=True)
class SourceSpec:
    kind: Kind
    target: str

    @staticmethod
    def parse(spec: str) -> SourceSpec:
        if spec.startswith("file:"):
            return SourceSpec("file", spec[5:])
        if spec.startswith("v4l2:"):
            return SourceSpec("v4l2", spec[5:])
        if spec.startswith("/dev/video"):
            return SourceSpec("v4l2", spec)
        if spec.split("://", 1)[0] in ("rtsp", "rtsps", "http", "https"):
            return SourceSpec("stream", spec)
        raise ValueError(
            f"camera source {spec!r}: use file:PATH, v4l2:N, /dev/videoN or an rtsp/http URL"
        )


def open_capture(spec: SourceSpec) -> Any:
    if spec.kind == "v4l2":
        dev: int | str = int(spec.target) if spec.target.isdigit() else spec.target
        return cv2.VideoCapture(dev, cv2.CAP_V4L2)
    if spec.kind == "stream":
        return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG)
    if not Path(spec.target).is_file():
        raise FileNotFoundError(f"video file {spec.target} not found")
    return cv2.VideoCapture(spec.target)


@dataclass
class Frame:
    index: int  # 0-based since the source opened
    t: float  # seconds: position in a file, capture time since open for live sources
    image: np.ndarray[Any, np.dtype[np.uint8]]


class FrameQueue:
    """Bounded, thread-safe, drop-oldest. `put` never blocks the capture thread."""

    def __init__(self, size: int, wake: Callable[[], None]) -> None:
        self._q: deque[Frame | None] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._wake = wake
        self.dropped = 0

    def put(self, item: Frame | None) -> None:
        with self._lock:
            if self._q.maxlen is not None and len(self._q) == self._q.maxlen:
                self.dropped += 1
            self._q.append(item)
        self._wake()

    def get_nowait(self) -> tuple[bool, Frame | None]:
        with self._lock:
            if not self._q:
                return False, None
            return True, self._q.popleft()


class CaptureThread(threading.Thread):
    """Reads frames until the source ends or fails; `None` in the queue marks the end."""

    def __init__(self, cap: Any, queue: FrameQueue, realtime: bool, is_file: bool) -> None:
        super().__init__(daemon=True, name="camera-capture")
        self.cap = cap
        self.queue = queue
        self.realtime = realtime and is_file
        self.is_file = is_file
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 10.0
        self._halt = threading.Event()
        self.error = ""

    def halt(self) -> None:
        self._halt.set()

    def run(self) -> None:
        start = time.monotonic()
        i = 0
        try:
            while not self._halt.is_set():
                ok, img = self.cap.read()
                if not ok or img is None:
                    if not self.is_file:
                        self.error = "stream returned no frame"
                    break
                t = i / self.fps if self.is_file else time.monotonic() - start
                if self.realtime:
                    # Pace a file like a live camera: frame i is due at i / fps.
                    lag = start + t - time.monotonic()
                    if lag > 0 and self._halt.wait(lag):
                        break
                self.queue.put(Frame(i, t, img))
                i += 1
        except cv2.error as e:
            self.error = str(e)
        finally:
            self.cap.release()
            self.queue.put(None)
