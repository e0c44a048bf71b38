"""`DetectionPipeline`: frames in, person boxes out, spending as little CPU as the scene allows.

By default NanoDet-m looks at each processed frame, whole (`detect/nanodet.py`).
Where `[detector.nanodet] use_when` leaves a condition out, the SSD pipeline does:
per processed frame it decides which passes to run (whole frame, tiles, zone
crops), runs the model on those whose region moved (or all of them on a refresh),
keeps the last result of the passes it did not run, and merges everything without
duplicates:

    det = DetectionPipeline(cfg, zones=[[[100, 300], [700, 300], [700, 570], [100, 570]]])
    boxes = det.process(frame.index, frame.t, frame.image)   # None: frame skipped
    # boxes: float32 (N, 5) x1, y1, x2, y2, score in pixels of the original frame

Frames are skipped (None) by `detect_interval` and `max_fps` only. In the SSD
pipeline a processed frame whose regions all stood still runs no inference and
returns the boxes kept from before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_controller.detect.boxes import Detections, empty
from edge_controller.detect.config import DetectorConfig
from edge_controller.detect.enhance import Enhancer
from edge_controller.detect.model import Detector, Model
from edge_controller.detect.motion import MotionGate, blobs
from edge_controller.detect.nanodet import NanoDet
from edge_controller.detect.sight import SightMonitor
from edge_controller.detect.tiling import (
    PassResult,
    PolygonLike,
    Region,
    cover,
    grid_regions,
    merge,
    pass_result,
    zone_regions,
)

# (frame width, height) -> camera distance (m) per band of rows, or None (no calibration).
DistancesFor = Callable[[int, int], Sequence[float] | None]


@dataclass
class DetectorStats:
    frames_seen: int = 0
    frames_processed: int = 0
    inferences: int = 0
    inference_ms: float = 0.0  # total time inside the model
    full_refreshes: int = 0
    last_ms: float = 0.0  # wall time of the last processed frame (all of it)
    per_pass_runs: dict[str, int] = field(default_factory=dict)

    @property
    def mean_inference_ms(self) -> float:
        return self.inference_ms / self.inferences if self.inferences else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "frames_seen": self.frames_seen,
            "frames_processed": self.frames_processed,
            "inferences": self.inferences,
            "inference_ms": round(self.inference_ms, 1),
            "mean_inference_ms": round(self.mean_inference_ms, 2),
            "full_refreshes": self.full_refreshes,
            "last_ms": round(self.last_ms, 2),
        }


@dataclass(frozen=True)
class Pass:
    name: str  # "whole", "tile-0", "zone-1", ...
    region: Region
    always_full: bool = False  # the whole frame: any motion anywhere counts


class DetectionPipeline:
    """Person detector over camera frames; see the module docstring."""

    def __init__(self, cfg: DetectorConfig, zones: Sequence[PolygonLike] | None = None,
                 model: Detector | None = None,
                 distances: Sequence[float] | DistancesFor | None = None,
                 nanodet: Detector | None = None) -> None:
        """`distances`: camera distance (m) per band of rows (`enhance.bands`) from the
        calibration, for fog removal with the visibility task's MOR (None: no calibration),
        or a function of the frame's (width, height) giving them, called when the frame
        size is first seen or changes. `model` (the SSD pipeline's) and `nanodet`: detectors
        to use instead of the configured ones; a `model` given alone serves every frame (no
        NanoDet), so a caller's detector is never bypassed behind its back."""
        self.cfg = cfg
        self.zones: list[PolygonLike] = [*cfg.crops.zones, *(zones or [])]
        self._distances_for = distances if callable(distances) else None
        self.enhancer = Enhancer(cfg.enhance, None if callable(distances) else distances)
        self.sight = SightMonitor(cfg.sight)
        e = cfg.enhance
        # The model keeps everything any regime may want; each frame then applies its own.
        floor = (min(cfg.score_threshold, e.score_threshold_night, e.score_threshold_night_fg,
                     e.score_threshold_grey)
                 if e.enabled else cfg.score_threshold)
        # Loaded when first needed: with NanoDet in every condition (the default) the SSD
        # pipeline never runs, and its session would only hold memory.
        self._model: Detector | None = model
        self._model_cfg = cfg.model_copy(update={"score_threshold": floor})
        ll = cfg.nanodet
        self.nanodet: Detector | None = nanodet
        if nanodet is None and model is None and ll.enabled and ll.use_when:
            self.nanodet = NanoDet(ll.model, ll.threads or cfg.threads, ll.floor, ll.nms_iou)
        self.nanodet_active = False  # the last processed frame went to NanoDet
        self.threshold = cfg.score_threshold
        self.motion = MotionGate(cfg.motion) if cfg.motion.enabled else None
        self.stats = DetectorStats()
        self.passes: list[Pass] = []
        self._size: tuple[int, int] | None = None
        self._cache: dict[str, PassResult] = {}
        self._since_refresh = 0
        self._last_index: int | None = None
        self._last_t: float | None = None
        self.last: Detections = empty()

    @property
    def model(self) -> Detector:
        """The SSD pipeline's detector."""
        if self._model is None:
            self._model = Model(self._model_cfg)
        return self._model

    @model.setter
    def model(self, m: Detector) -> None:
        self._model = m

    def set_conditions(self, regime: str | None = None, mor_m: float | None = None) -> None:
        """The lighting regime ("day", "twilight", "night"; None: from the frame) and the
        MOR (m; None: unknown) the controller knows, for the frames that follow."""
        self.enhancer.set_conditions(regime, mor_m)

    # -- layout --------------------------------------------------------------------------

    def layout(self, width: int, height: int) -> list[Pass]:
        """The passes for a frame of this size (pure: depends on config and zones only)."""
        c = self.cfg
        passes: list[Pass] = []
        crops = (zone_regions(self.zones, width, height, c.crops.margin_px)
                 if c.crops.enabled else [])
        if not c.crops.only:
            if c.tiling.whole_frame:
                passes.append(Pass("whole", (0, 0, width, height), always_full=True))
            if c.tiling.tiled:
                t = c.tiling
                for i, r in enumerate(grid_regions(width, height, t.cols, t.rows, t.overlap,
                                                   t.top)):
                    passes.append(Pass(f"tile-{i}", r))
        passes.extend(Pass(f"zone-{i}", r) for i, r in enumerate(crops))
        return passes

    def _relayout(self, width: int, height: int) -> None:
        self._size = (width, height)
        if self._distances_for is not None:
            self.enhancer.set_distances(self._distances_for(width, height))
        self.passes = self.layout(width, height)
        self._cache.clear()
        self._since_refresh = 0
        if self.motion is not None:
            self.motion.reset()

    # -- per frame -----------------------------------------------------------------------

    def due(self, frame_index: int, t: float) -> bool:
        """Whether this frame is processed (detect_interval, max_fps)."""
        c = self.cfg
        if self._last_index is None or self._last_t is None:
            return True
        if frame_index < self._last_index or t < self._last_t:  # source restarted
            return True
        if frame_index - self._last_index < c.detect_interval:
            return False
        return not (c.max_fps > 0 and t - self._last_t < 1.0 / c.max_fps - 1e-6)

    def process(self, frame_index: int, t: float,
                image: npt.NDArray[np.uint8]) -> Detections | None:
        """Person boxes (N, 5) float32 [x1, y1, x2, y2, score] in pixels of `image`, or None
        when this frame is skipped."""
        self.stats.frames_seen += 1
        if not self.due(frame_index, t):
            return None
        start = time.perf_counter()
        self._last_index, self._last_t = frame_index, t
        h, w = image.shape[:2]
        if self._size != (w, h):
            self._relayout(w, h)
        refresh = not self._cache or self._since_refresh >= self.cfg.motion.refresh_frames - 1
        raw = image
        image = self.enhancer.apply(image)
        en = self.enhancer
        # The night reference only when night is known (fed by the controller or fixed):
        # a covered lens also looks like night to the frame-judged regime, and would be
        # learnt as the night view, so a blind pole would look fine.
        night = en.mode == "night" and "night" in (en.regime, self.cfg.enhance.regime)
        self.sight.update(raw, transmission=en.detectability if en.mode == "fog" else None,
                          foggy=en.mode == "fog", night=night)
        self.threshold = self.enhancer.score_threshold(self.cfg.score_threshold)
        if self.motion is not None:
            self.motion.update(image)
        self.nanodet_active = self._nanodet_now()
        if self.nanodet_active:
            self._run_nanodet(image)
            refresh = True  # the day passes start afresh when the light comes back
        done = self.nanodet_active
        if not done and not refresh and self.motion is not None and self.cfg.focus.enabled:
            done = self._focus(image)
            refresh = not done
        if not done:
            run = ([True] * len(self.passes) if refresh or self.motion is None
                   else self._moving())
            self._run_passes(image, run)
            self.last = self.enhancer.tidy(
                merge(list(self._cache.values()), self.cfg.tiling.merge_iou,
                      self.cfg.tiling.contain), self.cfg.score_threshold)
        if refresh:
            self.stats.full_refreshes += 1
            self._since_refresh = 0
        else:
            self._since_refresh += 1
        self.stats.frames_processed += 1
        self.stats.last_ms = (time.perf_counter() - start) * 1000
        return self.last

    def _nanodet_now(self) -> bool:
        en, use = self.enhancer, self.cfg.nanodet.use_when
        if self.nanodet is None:
            return False
        if en.mode == "night":
            return "night" in use
        return "grey" in use if en.grey else "day" in use

    def _run_nanodet(self, image: npt.NDArray[np.uint8]) -> None:
        """The whole frame, once, through NanoDet (no tiles or focus windows: crops of a
        noisy frame, upscaled, make it see people in the grain)."""
        assert self.nanodet is not None
        ll, night = self.cfg.nanodet, self.enhancer.mode == "night"
        pair = (ll.score_threshold_night, ll.score_threshold_night_fg)
        self.threshold = min(pair) if night else ll.score_threshold
        inf0 = self.nanodet.inference_s
        dets = self.nanodet.detect(image)
        dets = dets[dets[:, 4] >= self.threshold]
        if len(dets):
            dets = dets[self.enhancer.keep(dets[:, :4], dets[:, 4], pair[0], pair)]
        self.last = self.enhancer.tidy(dets, pair[0], pair)
        self._cache.clear()
        self.stats.inferences += 1
        self.stats.inference_ms += (self.nanodet.inference_s - inf0) * 1000
        self.stats.per_pass_runs["nanodet"] = self.stats.per_pass_runs.get("nanodet", 0) + 1

    def _detect(self, image: npt.NDArray[np.uint8], name: str, region: Region) -> PassResult:
        x1, y1, x2, y2 = region
        inf0 = self.model.inference_s
        dets = self.model.detect(image[y1:y2, x1:x2])
        dets = dets[dets[:, 4] >= self.threshold]
        if len(dets):
            shifted = dets[:, :4] + np.asarray([x1, y1, x1, y1], np.float32)
            dets = dets[self.enhancer.keep(shifted, dets[:, 4], self.cfg.score_threshold)]
        self.stats.inferences += 1
        self.stats.inference_ms += (self.model.inference_s - inf0) * 1000
        self.stats.per_pass_runs[name] = self.stats.per_pass_runs.get(name, 0) + 1
        h, w = image.shape[:2]
        return pass_result(dets, region, w, h, self.cfg.tiling.edge_px)

    def _run_passes(self, image: npt.NDArray[np.uint8], run: list[bool]) -> None:
        for p, go in zip(self.passes, run, strict=True):
            if go or p.name not in self._cache:
                self._cache[p.name] = self._detect(image, p.name, p.region)

    def _focus(self, image: npt.NDArray[np.uint8]) -> bool:
        """Look only where something moved; False when that needs too many windows."""
        assert self.motion is not None and self.motion.mask is not None
        f = self.cfg.focus
        h, w = image.shape[:2]
        mask = self.motion.mask
        sc = self.motion.scale
        prev = self.last
        touched = np.zeros(len(prev), dtype=bool)
        unexplained = mask.copy()
        for k, (x1, y1, x2, y2) in enumerate(prev[:, :4]):
            sx1, sy1 = int(x1 * sc), int(y1 * sc)
            sx2, sy2 = int(np.ceil(x2 * sc)) + 1, int(np.ceil(y2 * sc)) + 1
            touched[k] = bool(mask[sy1:sy2, sx1:sx2].mean() >= f.box_motion) \
                if sx2 > sx1 and sy2 > sy1 else False
            unexplained[sy1:sy2, sx1:sx2] = False
        new = blobs(unexplained, sc, f.min_blob_px)
        still = prev[~touched]
        items = np.concatenate([new, prev[touched, :4].astype(np.float64)])
        windows = cover(items, f.window, w, h, f.margin_px)
        if len(windows) > f.max_windows:
            return False
        parts = [PassResult(still, np.zeros(len(still), dtype=bool))]
        parts += [self._detect(image, "focus", r) for r in windows]
        self.last = self.enhancer.tidy(
            merge(parts, self.cfg.tiling.merge_iou, self.cfg.tiling.contain),
            self.cfg.score_threshold)
        return True

    def _moving(self) -> list[bool]:
        assert self.motion is not None
        active = self.motion.active([p.region for p in self.passes])
        any_motion = any(active)
        return [any_motion if p.always_full else a
                for p, a in zip(self.passes, active, strict=True)]
