"""Person detector benchmark on PETS09-S2L1: accuracy and CPU of our pipeline vs a baseline.

Prints figures, asserts nothing (`make bench` runs it).

- Data: ../shared/data/pets09-s2l1 (vtest.avi, 795 frames at 10 fps; gt.txt in MOT
  format, gt frame = video frame + 1, `considered` = 0 boxes count neither way).
- Splits: thresholds, tile layout and gating parameters were tuned on video frames
  0-399 ONLY; figures are reported on frames 400-794 (report split) and on the
  whole clip. The dev figures are printed too, labelled as such.
- Accuracy: precision/recall at IoU 0.5, optimal (Hungarian) matching per frame.
  Frames our pipeline skips (None) are scored with the boxes it returned last.
- Pipelines, measured in the same run, frame by frame interleaved, on one core
  (sched_setaffinity to CPU 0) with onnxruntime intra-op threads = 1:
    ours      the shipped default model and the PETS pole config below;
    baseline  fp32 model, whole frame + 2x2 tiles (20 % overlap) on EVERY frame,
              NMS merge (IoU 0.45), score 0.4 (the reference setup);
    baseline-int8  the same baseline with our INT8 model (isolates the pipeline's
              share of the saving from the model's).
- CPU: getrusage(RUSAGE_SELF) user+system deltas around each pipeline's calls;
  CPU seconds per second of video (video time = frames / 10).

    .venv/bin/python bench/detect_bench.py [--frames N] [--no-int8-baseline]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from detect_eval import evaluate, load_gt  # noqa: E402

from edge_controller.detect import DetectionPipeline, DetectorConfig, Model  # noqa: E402
from edge_controller.detect.boxes import nms  # noqa: E402
from edge_controller.detect.config import SSD_FP32  # noqa: E402
from edge_controller.detect.tiling import grid_regions, to_frame  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"
FPS = 10.0
DEV = range(0, 400)
REPORT = range(400, 795)

# The pole config for this scene (an installer would write it as [detector] in pole.toml).
# Tuned on frames 0-399 only. The defaults of DetectorConfig are those tuned values (3x2
# tiles at about the people's own scale, no whole-frame pass, score 0.4, focus windows
# 280x260 around motion, background alpha 0.5, full pass every 20 processed frames); the
# one scene-specific key is `top`: the tiles skip the top 15 % of this image (facades).
OURS: dict[str, Any] = {"tiling": {"top": 0.15}}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Baseline:
    """Whole frame + cols x rows tiles on every frame, plain NMS across passes."""

    def __init__(self, model_path: Path, score: float = 0.4, cols: int = 2, rows: int = 2,
                 overlap: float = 0.2, iou: float = 0.45) -> None:
        self.model = Model(DetectorConfig(model=model_path, score_threshold=score, threads=1))
        self.grid = (cols, rows, overlap)
        self.iou = iou
        self.inferences = 0

    def process(self, _i: int, _t: float, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        regions = [(0, 0, w, h), *grid_regions(w, h, *self.grid)]
        parts = []
        for x1, y1, x2, y2 in regions:
            parts.append(to_frame(self.model.detect(image[y1:y2, x1:x2]), (x1, y1, x2, y2)))
            self.inferences += 1
        d = np.concatenate(parts)
        return d[nms(d[:, :4], d[:, 4], self.iou)] if len(d) else d


class Run:
    def __init__(self, name: str, fn: Callable[[int, float, np.ndarray], Any]) -> None:
        self.name = name
        self.fn = fn
        self.cpu = 0.0
        self.wall = 0.0
        self.lat: list[float] = []
        self.out: dict[int, np.ndarray] = {}
        self.last = np.zeros((0, 5), np.float32)
        self.processed = 0

    def step(self, i: int, img: np.ndarray) -> None:
        c0, w0 = cpu_s(), time.perf_counter()
        r = self.fn(i, i / FPS, img)
        w1, c1 = time.perf_counter(), cpu_s()
        self.cpu += c1 - c0
        self.wall += w1 - w0
        if r is not None:
            self.lat.append((w1 - w0) * 1000)
            self.last = r
            self.processed += 1
        self.out[i] = self.last


def main() -> int:
    ap = argparse.ArgumentParser(description="PETS09 person detector benchmark")
    ap.add_argument("--frames", type=int, default=795)
    ap.add_argument("--no-int8-baseline", action="store_true")
    args = ap.parse_args()
    if not (DATA / "vtest.avi").is_file():
        print(f"detect bench: skipped, {DATA} not found (the shared/ data folder)")
        return 0
    try:
        os.sched_setaffinity(0, {0})
        core = "CPU 0 (sched_setaffinity)"
    except (AttributeError, OSError) as e:
        core = f"not pinned ({e})"

    gt = load_gt(DATA / "gt.txt")
    cap = cv2.VideoCapture(str(DATA / "vtest.avi"))
    frames: list[np.ndarray] = []
    while len(frames) < args.frames:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    n = len(frames)

    ours_cfg = DetectorConfig.model_validate({**OURS, "threads": 1})
    ours = DetectionPipeline(ours_cfg)
    runs = [Run("ours", ours.process), Run("baseline", Baseline(SSD_FP32).process)]
    if not args.no_int8_baseline:
        runs.append(Run("baseline-int8", Baseline(ours_cfg.model).process))
    print(f"detect bench: {n} frames of PETS09-S2L1, one core: {core}, intra-op threads 1")
    print(f"  ours: model {ours_cfg.model.name}, config {OURS} (tuned on frames 0-399 only)")
    print(f"  baseline: {SSD_FP32.name}, whole frame + 2x2 tiles (20 % overlap) every frame, "
          "NMS 0.45, score 0.4")
    for i, img in enumerate(frames):  # interleaved: host noise hits every pipeline alike
        for r in runs:
            r.step(i, img)

    video_s = n / FPS
    splits = [("report 400-794", range(400, min(795, n))), ("whole 0-794", range(0, n)),
              ("dev 0-399 (tuning split)", range(0, min(400, n)))]
    print()
    print(f"{'pipeline':14s} {'split':26s} {'recall':>7s} {'precision':>9s} {'TP':>5s} "
          f"{'FP':>5s} {'FN':>5s}")
    for r in runs:
        for label, rng in splits:
            if len(rng) == 0:
                continue
            c = evaluate(r.out, gt, rng)
            print(f"{r.name:14s} {label:26s} {c.recall:7.3f} {c.precision:9.3f} {c.tp:5d} "
                  f"{c.fp:5d} {c.fn:5d}")
    print()
    print(f"{'pipeline':14s} {'p50 ms':>7s} {'p95 ms':>7s} {'CPU s/video s':>13s} "
          f"{'fps 1 core':>10s} {'processed':>9s}")
    for r in runs:
        lat = np.asarray(r.lat)
        print(f"{r.name:14s} {np.percentile(lat, 50):7.1f} {np.percentile(lat, 95):7.1f} "
              f"{r.cpu / video_s:13.3f} {n / r.wall:10.1f} {r.processed:9d}")
    st = ours.stats
    print(f"ours: {st.inferences / max(1, st.frames_processed):.2f} inferences per processed "
          f"frame, {st.mean_inference_ms:.1f} ms each, {st.full_refreshes} full passes")
    base = runs[1]
    print(f"CPU ratio baseline / ours: {base.cpu / runs[0].cpu:.2f}x")
    if len(runs) > 2:
        print(f"CPU ratio baseline-int8 / ours: {runs[2].cpu / runs[0].cpu:.2f}x")
    rt = "yes" if n / runs[0].wall >= FPS else "no"
    print(f"real time on one core (10 fps source): ours {rt} ({n / runs[0].wall:.1f} fps), "
          f"baseline {n / base.wall:.1f} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
