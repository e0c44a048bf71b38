"""The `camera` task: keep a source open, hand frames to the analysers, report health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from edge_controller.camera.source import CaptureThread, Frame, FrameQueue, SourceSpec, open_capture
from edge_controller.config import CameraConfig

log = logging.getLogger(__name__)


class CameraTask:
    def __init__(
        self,
        cfg: CameraConfig,
        on_event: Callable[[str, dict[str, Any]], None],
        on_end: Callable[[], None],
        on_frame: Callable[[Frame], None] | None = None,
        reopen_min_s: float = 1.0,
        reopen_max_s: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.spec = SourceSpec.parse(cfg.source)
        self._on_event = on_event
        self._on_end = on_end
        self._on_frame = on_frame
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self.frames = 0
        self.width = 0
        self.height = 0
        self.fps = 0.0
        self.lost = False
        self.ended = False
        self.dropped = 0
        self._fps_window: list[float] = []

    @property
    def healthy(self) -> bool:
        return not self.lost

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.cfg.source if self.spec.kind != "stream" else _redact(self.cfg.source),
            "frames": self.frames,
            "fps": round(self.fps, 2),
            "width": self.width,
            "height": self.height,
            "healthy": self.healthy,
        }

    async def run(self) -> None:
        failures = 0
        while True:
            cap = await asyncio.to_thread(open_capture, self.spec)
            if not cap.isOpened():
                cap.release()
                self._mark_lost(f"cannot open {self.spec.kind} source")
                failures += 1
                await asyncio.sleep(min(self.reopen_max_s, self.reopen_min_s * 2 ** failures))
                continue
            if self.lost:
                self.lost = False
                self._on_event("camera_restored", {"source": self.stats()["source"]})
            failures = 0
            error = await self._consume(cap)
            if self.spec.kind == "file" and not error:
                if self.cfg.on_end == "loop":
                    continue
                self.ended = True
                log.info("camera: %s ended after %d frames", self.spec.target, self.frames)
                if self.cfg.on_end == "exit":
                    self._on_end()
                return
            self._mark_lost(error or "source ended")
            failures += 1
            await asyncio.sleep(min(self.reopen_max_s, self.reopen_min_s * 2 ** failures))

    async def _consume(self, cap: Any) -> str:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(ready.set)

        queue = FrameQueue(self.cfg.queue_size, wake)
        thread = CaptureThread(cap, queue, self.cfg.realtime, self.spec.kind == "file")
        thread.start()
        try:
            while True:
                await ready.wait()
                ready.clear()
                while True:
                    got, frame = queue.get_nowait()
                    if not got:
                        break
                    if frame is None:
                        self.dropped += queue.dropped
                        return thread.error
                    self._account(frame)
                    if self._on_frame is not None:
                        self._on_frame(frame)
        finally:
            thread.halt()
            await asyncio.to_thread(thread.join, 5)

    def _account(self, frame: Frame) -> None:
        self.frames += 1
        self.height, self.width = frame.image.shape[:2]
        now = time.monotonic()
        w = self._fps_window
        w.append(now)
        while w and now - w[0] > 5.0:
            w.pop(0)
        if len(w) > 1:
            self.fps = (len(w) - 1) / (w[-1] - w[0])

    def _mark_lost(self, why: str) -> None:
        if not self.lost:
            self.lost = True
            log.warning("camera: %s", why)
            self._on_event("camera_lost", {"reason": why})


def _redact(url: str) -> str:
    # Stream URLs often carry credentials; never publish them.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
