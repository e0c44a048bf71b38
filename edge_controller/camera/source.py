"""Camera sources behind one interface: V4L2 device, network stream, video file.

Capture is blocking OpenCV work, so it runs in a thread (`CaptureThread`) that
opens the source itself and reads it; frames reach the event loop through a
bounded `FrameQueue`. A live source (camera, stream) and a file paced in real
time drop the oldest frame when the queue is full (a late frame is worth less
than a fresh one); a file read as fast as possible blocks instead, so every
frame of it reaches analysis in order.

Streams use OpenCV's FFmpeg backend with finite open and read timeouts, so a
dead server makes `read()` fail instead of blocking forever. OpenCV asks
FFmpeg for RTSP over TCP unless `OPENCV_FFMPEG_CAPTURE_OPTIONS` says otherwise
(e.g. `rtsp_transport;udp` for a server without interleaved TCP). The V4L2
backend has no such timeouts (its own select() timeout is 10 s by default);
the camera task's watchdog covers every source regardless.
"""

from __future__ import annotations

import math
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

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
DEFAULT_FPS = 10.0  # when a file does not say (or says something absurd)


@dataclass(frozen=True)
class SourceSpec:
    kind: Kind
    target: str

    @staticmethod
    def parse(spec: str) -> SourceSpec:
        kind: Kind | None = None
        target = spec
        if spec.startswith("file:"):
            kind, target = "file", spec[5:]
        elif spec.startswith("v4l2:"):
            kind, target = "v4l2", spec[5:]
        elif spec.startswith("/dev/video"):
            kind = "v4l2"
        elif spec.split("://", 1)[0].lower() in STREAM_SCHEMES and "://" in spec:
            kind = "stream"
        if kind is None or not target.strip():
            raise ValueError(
                f"camera source {spec!r}: use file:PATH, v4l2:N, /dev/videoN or an "
                "rtsp/http URL"
            )
        return SourceSpec(kind, target)

    @property
    def live(self) -> bool:
        """A camera or a stream: frames come at the source's pace, silence means trouble."""
        return self.kind != "file"


# (spec, open_timeout_s, read_timeout_s) -> an opened or unopened cv2.VideoCapture
Opener = Callable[[SourceSpec, float, float], Any]


def open_capture(spec: SourceSpec, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 5.0) -> Any:
    """Open a source; the result may be unopened (check `isOpened()`).

    Raises FileNotFoundError for a missing video file.
    """
    if spec.kind == "v4l2":
        dev: int | str = int(spec.target) if spec.target.isdigit() else spec.target
        # No timeout parameters: the V4L2 backend would refuse the unknown ones.
        return cv2.VideoCapture(dev, cv2.CAP_V4L2)
    if spec.kind == "stream":
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, round(open_timeout_s * 1000)),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, round(read_timeout_s * 1000)),
        ]
        return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    if not Path(spec.target).is_file():
        raise FileNotFoundError(f"video file {spec.target} not found")
    return cv2.VideoCapture(spec.target)


def sane_fps(value: Any) -> float:
    """The frame rate a capture reports, or DEFAULT_FPS when it is missing or absurd."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return DEFAULT_FPS
    return fps if math.isfinite(fps) and 0.1 <= fps <= 1000.0 else DEFAULT_FPS


@dataclass
class Frame:
    index: int  # 0-based since the source opened; a gap means frames were dropped
    t: float  # seconds: position in a file, capture time since open for live sources
    image: np.ndarray[Any, np.dtype[np.uint8]]


class FrameQueue:
    """Bounded, thread-safe frame queue between one capture thread and one consumer.

    `put` never blocks by default: on a full queue it drops exactly the oldest
    frame and counts it in `dropped`. `put(block=True)` waits for room instead
    (lossless, for files read as fast as analysis allows). `close()` ends the
    queue from either side: later puts are refused, a blocked put returns, and
    the consumer still gets every frame already queued before `get_nowait()`
    returns None for good. An asyncio consumer passes `wake` (called outside the
    lock after each put and on close) and uses `get_nowait()`; a consumer thread
    (an inference worker behind its own drop-oldest queue) blocks in `get()`.

    Invariant: put_count == frames got + dropped + len(queue).
    """

    def __init__(self, size: int, wake: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError("queue size must be at least 1")
        self.size = size
        self._q: deque[Frame] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._wake = wake
        self.put_count = 0  # frames accepted
        self.dropped = 0  # accepted frames evicted unread
        self._closed = False
        self.error = ""  # why the queue was closed, "" for a clean end

    def put(self, frame: Frame, block: bool = False) -> bool:
        """Queue a frame; False (and nothing queued) once the queue is closed."""
        with self._cond:
            if block:
                while len(self._q) >= self.size and not self._closed:
                    self._cond.wait()
            if self._closed:
                return False
            if len(self._q) >= self.size:
                self._q.popleft()
                self.dropped += 1
            self._q.append(frame)
            self.put_count += 1
            self._cond.notify_all()  # a consumer blocked in get()
        self._notify_consumer()
        return True

    def get_nowait(self) -> Frame | None:
        """The oldest queued frame, or None when the queue is empty."""
        with self._cond:
            return self._pop()

    def get(self, timeout: float | None = None) -> Frame | None:
        """Block until a frame is queued (for a consumer thread, e.g. an inference
        worker); None on timeout or once the queue is closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._q and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._pop()

    def _pop(self) -> Frame | None:  # with the lock held
        if not self._q:
            return None
        frame = self._q.popleft()
        self._cond.notify_all()  # room for a put blocked on a full queue
        return frame

    def close(self, error: str = "") -> None:
        """End the queue; the first close's error is kept."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self.error = error
            self._cond.notify_all()
        self._notify_consumer()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._q)

    def _notify_consumer(self) -> None:
        if self._wake is not None:
            self._wake()


class CaptureThread(threading.Thread):
    """Opens a source and reads it into a FrameQueue until it ends, fails or is halted.

    The queue is closed when the thread is done, after the capture was released,
    with `error` "" for the clean end of a file. A thread halted while blocked in
    OpenCV finishes (and releases the capture) when that call returns.
    """

    def __init__(
        self,
        spec: SourceSpec,
        queue: FrameQueue,
        *,
        realtime: bool = True,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        opener: Opener = open_capture,
    ) -> None:
        super().__init__(daemon=True, name=f"camera-capture-{spec.kind}")
        self.spec = spec
        self.queue = queue
        self.is_file = spec.kind == "file"
        self.realtime = realtime and self.is_file  # live sources pace themselves
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._opener = opener
        self.opened = threading.Event()
        self.fps = DEFAULT_FPS
        self._halt = threading.Event()
        self.error = ""

    def halt(self) -> None:
        self._halt.set()
        self.queue.close("halted")

    def run(self) -> None:
        cap: Any = None
        try:
            cap = self._opener(self.spec, self.open_timeout_s, self.read_timeout_s)
            if not cap.isOpened():
                self.error = f"cannot open {self.spec.kind} source"
                return
            self.opened.set()
            self._read(cap)
        except FileNotFoundError as e:
            self.error = str(e)
        except cv2.error as e:
            self.error = f"OpenCV: {str(e).strip()}"
        except Exception as e:  # the thread must always close the queue with a reason
            self.error = f"{type(e).__name__}: {e}"
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception as e:
                    self.error = self.error or f"release failed: {e}"
            self.queue.close(self.error)

    def _read(self, cap: Any) -> None:
        self.fps = sane_fps(cap.get(cv2.CAP_PROP_FPS)) if self.is_file else DEFAULT_FPS
        start = time.monotonic()
        i = 0
        while not self._halt.is_set():
            ok, img = cap.read()
            if self._halt.is_set():
                return
            if not ok or img is None or img.size == 0:
                if not self.is_file:
                    self.error = "stream returned no frame"
                return  # a file's clean end
            t = i / self.fps if self.is_file else time.monotonic() - start
            if self.realtime:
                # Pace a file like a live camera: frame i is due at start + i / fps.
                lag = start + t - time.monotonic()
                if lag > 0 and self._halt.wait(lag):
                    return
            if not self.queue.put(Frame(i, t, img), block=self.is_file and not self.realtime):
                return  # closed by the consumer
            i += 1
