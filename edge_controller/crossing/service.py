"""Live adapter of the crossing pipeline: the `detector`, `violations` and `audio` tasks.

camera task --(drop-oldest, 1 frame)--> detector (onnxruntime in a thread)
            --(detections)--> violations (tracker + rule, events upstream)
            --(plays)--> audio (amplifier on, aplay, amplifier off)
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_controller.api.messages import CrossingSight
from edge_controller.camera.source import Frame
from edge_controller.clock import utc_iso
from edge_controller.crossing.audio import AlsaPlayer, Play, Played, WarningPolicy
from edge_controller.crossing.config import AudioConfig, CrossingConfig, SignalConfig, ZoneConfig
from edge_controller.crossing.engine import CrossingEngine, zones_from_config
from edge_controller.crossing.privacy import snapshot_jpeg
from edge_controller.crossing.signal import Colour, PushedSignal, din_colour, parse_feed
from edge_controller.detect.conditions import detector_conditions
from edge_controller.detect.config import DetectorConfig
from edge_controller.detect.pipeline import DistancesFor
from edge_controller.detect.sight import SightWatch

log = logging.getLogger(__name__)


class _Pole(Protocol):
    @property
    def timezone(self) -> str: ...


class CrossingSections(Protocol):
    """The config sections the crossing feature reads (the pole's Config has them all)."""

    @property
    def zones(self) -> list[ZoneConfig]: ...
    @property
    def crossing(self) -> CrossingConfig: ...
    @property
    def signal(self) -> SignalConfig: ...
    @property
    def audio(self) -> AudioConfig: ...
    @property
    def detector(self) -> DetectorConfig: ...
    @property
    def pole(self) -> _Pole: ...


@dataclass
class _Job:
    frame: Frame
    arrived: float  # time.time() when the camera task handed the frame over


@dataclass
class _Result:
    job: _Job
    detections: np.ndarray[Any, np.dtype[Any]]


# (light regime of the dimming policy, MOR m, its confidence), each None when unknown.
Light = Callable[[], tuple[str | None, float | None, float | None]]
SIGHT_STALE_S = 10.0  # no frame for this long: the crossing function sees nothing


class CrossingService:
    def __init__(
        self,
        cfg: CrossingSections,
        on_event: Callable[[str, dict[str, Any]], None],
        amp: Callable[[bool], Awaitable[bool]] | None,
        *,
        light: Light | None = None,
        distances: DistancesFor | None = None,
    ) -> None:
        """`light()`: what the dimming and visibility tasks know now (regime, MOR,
        confidence), read before each frame; `distances(width, height)`: camera distance
        per band of rows from the calibration, for the fog model (None: no calibration)."""
        from edge_controller.detect import DetectionPipeline  # onnxruntime: load lazily

        self.cfg = cfg
        self._on_event = on_event
        self._light = light
        zones = zones_from_config(cfg.zones)
        self.engine = CrossingEngine(zones, cfg.crossing, cfg.signal, cfg.pole.timezone)
        self.pipeline = DetectionPipeline(cfg.detector, zones=[list(z.polygon) for z in zones],
                                          distances=distances)
        self.sight = SightWatch(time.monotonic(), SIGHT_STALE_S)
        self._last_frame_at: float | None = None  # monotonic, when a frame last arrived
        a = cfg.audio
        self.policy = WarningPolicy(
            timezone=cfg.pole.timezone, cooldown_s=a.cooldown_s, quiet_hours=a.quiet_hours,
            volume_schedule=tuple((t, v) for t, v in a.volume_schedule),
            zone_clips={z.name: tuple(z.clips) for z in cfg.zones if z.clips})
        self.player = AlsaPlayer(a.device, amp, a.amp_settle_ms / 1000)
        self._frames: deque[_Job] = deque(maxlen=1)  # newest frame wins
        self._frame_ready = asyncio.Event()
        self._results: asyncio.Queue[_Result] = asyncio.Queue(maxsize=8)
        self._plays: asyncio.Queue[tuple[Play, float, float]] = asyncio.Queue(maxsize=16)
        self.frames_dropped = 0
        self.tracks_live = 0
        self.last_detect_ms = 0.0
        self.warning_latency_ms: deque[float] = deque(maxlen=200)  # frame -> aplay started
        self.skipped: dict[str, int] = {}
        self.signal_rejected = 0  # feed messages that were neither red nor green

    # ---- inputs ---------------------------------------------------------------

    def submit(self, frame: Frame) -> None:
        """Called by the camera task for every frame; never blocks."""
        if len(self._frames) == self._frames.maxlen:
            self.frames_dropped += 1
        self._last_frame_at = time.monotonic()
        self._frames.append(_Job(frame, time.time()))
        self._frame_ready.set()

    def push_signal(self, colour: Colour, t: float) -> None:
        if isinstance(self.engine.signal, PushedSignal):
            self.engine.signal.push(colour, t)

    def on_signal_feed(self, payload: bytes) -> None:
        """A message on the external signal topic ([signal] source = 'mqtt')."""
        colour = parse_feed(payload)
        if colour is None:
            self.signal_rejected += 1
            log.warning("signal feed: ignored %r (want red or green)",
                        payload.decode(errors="replace").strip()[:40])
            return
        self.push_signal(colour, time.time())

    def on_digital_inputs(self, levels: int) -> None:
        """The firmware's digital inputs changed ([signal] source = 'din')."""
        sig = self.cfg.signal
        if sig.source == "din":
            self.push_signal(din_colour(levels, sig.din_bit, sig.din_red_level), time.time())

    # ---- tasks ----------------------------------------------------------------

    async def run_detector(self) -> None:
        while True:
            try:
                # Woken without frames too: frames that stop coming are a degraded view.
                await asyncio.wait_for(self._frame_ready.wait(), SIGHT_STALE_S / 2)
            except TimeoutError:
                self.check_sight()
                continue
            self._frame_ready.clear()
            while self._frames:
                job = self._frames.popleft()
                f = job.frame
                self.feed_conditions()
                analyses = self.pipeline.sight.analyses
                t0 = time.perf_counter()
                dets = await asyncio.to_thread(self.pipeline.process, f.index, f.t, f.image)
                self.last_detect_ms = (time.perf_counter() - t0) * 1000
                self.check_sight(self.pipeline.sight.analyses != analyses)
                if dets is not None:
                    await self._results.put(_Result(job, dets))

    def feed_conditions(self) -> None:
        """Hand the detector the regime and MOR the dimming and visibility tasks know."""
        if self._light is None:
            return
        c = detector_conditions(*self._light())
        self.pipeline.set_conditions(c.regime, c.mor_m)

    def check_sight(self, analysed: bool = False) -> None:
        """Publish crossing_degraded / crossing_restored when the view changed."""
        now = time.monotonic()
        for name, detail in self.sight.check(self.pipeline.sight.state, now,
                                             self._last_frame_at, now if analysed else None):
            log.warning("%s: %s", name, detail)
            self._on_event(name, detail)

    async def run_violations(self) -> None:
        while True:
            r = await self._results.get()
            f = r.job.frame
            step = self.engine.step(f.index, time.time(), r.detections, f.image)
            self.tracks_live = len(step.tracks)
            for v in step.violations:
                detail: dict[str, Any] = v.as_dict()
                for k in ("t", "confirmed_t", "frame"):
                    detail.pop(k)
                # Both instants: the grace period was judged on the entry.
                detail["entered_at"] = utc_iso(v.t)
                detail["confirmed_at"] = utc_iso(v.confirmed_t)
                if self.cfg.crossing.evidence:
                    jpg = snapshot_jpeg(f.image, r.detections,
                                        self.cfg.crossing.evidence_max_kb * 1024)
                    detail["evidence_jpeg_b64"] = base64.b64encode(jpg).decode()
                self._on_event("violation", detail)
                if self.cfg.audio.enabled:
                    decision = self.policy.decide(v.zone, time.time())
                    if isinstance(decision, Play):
                        if self._plays.full():
                            self.skipped["queue_full"] = self.skipped.get("queue_full", 0) + 1
                        else:
                            self._plays.put_nowait((decision, r.job.arrived, time.time()))
                    else:
                        self.skipped[decision.reason] = self.skipped.get(decision.reason, 0) + 1

    async def run_audio(self) -> None:
        while True:
            play, frame_arrived, decided = await self._plays.get()

            first = [True]

            def started(rec: Played, arrived: float = frame_arrived, first: list[bool] = first
                        ) -> None:
                if first[0]:  # latency to the first clip: when the warning is heard
                    self.warning_latency_ms.append((rec.started - arrived) * 1000)
                    first[0] = False

            self.player.on_started = started
            recs = await self.player.play(play, decided)
            if recs:
                # One event per warning (its clips play back to back).
                self._on_event("warning_played", {
                    "zone": play.zone, "clips": [r.clip for r in recs], "volume": play.volume,
                    "ok": all(r.ok for r in recs),
                    "latency_ms": round((recs[0].started - frame_arrived) * 1000, 1)})

    # ---- reports --------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        now = time.time()
        st = self.pipeline.stats
        return {
            "signal": self.engine.signal_state(now).as_dict(now),
            "zones": self.engine.rule.counters_dict(now),
            "tracks": self.tracks_live,
            "detector": {"frames_seen": st.frames_seen, "frames_processed": st.frames_processed,
                         "inferences": st.inferences,
                         "mean_inference_ms": round(st.mean_inference_ms, 2),
                         "last_ms": round(self.last_detect_ms, 2),
                         "frames_dropped": self.frames_dropped},
            "audio": {"played": len(self.player.history), "skipped": dict(self.skipped)},
            "sight": self.sight_report(),
        }

    def sight_report(self) -> dict[str, Any]:
        """Telemetry `crossing.sight`: whether the pole can see the crossing, and why not."""
        self.check_sight()
        p = self.pipeline
        r = self.sight.report(p.sight.state, time.monotonic())
        m = r.state.as_dict()
        en = p.enhancer
        return CrossingSight(
            ok=r.ok, causes=r.causes, learning=r.learning,
            since_s=r.since_s, age_s=r.age_s, analyses=p.sight.analyses, mode=en.mode,
            regime=en.regime if en.regime in ("day", "twilight", "night") else None,
            mor_m=None if en.mor_m is None else round(en.mor_m, 1),
            **{k: m[k] for k in ("detectability", "shift_px", "similarity", "sharpness",
                                 "texture_lost", "brightness")},
        ).model_dump(mode="json")
