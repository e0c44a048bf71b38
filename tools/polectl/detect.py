"""`polectl detect VIDEO --config POLE.toml --out DETECTIONS.jsonl`: the pole's person
detector over a recorded video, as fast as the CPU allows.

One JSON object per processed frame (skipped frames, by `detect_interval` or
`max_fps`, write nothing):

    {"frame": 12, "t": 1.2, "boxes": [[x1, y1, x2, y2, score], ...]}

`frame` is 0-based, `t` seconds from the start of the video (frame / fps), box
corners in pixels of the original frame (0.1 px), scores to 3 decimals.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_controller.detect import DetectionPipeline, DetectorConfig
from edge_controller.detect.pipeline import DistancesFor
from polectl.configfile import load_or_raise


class DetectError(Exception):
    """A problem the user can fix (missing video, bad config); the message says which."""


def load_detector_config(path: Path | None) -> DetectorConfig:
    """The `[detector]` section of a pole config (defaults without a file); the whole file
    is validated as the controller validates it."""
    if path is None:
        return DetectorConfig()
    return load_or_raise(path, DetectError).detector


def with_regime(cfg: DetectorConfig, regime: str | None) -> DetectorConfig:
    """`regime` ("day", "night", "auto": judged from the frame) over `[detector.enhance]`."""
    if regime is None:
        return cfg
    if regime not in ("day", "night", "auto"):
        raise DetectError(f"regime must be day, night or auto, not {regime!r}")
    return cfg.model_copy(update={"enhance": cfg.enhance.model_copy(update={"regime": regime})})


def calibration_distances(config: Path | None, bands: int) -> DistancesFor | None:
    """Distances per band from the config's `[visibility.calibration]` (None: none), for
    the fog model with `--mor`, as the live controller hands them to its detector."""
    if config is None:
        return None
    from edge_controller.visibility.service import band_distances_for

    return band_distances_for(load_or_raise(config, DetectError).visibility.calibration, bands)


def _box(b: Any) -> list[float]:
    return [round(float(b[0]), 1), round(float(b[1]), 1), round(float(b[2]), 1),
            round(float(b[3]), 1), round(float(b[4]), 3)]


# Long: the frame loop shares the capture, the pipeline and the progress bar with their cleanup.
def detect_video(video: Path, config: Path | None, out: Path, progress: bool = True,
                 max_frames: int | None = None, regime: str | None = None,
                 mor_m: float | None = None) -> dict[str, Any]:
    """Run the configured pipeline over `video`, write JSONL to `out`, return a summary.

    `regime` ("day", "night", "auto") overrides `[detector.enhance] regime`; `mor_m` is
    the visibility the fog model assumes (with a calibration), as the live controller's
    visibility task would feed it."""
    if not video.is_file():
        raise DetectError(f"video {video} not found")
    cfg = with_regime(load_detector_config(config), regime)
    distances = calibration_distances(config, cfg.enhance.bands)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DetectError(f"cannot open video {video} (not a video OpenCV can read?)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if max_frames is not None:
        total = min(total, max_frames) if total > 0 else max_frames
    try:
        pipe = DetectionPipeline(cfg, distances=distances)
        if mor_m is not None:
            pipe.set_conditions(None, mor_m)
    except (FileNotFoundError, ValueError) as e:
        cap.release()
        raise DetectError(str(e)) from None

    out.parent.mkdir(parents=True, exist_ok=True)
    written = boxes = 0
    start = time.perf_counter()
    bar: Any = None
    try:
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            bar = Progress(TextColumn("detect"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn(),
                           transient=False)
            bar.start()
            task = bar.add_task("detect", total=total or None, fps=0.0)
        with out.open("w", encoding="utf-8") as f:
            i = 0
            while max_frames is None or i < max_frames:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                t = i / fps
                dets = pipe.process(i, t, np.asarray(img, dtype=np.uint8))
                if dets is not None:
                    f.write(json.dumps({"frame": i, "t": round(t, 3),
                                        "boxes": [_box(b) for b in dets]}) + "\n")
                    written += 1
                    boxes += len(dets)
                i += 1
                if bar is not None:
                    el = time.perf_counter() - start
                    bar.update(task, completed=i, fps=i / el if el > 0 else 0.0)
    finally:
        cap.release()
        if bar is not None:
            bar.stop()
    elapsed = time.perf_counter() - start
    return {
        "video": str(video),
        "out": str(out),
        "frames": pipe.stats.frames_seen,
        "processed": written,
        "boxes": boxes,
        "seconds": round(elapsed, 3),
        "fps": round(pipe.stats.frames_seen / elapsed, 2) if elapsed > 0 else 0.0,
        "stats": pipe.stats.as_dict(),
        "enhance": pipe.enhancer.mode,
        "calibration": distances is not None,
        "sight": pipe.sight.state.as_dict(),
    }
