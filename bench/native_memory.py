"""Native memory of the detection pipeline alone: a fast, isolated reproduction of the
controller's RSS creep (issue 22, docs/operations.md "Native memory").

Runs the shipped `DetectionPipeline` (with the demo zone, as `make run` configures it)
and the crossing `Tracker` over the bundled clip's frames in a loop, each frame on a
worker of a thread pool as the controller does (`asyncio.to_thread`: the default
executor, cores + 4 threads, so a frame may land on any of them). Every `--sample`
frames it reads RSS (/proc/self/status) and PSS (/proc/self/smaps_rollup); after
`--warmup` frames it fits a straight line and prints the slope in MB per 1,000 frames.

Variants, one per run (compare them on the same machine, one after another):

    --variant shipped      as shipped
    --variant no-arena     onnxruntime SessionOptions.enable_cpu_mem_arena = False
    --variant no-pattern   onnxruntime SessionOptions.enable_mem_pattern = False
    --variant trim         glibc malloc_trim(0) every --trim-every frames
    --variant arena2       MALLOC_ARENA_MAX=2 (set in the environment, then re-exec)
    --variant arena2-trim  MALLOC_ARENA_MAX=2 and malloc_trim(0) every --trim-every frames

    .venv/bin/python bench/native_memory.py --variant shipped --frames 8000
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

VARIANTS = ("shipped", "no-arena", "no-pattern", "trim", "arena2", "arena2-trim")


def memory_mb() -> tuple[float, float]:
    """(RSS, PSS) of this process in MB."""
    rss = pss = float("nan")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    return rss, pss


def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y over x and its standard error."""
    if len(x) < 3:
        return float("nan"), float("nan")
    a = np.vstack([x, np.ones_like(x)]).T
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    s2 = float(resid @ resid) / max(len(x) - 2, 1)
    return float(coef[0]), (s2 / float(((x - x.mean()) ** 2).sum())) ** 0.5


def patch_session_options(**opts: Any) -> None:
    """Every onnxruntime session made from now on gets these SessionOptions."""
    import onnxruntime as ort

    make = ort.InferenceSession

    def patched(*a: Any, **kw: Any) -> Any:
        so = kw.get("sess_options") or ort.SessionOptions()
        for k, v in opts.items():
            setattr(so, k, v)
        kw["sess_options"] = so
        return make(*a, **kw)

    ort.InferenceSession = patched


def frames_from(kind: str, video: Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, t, image) for ever: the clip looped."""
    import cv2

    from edge_controller.camera.source import CaptureThread, FrameQueue, SourceSpec

    if kind == "preloaded":
        cap = cv2.VideoCapture(str(video))
        frames: list[np.ndarray] = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img)
        cap.release()
        i = 0
        while True:
            yield i, i / 10.0, frames[i % len(frames)]
            i += 1
    spec = SourceSpec.parse(f"file:{video}")
    while True:
        queue = FrameQueue(4)
        thread = CaptureThread(spec, queue, realtime=False)
        thread.start()
        try:
            while (f := queue.get()) is not None:
                yield f.index, f.t, f.image
        finally:  # also when the caller closes the generator: no thread left in OpenCV
            thread.halt()
            thread.join()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=VARIANTS, default="shipped")
    p.add_argument("--frames", type=int, default=8000)
    p.add_argument("--warmup", type=int, default=2000, help="frames before the fit")
    p.add_argument("--sample", type=int, default=500, help="frames between samples")
    p.add_argument("--trim-every", type=int, default=500, help="frames between malloc_trim")
    p.add_argument("--workers", type=int, default=min(32, (os.cpu_count() or 1) + 4),
                   help="thread pool size (the controller: asyncio's default executor)")
    p.add_argument("--no-tracker", action="store_true")
    p.add_argument("--source", choices=("capture", "preloaded"), default="capture",
                   help="capture: the product's CaptureThread reads the clip, a new thread and "
                   "a new cv2.VideoCapture each time round, as the controller's camera task "
                   "does with on_end = 'loop'; preloaded: the clip's frames decoded once")
    p.add_argument("--no-detect", action="store_true",
                   help="only read frames (with --source capture: the camera's share alone)")
    args = p.parse_args()

    if args.variant.startswith("arena2") and os.environ.get("MALLOC_ARENA_MAX") != "2":
        os.environ["MALLOC_ARENA_MAX"] = "2"
        os.execv(sys.executable, [sys.executable, *sys.argv])  # glibc reads it at start

    from polesim.pole import DEMO_ZONE, SAMPLE_VIDEO

    from edge_controller.crossing.tracker import Tracker
    from edge_controller.detect import DetectionPipeline, DetectorConfig

    if args.variant == "no-arena":
        patch_session_options(enable_cpu_mem_arena=False)
    elif args.variant == "no-pattern":
        patch_session_options(enable_mem_pattern=False)
    trim = None
    if args.variant.endswith("trim"):
        trim = ctypes.CDLL("libc.so.6").malloc_trim
        trim.argtypes = [ctypes.c_size_t]

    source = frames_from(args.source, SAMPLE_VIDEO)
    pipe = DetectionPipeline(DetectorConfig(), zones=[DEMO_ZONE])
    tracker = None if args.no_tracker else Tracker()
    pool = ThreadPoolExecutor(max_workers=args.workers)
    xs: list[int] = []
    rss: list[float] = []
    pss: list[float] = []
    t0 = time.perf_counter()
    print(f"native memory: variant {args.variant}, {args.frames} frames of {SAMPLE_VIDEO.name} "
          f"(looped, source {args.source}, detect {not args.no_detect}), {args.workers} "
          f"workers, tracker "
          f"{'off' if tracker is None else 'on'}, MALLOC_ARENA_MAX="
          f"{os.environ.get('MALLOC_ARENA_MAX', '-')}", flush=True)
    for i in range(args.frames + 1):
        if i % args.sample == 0:
            r, s = memory_mb()
            xs.append(i)
            rss.append(r)
            pss.append(s)
            print(f"  frame {i:6d}: rss {r:7.1f} MB, pss {s:7.1f} MB, "
                  f"{time.perf_counter() - t0:6.0f} s", flush=True)
        if i == args.frames:
            break
        index, t, img = next(source)
        if args.no_detect:
            continue
        dets = pool.submit(pipe.process, index, t, img).result()
        if tracker is not None and dets is not None:
            tracker.update(t, np.asarray(dets, np.float64), img)
        if trim is not None and (i + 1) % args.trim_every == 0:
            trim(0)
    pool.shutdown()
    source.close()
    x = np.asarray(xs, dtype=float) / 1000
    keep = np.asarray(xs) >= args.warmup
    half = np.asarray(xs) >= (args.warmup + args.frames) / 2
    out = [f"RESULT variant={args.variant} frames={args.frames} warmup={args.warmup}"]
    for name, y in (("rss", np.asarray(rss)), ("pss", np.asarray(pss))):
        sl, se = fit(x[keep], y[keep])
        sl2, se2 = fit(x[half], y[half])
        out.append(f"{name} {y[keep][0]:.1f}->{y[-1]:.1f} MB slope {sl:+.3f}+-{se:.3f} "
                   f"MB/1000fr (2nd half {sl2:+.3f}+-{se2:.3f})")
    print(" | ".join(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
