"""The `camera` task: keep a source open, hand frames to the analysers, report health.

One capture session = one `CaptureThread` (open + read) feeding one
`FrameQueue`. The task sleeps until the thread wakes it, so the event loop
never waits on OpenCV. A live source that delivers no frame for
`stall_timeout_s` (or none within `open_timeout_s + stall_timeout_s` of the
start of a session) is declared lost by a watchdog even when OpenCV is stuck
inside a call that never returns; the stuck thread is abandoned (it releases
its capture if the call ever returns) and the source is reopened.

A source that cannot be opened, fails, stalls or ends (live) is reported once
as `camera_lost` and reopened with exponential backoff (`reopen_min_s`,
doubling up to `reopen_max_s`; the backoff restarts after a session that
delivered frames); the first frame after that is reported as
`camera_restored`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edge_controller.backoff import exponential
from edge_controller.camera.config import CameraConfig
from edge_controller.camera.source import (
    CaptureThread,
    Frame,
    FrameQueue,
    Opener,
    SourceSpec,
    open_capture,
)

log = logging.getLogger(__name__)

DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_STALL_TIMEOUT_S = 5.0
FPS_WINDOW_S = 5.0
MAX_REASON = 200  # characters of a camera_lost reason
MAX_STRAY = 3  # abandoned capture threads (stuck in OpenCV) before no new one is opened


class CameraTask:
    def __init__(
        self,
        cfg: CameraConfig,
        on_event: Callable[[str, dict[str, Any]], None],
        on_end: Callable[[], None],
        on_frame: Callable[[Frame], None] | None = None,
        reopen_min_s: float = 1.0,
        reopen_max_s: float = 30.0,
        *,
        open_timeout_s: float | None = None,
        stall_timeout_s: float | None = None,
        opener: Opener = open_capture,
    ) -> None:
        """`on_frame` runs on the event loop for every delivered frame: keep it cheap
        (hand the frame to an analyser's own queue or thread).

        `open_timeout_s` / `stall_timeout_s` default to the config's fields of those
        names when it has them, else to DEFAULT_OPEN_TIMEOUT_S / DEFAULT_STALL_TIMEOUT_S.
        """
        self.cfg = cfg
        self.spec = SourceSpec.parse(cfg.source)
        self._on_event = on_event
        self._on_end = on_end
        self._on_frame = on_frame
        if not 0 < reopen_min_s <= reopen_max_s:
            raise ValueError("need 0 < reopen_min_s <= reopen_max_s")
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self.open_timeout_s = float(
            open_timeout_s if open_timeout_s is not None
            else getattr(cfg, "open_timeout_s", DEFAULT_OPEN_TIMEOUT_S))
        self.stall_timeout_s = float(
            stall_timeout_s if stall_timeout_s is not None
            else getattr(cfg, "stall_timeout_s", DEFAULT_STALL_TIMEOUT_S))
        if self.open_timeout_s <= 0 or self.stall_timeout_s <= 0:
            raise ValueError("camera timeouts must be positive")
        self._opener = opener
        self.source = _redact(cfg.source) if self.spec.kind == "stream" else cfg.source
        self.width = 0
        self.height = 0
        self.lost = False
        self.ended = False
        self.sessions = 0  # capture sessions started (open attempts)
        self.delivered = 0  # frames handed to on_frame
        self._captured_before = 0  # frames captured by finished sessions
        self._dropped_before = 0
        self._queue: FrameQueue | None = None
        self._fps_samples: deque[tuple[float, int]] = deque()
        self._lost_at = 0.0
        self._last_reason = ""
        self._stray: list[CaptureThread] = []
        self._stray_warned = 0

    # ---- health and stats -----------------------------------------------------

    @property
    def healthy(self) -> bool:
        return not self.lost

    @property
    def frames(self) -> int:
        """Frames captured since the task started (delivered, dropped or still queued)."""
        q = self._queue
        return self._captured_before + (q.put_count if q is not None else 0)

    @property
    def dropped(self) -> int:
        """Frames dropped (oldest first) because analysis did not keep up."""
        q = self._queue
        return self._dropped_before + (q.dropped if q is not None else 0)

    @property
    def fps(self) -> float:
        """Capture rate over the last FPS_WINDOW_S seconds; 0 when frames stopped."""
        w = self._prune_fps(time.monotonic())
        if len(w) < 2 or w[-1][0] <= w[0][0]:
            return 0.0
        return (w[-1][1] - w[0][1]) / (w[-1][0] - w[0][0])

    def _prune_fps(self, now: float) -> deque[tuple[float, int]]:
        w = self._fps_samples
        while w and now - w[0][0] > FPS_WINDOW_S:
            w.popleft()
        return w

    @property
    def stray_threads(self) -> int:
        """Abandoned capture threads still stuck in an OpenCV call."""
        self._stray = [t for t in self._stray if t.is_alive()]
        return len(self._stray)

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frames": self.frames,
            "fps": round(self.fps, 2),
            "width": self.width,
            "height": self.height,
            "healthy": self.healthy,
        }

    # ---- the task -------------------------------------------------------------

    async def run(self) -> None:
        failures = 0  # consecutive sessions without a frame
        while True:
            delivered, error = await self._session()
            if self.spec.kind == "file" and not error:
                if delivered == 0:
                    error = "video file yielded no frames"
                elif self.cfg.on_end == "loop":
                    continue
                else:
                    self.ended = True
                    log.info("camera: %s ended after %d frames", self.source, self.frames)
                    if self.cfg.on_end == "exit":
                        self._on_end()
                    return
            if delivered:
                failures = 0
            self._mark_lost(error or "source ended")
            delay = exponential(self.reopen_min_s, self.reopen_max_s, failures)
            failures += 1
            await asyncio.sleep(delay)

    # Long: open, first-frame wait, stall watchdog and delivery share one state.
    async def _session(self) -> tuple[int, str]:
        """Open the source and deliver its frames until it ends, fails or stalls.

        Returns (frames delivered, error); error "" only for the clean end of a file.
        """
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:  # from the capture thread
            # RuntimeError: the loop is gone, an abandoned thread outlived the task.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ready.set)

        stray = self.stray_threads
        if stray > self._stray_warned:
            log.warning("camera: %d abandoned capture thread(s) still stuck in OpenCV", stray)
        self._stray_warned = stray
        if stray >= MAX_STRAY:
            # Each holds a capture with its decoder and socket: one more per stall would
            # grow without bound where OpenCV ignores its timeouts. Wait (the caller's
            # backoff) until one returns.
            return 0, (f"{stray} capture threads are stuck in OpenCV; not opening another "
                       "until one returns")
        queue = FrameQueue(self.cfg.queue_size, wake)
        thread = CaptureThread(
            self.spec, queue, realtime=self.cfg.realtime,
            open_timeout_s=self.open_timeout_s, read_timeout_s=self.stall_timeout_s,
            opener=self._opener,
        )
        self._queue = queue
        self.sessions += 1
        delivered = 0
        first_frame_s = self.open_timeout_s + self.stall_timeout_s
        deadline = loop.time() + first_frame_s
        thread.start()
        try:
            while True:
                if self.spec.live:
                    try:
                        async with asyncio.timeout_at(deadline):
                            await ready.wait()
                    except TimeoutError:
                        if delivered:
                            return delivered, f"no frame for {self.stall_timeout_s:g} s"
                        if thread.opened.is_set():
                            return 0, f"no first frame within {first_frame_s:g} s"
                        return 0, f"source did not open within {first_frame_s:g} s"
                else:
                    await ready.wait()
                ready.clear()
                done = queue.closed  # read before draining: nothing is put after close
                got = 0
                while (frame := queue.get_nowait()) is not None:
                    if delivered == 0:
                        self._mark_restored()
                    delivered += 1
                    got += 1
                    self._account(frame)
                    if self._on_frame is not None:
                        self._on_frame(frame)
                if got:
                    deadline = loop.time() + self.stall_timeout_s
                    now = time.monotonic()
                    self._prune_fps(now).append((now, self.frames))
                if done:
                    return delivered, queue.error
        finally:
            finished = queue.closed  # the thread closed it: capture released, thread exiting
            thread.halt()  # closes the queue: no put succeeds after this
            self._captured_before += queue.put_count
            self._dropped_before += queue.dropped
            self._queue = None
            if not finished:
                # Watchdog or cancellation: the thread may be stuck in OpenCV; it
                # releases its capture and exits when that call returns.
                self._stray.append(thread)

    def _account(self, frame: Frame) -> None:
        self.delivered += 1
        self.height, self.width = frame.image.shape[:2]

    def _mark_lost(self, why: str) -> None:
        # OpenCV's messages could quote the URL: never publish its credentials.
        why = why.replace(self.cfg.source, self.source)[:MAX_REASON]
        if not self.lost:
            self.lost = True
            self._lost_at = time.monotonic()
            self._last_reason = why
            log.warning("camera: %s lost: %s", self.source, why)
            self._on_event("camera_lost", {"reason": why, "source": self.source})
        elif why != self._last_reason:
            self._last_reason = why
            log.info("camera: %s still lost: %s", self.source, why)

    def _mark_restored(self) -> None:
        if self.lost:
            self.lost = False
            down_s = round(time.monotonic() - self._lost_at, 1)
            log.info("camera: %s restored after %.1f s", self.source, down_s)
            self._on_event("camera_restored", {"source": self.source, "down_s": down_s})


def _redact(url: str) -> str:
    """Stream URLs often carry credentials; never publish or log them."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
