"""`polectl visibility VIDEO_OR_IMAGES --config POLE.toml`: the pole's visibility
estimator over a recorded video or a set of images, one JSON object per estimate:

    {"t": 35.0, "frame": 350, "mor_m": 180.4, "band": "50-200", "confidence": 0.93,
     "regime": "day", "detail": ""}

`t` is seconds from the start of the video (frame / fps), or for images
`index x every`; `mor_m` is null when the estimate is unknown or outside the
measurable range (the band then says which side); `band` is `>=1000`,
`200-1000`, `50-200`, `<50` or `unknown`. The first estimates are `unknown`
while the clear-weather reference is learnt (`visibility.reference_frames`
frames, `reference_gap_s` apart in video time).
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer

from edge_controller.detect import DetectorConfig
from edge_controller.visibility.config import VisibilityConfig
from edge_controller.visibility.estimator import VisibilityEstimator
from polectl.configfile import load_or_raise

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
Image = np.ndarray[Any, np.dtype[np.uint8]]


class VisibilityError(Exception):
    """A problem the user can fix (missing input, bad config); the message says which."""


def load_visibility_config(path: Path) -> tuple[VisibilityConfig, DetectorConfig]:
    """The `[visibility]` and `[detector]` sections of a pole config; the whole file is
    validated as the controller validates it."""
    cfg = load_or_raise(path, VisibilityError)
    return cfg.visibility, cfg.detector


def frames(source: str, every: float) -> Iterator[tuple[int, float, Image]]:
    """(frame index, t seconds, image) of the frames to analyse, one per `every` s."""
    p = Path(source)
    if p.is_dir() or any(ch in source for ch in "*?["):
        files = (sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXT)
                 if p.is_dir() else sorted(Path(f) for f in glob.glob(source)))
        if not files:
            raise VisibilityError(f"no images in {source}")
        for i, f in enumerate(files):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise VisibilityError(f"cannot read image {f}")
            yield i, i * every, np.asarray(img, dtype=np.uint8)
        return
    if not p.is_file():
        raise VisibilityError(f"{source} not found")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise VisibilityError(f"cannot open video {p} (not a video OpenCV can read?)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if 0.5 <= fps <= 1000 else 10.0
    try:
        i = 0
        next_t = 0.0
        while True:
            t = i / fps
            if t + 1e-9 >= next_t:
                ok, img = cap.read()
                if not ok or img is None:
                    return
                yield i, t, np.asarray(img, dtype=np.uint8)
                next_t += every
            elif not cap.grab():
                return
            i += 1
    finally:
        cap.release()


def estimate(source: str, cfg: VisibilityConfig, every: float | None = None,
             regime: str = "day", max_frames: int | None = None,
             detector: Callable[[Image], Any] | None = None) -> Iterator[dict[str, Any]]:
    """Run the estimator over `source`; yields one dict per analysed frame."""
    if not (regime in ("day", "twilight") or (regime.startswith("night@")
                                              and regime[6:].isdigit())):
        raise VisibilityError(f"regime {regime!r}: use day, twilight or night@LEVEL")
    if not cfg.calibration.complete:
        raise VisibilityError("visibility.calibration is incomplete: give mounting_height_m, "
                              "tilt_deg and vfov_deg, or a homography with camera_xy_m and "
                              "mounting_height_m (docs/dimming.md, Calibration)")
    est = VisibilityEstimator(cfg)
    step = cfg.interval_s if every is None else every
    if step <= 0:
        raise VisibilityError("--every must be positive")
    for n, (i, t, img) in enumerate(frames(source, step)):
        if max_frames is not None and n >= max_frames:
            return
        boxes = detector(img) if detector is not None else None
        rd = est.observe(img, t, regime, boxes)
        yield {"t": round(t, 3), "frame": i, "mor_m": None if rd.mor_m is None
               else round(rd.mor_m, 1), "band": rd.band, "confidence": round(rd.confidence, 3),
               "regime": rd.regime, "detail": rd.detail}


def _detector(cfg: DetectorConfig) -> Callable[[Image], Any]:
    from edge_controller.detect import DetectionPipeline

    pipe = DetectionPipeline(cfg)
    counter = [0]

    def run(img: Image) -> Any:
        counter[0] += 1
        return pipe.process(counter[0], float(counter[0]), img)

    return run


def command(
    source: Annotated[str, typer.Argument(
        help="Video file (any format OpenCV reads), a folder of images, or a glob of images.")],
    config: Annotated[Path, typer.Option(
        "--config", "-c", help="The pole's TOML config (its \\[visibility] section).")],
    every: Annotated[float | None, typer.Option(
        help="Analyse one frame per this many seconds of video (images: the time between "
        "them). Default: visibility.interval_s.")] = None,
    regime: Annotated[str, typer.Option(
        help="Lighting regime of the recording: day, twilight or night@LEVEL.")] = "day",
    mask_people: Annotated[bool, typer.Option(
        help="Mask people found by the configured \\[detector] before each analysis.")] = False,
    max_frames: Annotated[int | None, typer.Option(
        help="Stop after this many analysed frames.")] = None,
) -> None:
    """Estimate visibility (MOR, band, confidence) over a recording: one JSON object per
    estimate on stdout."""
    try:
        cfg, det_cfg = load_visibility_config(config)
    except VisibilityError as e:  # the config: fix it and run again
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(2) from None
    try:
        det = _detector(det_cfg) if mask_people else None
        for row in estimate(source, cfg, every, regime, max_frames, det):
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
    except (VisibilityError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"visibility failed: {e}\n")
        raise typer.Exit(1) from None
