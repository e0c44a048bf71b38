"""Seeing in fog, at night and in greyscale: today's pipeline and the enhanced one, per condition.

Prints a table, asserts nothing (`make bench` runs it).

- Data: ../shared/data/pets09-s2l1 (vtest.avi, gt.txt). Degraded copies come from the
  independent generator tests/conditions/degrade.py (its camera and numbers are in its
  docstring; it imports nothing from the product), one seed per frame.
- Split: every threshold and enhancement knob was tuned on frames 0-399; detection
  recall/precision (IoU 0.5, `considered` boxes) are reported on frames 400-794.
- Violations: the reference scenario of tests/crossing/test_replay_reference.py (two
  zones, plan 15 s red / 10 s green, grace 2 s) over the whole clip (it needs the
  people's entries across all of it), the CrossingEngine run on each pipeline's
  detections, matched to the independent reference within +-1.5 s.
- Pipelines, in the same run, frame by frame interleaved, on one core
  (sched_setaffinity to CPU 0), onnxruntime intra-op threads 1:
    before  the shipped pipeline as it was: no enhancement, fixed motion threshold, no
            sight checks, the SSD pipeline only (`enhance.enabled = false`,
            `motion.noise_k = 0`, `nanodet.enabled = false`);
    after   the defaults now (enhancement, noise-robust motion gate, sight checks,
            NanoDet-m on every frame).
- CPU: getrusage user+system around each pipeline's calls (the generator is not
  counted), CPU seconds per second of video (10 fps); the ratio of each condition's
  CPU to the clear-weather CPU of the same pipeline, same run.

    .venv/bin/python bench/conditions_bench.py [--conditions clear,fog120,...] [--no-violations]
    .venv/bin/python bench/conditions_bench.py --pictures docs/seeing  # the docs' pictures

`--pictures DIR` writes, per condition, one small PNG: the degraded frame 600 (left) and
what the detector sees after enhancement (right), with the detections of the enhanced
pipeline drawn; both anonymised with the product's `privacy.anonymise` (the frame
coarsened, every ground-truth and detected person blurred).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from detect_eval import evaluate, load_gt  # noqa: E402

from edge_controller.crossing.config import CrossingConfig, PlanConfig, SignalConfig  # noqa: E402
from edge_controller.crossing.engine import CrossingEngine  # noqa: E402
from edge_controller.crossing.privacy import anonymise  # noqa: E402
from edge_controller.crossing.zones import Zone  # noqa: E402
from edge_controller.detect import DetectionPipeline, DetectorConfig  # noqa: E402
from tests.conditions import degrade  # noqa: E402
from tests.crossing.reference_violations import entries  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"
FPS = 10.0
REPORT = range(400, 795)
CONDITIONS = ["clear", "fog300", "fog120", "fog60", "night10", "night15", "night20", "night30",
              "night-gain20", "grey", "ir", "rain", "glare"]
VIOLATIONS = {"clear", "fog120", "night20", "night30"}
# The reference scenario of tests/crossing/test_replay_reference.py.
ZONES = {
    "mid-road": [(300, 190), (560, 175), (640, 300), (600, 420), (420, 330), (300, 290)],
    "road-band": [(250, 195), (500, 180), (700, 170), (768, 300), (768, 420), (650, 420),
                  (400, 330), (250, 290)],
}
PLAN = {"red_s": 15.0, "green_s": 10.0, "offset_s": 5.0}
GRACE_S = 2.0
TOLERANCE_S = 1.5
BEFORE: dict[str, Any] = {"enhance": {"enabled": False}, "motion": {"noise_k": 0},
                          "sight": {"enabled": False}, "nanodet": {"enabled": False}}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def match(expected: list[float], got: list[float]) -> tuple[int, int]:
    pairs = sorted((abs(g - e), i, j) for i, e in enumerate(expected)
                   for j, g in enumerate(got) if abs(g - e) <= TOLERANCE_S)
    ue: set[int] = set()
    ug: set[int] = set()
    for _, i, j in pairs:
        if i not in ue and j not in ug:
            ue.add(i)
            ug.add(j)
    return len(ue), len(got) - len(ug)


class Run:
    def __init__(self, name: str, cfg: DetectorConfig, violations: bool) -> None:
        self.name = name
        self.pipe = DetectionPipeline(cfg)
        zones = [Zone(n, "carriageway", tuple(p)) for n, p in ZONES.items()]
        self.engine = (CrossingEngine(zones, CrossingConfig(grace_s=GRACE_S),
                                      SignalConfig(source="plan", plan=PlanConfig(**PLAN)))
                       if violations else None)
        self.cpu = 0.0
        self.out: dict[int, np.ndarray] = {}
        self.last = np.zeros((0, 5), np.float32)
        self.violations: dict[str, list[float]] = {n: [] for n in ZONES}
        self.degraded = 0

    def step(self, i: int, img: np.ndarray) -> None:
        c0 = cpu_s()
        r = self.pipe.process(i, i / FPS, img)
        self.cpu += cpu_s() - c0
        if r is not None:
            self.last = r
            if self.engine is not None:
                st = self.engine.step(i, i / FPS, r)
                for v in st.violations:
                    self.violations[v.zone].append(i / FPS)
        if not self.pipe.sight.state.ok:
            self.degraded += 1
        self.out[i] = self.last


PICTURE_FRAME = 600
PICTURE_WARMUP = 40  # frames the pipeline runs first (10 fps), for its temporal state
PICTURE_WIDTH = 256  # each half
PICTURE_LEVELS = 16  # grey levels per channel: a small PNG


def pictures(frames: list[np.ndarray], gt: dict[int, Any], conds: list[str],
             folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for cond in conds:
        pipe = DetectionPipeline(DetectorConfig())
        boxes = np.zeros((0, 5), np.float32)
        img = frames[PICTURE_FRAME]
        for i in range(PICTURE_FRAME - PICTURE_WARMUP, PICTURE_FRAME + 1):
            img = degrade.make(cond, frames[i], np.random.default_rng(1000 + i))
            r = pipe.process(i, i / FPS, img)
            if r is not None:
                boxes = r
        seen = pipe.enhancer.apply(img) if pipe.enhancer.mode != "clear" else img
        people = np.concatenate([np.asarray(gt[PICTURE_FRAME][0], np.float64).reshape(-1, 4),
                                 np.asarray(gt[PICTURE_FRAME][1], np.float64).reshape(-1, 4),
                                 boxes[:, :4].astype(np.float64)])
        halves = []
        for k, im in enumerate((img, seen)):
            a = anonymise(im, people)
            if k == 1:
                for b in boxes:
                    cv2.rectangle(a, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])),
                                  (0, 255, 0), 2)
            h = round(a.shape[0] * PICTURE_WIDTH / a.shape[1])
            halves.append(cv2.resize(a, (PICTURE_WIDTH, h), interpolation=cv2.INTER_AREA))
        out = folder / f"{cond}.png"
        step = 256 // PICTURE_LEVELS
        small = (np.hstack(halves) // step * step + step // 2).astype(np.uint8)
        cv2.imwrite(str(out), small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"  {out} ({out.stat().st_size // 1024} KB, mode {pipe.enhancer.mode}, "
              f"{len(boxes)} detections)")


def main() -> int:
    ap = argparse.ArgumentParser(description="detection per visibility condition")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--no-violations", action="store_true")
    ap.add_argument("--pictures", type=Path, default=None,
                    help="write before/after pictures per condition to this folder and stop")
    args = ap.parse_args()
    if not (DATA / "vtest.avi").is_file():
        print(f"conditions bench: skipped, {DATA} not found (the shared/ data folder)")
        return 0
    try:
        os.sched_setaffinity(0, {0})
        core = "CPU 0 (sched_setaffinity)"
    except (AttributeError, OSError) as e:
        core = f"not pinned ({e})"
    model = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"],
                           capture_output=True, text=True).stdout.strip() or "unknown CPU"
    with open("/proc/cpuinfo") as f:
        vnni = "avx512_vnni" in f.read()
    gt = load_gt(DATA / "gt.txt")
    cap = cv2.VideoCapture(str(DATA / "vtest.avi"))
    frames: list[np.ndarray] = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    conds = [c for c in args.conditions.split(",") if c]
    if args.pictures is not None:
        pictures(frames, gt, conds, args.pictures)
        return 0
    print(f"conditions bench: PETS09-S2L1 {len(frames)} frames, {model}, AVX-512 VNNI "
          f"{'yes' if vnni else 'no'}, one core: {core}, intra-op threads 1")
    print("  detection on frames 400-794 (tuned on 0-399); violations over the whole clip, "
          "reference scenario of tests/crossing/test_replay_reference.py")
    expected = {n: [e.t for e in entries(str(DATA / "gt.txt"), p, grace_s=GRACE_S, **PLAN)
                    if e.violation] for n, p in ZONES.items()}
    total = sum(len(v) for v in expected.values())
    rows = []
    clear_cpu: dict[str, float] = {}
    for cond in conds:
        viol = cond in VIOLATIONS and not args.no_violations
        rng_frames = range(len(frames)) if viol else range(REPORT.start, len(frames))
        runs = [Run("before", DetectorConfig.model_validate(BEFORE), viol),
                Run("after", DetectorConfig(), viol)]
        for i in rng_frames:
            img = degrade.make(cond, frames[i], np.random.default_rng(1000 + i))
            for r in runs:  # interleaved: host noise hits both alike
                r.step(i, img)
        video_s = len(rng_frames) / FPS
        for r in runs:
            c = evaluate(r.out, gt, range(REPORT.start, len(frames)))
            cps = r.cpu / video_s
            if cond == "clear":
                clear_cpu[r.name] = cps
            v = "-"
            if viol:
                hits = extras = 0
                for n in ZONES:
                    h, x = match(expected[n], r.violations[n])
                    hits, extras = hits + h, extras + x
                v = f"{hits}/{total} +{extras}"
            ratio = cps / clear_cpu[r.name] if r.name in clear_cpu else float("nan")
            rows.append((cond, r.name, c.recall, c.precision, cps, ratio, v,
                         r.degraded / len(rng_frames)))
            print(f"  {cond:13s} {r.name:6s} R {c.recall:.3f} P {c.precision:.3f} "
                  f"CPU {cps:.3f} s/s ({ratio:.2f}x clear) violations {v} "
                  f"degraded {r.degraded / len(rng_frames):.0%}", flush=True)
    print()
    print("| condition | pipeline | recall | precision | CPU s / video s | x clear | "
          "violations (hits/expected +extras) | reported degraded |")
    print("|---|---|---|---|---|---|---|---|")
    for cond, name, rec, prec, cps, ratio, v, deg in rows:
        print(f"| {cond} | {name} | {rec:.3f} | {prec:.3f} | {cps:.3f} | {ratio:.2f} | {v} "
              f"| {deg:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
