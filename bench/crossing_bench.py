"""Crossing benchmarks: tracking quality on PETS09 and frame-to-warning latency.

1. MOTA / IDF1 of detector + tracker on frames 400-794 (the report split) and on the
   whole clip, scored by bench/mot_eval.py (written here, independent of the product).
2. Frame-to-warning latency on the simulated pole: the bundled clip, a zone, a plan
   that is red, the audio player on ALSA's null device; latency = frame handed to the
   crossing service -> aplay running, read from the `warning_played` events on MQTT.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mot_eval import evaluate, load_gt  # noqa: E402

from edge_controller.config import Config  # noqa: E402
from edge_controller.crossing.tracker import Tracker  # noqa: E402
from edge_controller.detect import DetectionPipeline  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"


def tracking() -> None:
    if not (DATA / "vtest.avi").is_file():
        print(f"tracking: skipped, no PETS09 data at {DATA}")
        return
    cfg = Config()
    pipe = DetectionPipeline(cfg.detector)
    tracker = Tracker()
    cap = cv2.VideoCapture(str(DATA / "vtest.avi"))
    hyp: dict[int, list[tuple[int, np.ndarray]]] = {}
    i = 0
    t0 = time.perf_counter()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        dets = pipe.process(i, i / 10, img)
        if dets is not None:
            tracks = tracker.update(i / 10, dets)
            hyp[i] = [(t.id, t.box[:4].copy()) for t in tracks]
        else:
            hyp[i] = hyp.get(i - 1, [])  # a skipped frame keeps the last tracks
        i += 1
    wall = time.perf_counter() - t0
    for name, first, last in (("frames 400-794", 400, 794), ("whole clip", 0, 794)):
        gt, ign = load_gt(DATA / "gt.txt", first, last)
        r = evaluate(gt, ign, hyp, range(first, last + 1))
        print(f"tracking, {name}: MOTA {r.mota:.3f}, IDF1 {r.idf1:.3f} "
              f"(FP {r.fp}, FN {r.fn}, ID switches {r.idsw}, GT boxes {r.gt})")
    print(f"detector + tracker: {i} frames in {wall:.1f} s ({i / wall:.1f} fps, 2 cores "
          f"shared, threads={cfg.detector.threads})")


def latency(seconds: float) -> None:
    import shutil

    from edge_controller.sim.broker import start_broker
    from edge_controller.sim.pole import SAMPLE_VIDEO, SimPole
    from hil_tests.capture import Capture
    from hil_tests.test_crossing import ZONE, _red_since

    if shutil.which("aplay") is None:
        print("latency: skipped, aplay (alsa-utils) not installed")
        return
    b = start_broker("auto")
    try:
        with tempfile.TemporaryDirectory() as d:
            pole = SimPole(Path(d), b.url, pole_id="bench-x", overrides={
                "camera": {"enabled": True, "source": f"file:{SAMPLE_VIDEO}", "on_end": "loop"},
                "zones": [{"name": "mid-road", "kind": "carriageway", "polygon": ZONE}],
                "signal": {"source": "plan", "plan": _red_since(30.0)},
                "crossing": {"enabled": True, "grace_s": 2.0},
                "audio": {"device": "null", "cooldown_s": 0.0,
                          "volume_schedule": [["00:00", 80]]},
            })
            pole.start()
            cap = Capture("127.0.0.1", b.port, "smartpole/v1/bench-x/events")
            try:
                time.sleep(seconds)
                lat = [m.json()["detail"]["latency_ms"] for m in cap.of_kind("events")
                       if m.json()["event"] == "warning_played"]
            finally:
                cap.close()
                pole.stop()
    finally:
        b.stop()
    if not lat:
        print("frame-to-warning latency: no warnings were played")
        return
    lat.sort()
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    print(f"frame-to-warning latency (frame at the crossing service -> aplay running), "
          f"n={len(lat)}: p50 {statistics.median(lat):.0f} ms, p95 {p95:.0f} ms, "
          f"max {lat[-1]:.0f} ms")


def main() -> None:
    tracking()
    latency(float(os.environ.get("BENCH_LATENCY_S", "40")))


if __name__ == "__main__":
    main()
