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
from edge_controller.crossing.tracker import Tracker, TrackerParams  # noqa: E402
from edge_controller.detect import DetectionPipeline, DetectorConfig  # noqa: E402
from edge_controller.detect.nanodet import NanoDetConfig  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"


BASELINE = TrackerParams(app_weight=0.0, reid_min_sim=2.0, reid_max_s=2.0, coast_decay=1.0)


def tracking() -> None:
    """MOTA/IDF1 for each detector (the SSD pipeline as before NanoDet, and the default),
    with the tracker before (IoU only: appearance, re-identification and coasting off, no
    image) and after (as shipped); then duplicate violations per person on the reference
    scenarios with the default detector."""
    if not (DATA / "vtest.avi").is_file():
        print(f"tracking: skipped, no PETS09 data at {DATA}")
        return
    ssd = Config().detector.model_copy(
        update={"nanodet": NanoDetConfig(enabled=False)})
    for label, det_cfg in (("SSD pipeline", ssd), ("NanoDet (default)", Config().detector)):
        print(f"detector: {label}")
        frames, dets = _track_eval(det_cfg)
    duplicates(frames, dets)


def _track_eval(det_cfg: DetectorConfig) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    pipe = DetectionPipeline(det_cfg)
    cap = cv2.VideoCapture(str(DATA / "vtest.avi"))
    frames: list[np.ndarray] = []
    dets: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        d = pipe.process(len(frames), len(frames) / 10, img)
        if d is not None:
            dets[len(frames)] = d
        frames.append(img)
    wall = time.perf_counter() - t0
    print(f"  {len(frames)} frames in {wall:.1f} s ({len(frames) / wall:.1f} fps, "
          f"threads={det_cfg.threads})")
    for label, params, use_image in (("before (IoU only)", BASELINE, False),
                                     ("after (as shipped)", TrackerParams(), True)):
        tracker = Tracker(params)
        hyp: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i, img in enumerate(frames):
            if i in dets:
                tracks = tracker.update(i / 10, dets[i], img if use_image else None)
                hyp[i] = [(t.id, t.box[:4].copy()) for t in tracks]
            else:
                hyp[i] = hyp.get(i - 1, [])  # a skipped frame keeps the last tracks
        for name, first, last in (("frames 400-794", 400, 794), ("whole clip", 0, 794)):
            gt, ign = load_gt(DATA / "gt.txt", first, last)
            r = evaluate(gt, ign, hyp, range(first, last + 1))
            print(f"  tracking {label}, {name}: MOTA {r.mota:.3f}, IDF1 {r.idf1:.3f} "
                  f"(FP {r.fp}, FN {r.fn}, ID switches {r.idsw}, GT boxes {r.gt})")
    return frames, dets


def duplicates(frames: list[np.ndarray], dets: dict[int, np.ndarray]) -> None:
    """Violations per ground-truth person: each violation is assigned to the GT person
    whose ground point is nearest its track's at the confirming frame; a person with
    more violations in one zone and red phase than the independent reference gives them
    (someone who really leaves and comes back violates again) has duplicates. Both
    counts are printed: more than one per person and phase, and more than the reference."""
    import tomllib

    from edge_controller.config import parse
    from edge_controller.crossing.engine import CrossingEngine, zones_from_config
    from tests.crossing.reference_violations import entries, feet
    from tests.crossing.scenarios import SCENARIOS
    from tests.crossing.test_replay_reference import config_text, score

    gt = feet(str(DATA / "gt.txt"))
    for s in SCENARIOS.values():
        cfg = parse(tomllib.loads(config_text(s)), "bench.toml")
        engine = CrossingEngine(zones_from_config(cfg.zones), cfg.crossing, cfg.signal, "UTC")
        got: list[tuple[float, str]] = []
        per_person: dict[tuple[int, str, float], int] = {}
        for i, img in enumerate(frames):
            if i not in dets:
                continue
            st = engine.step(i, i / 10, dets[i], img)
            for v in st.violations:
                got.append((v.t, v.zone))
                tr = next(t for t in st.tracks if t.id == v.track_id)
                fx, fy = tr.foot
                near = [(abs(x - fx) + abs(y - fy), pid) for pid, tk in gt.items()
                        if i in tk for x, y in [tk[i]]]
                if near:
                    pid = min(near)[1]
                    onset = v.t - v.red_for_s  # its red phase (it may be confirmed in green)
                    k = (pid, v.zone, round(onset, 1))
                    per_person[k] = per_person.get(k, 0) + 1
        hits, extras, total, _ = score(s, got)
        cycle = s.plan["red_s"] + s.plan["green_s"]
        ref: dict[tuple[int, str, int], int] = {}
        for zone, poly in s.zones.items():
            for e in entries(str(DATA / "gt.txt"), poly, grace_s=s.grace_s, **s.plan):
                if e.violation:
                    k = (e.person, zone, int((e.t - s.plan["offset_s"]) // cycle))
                    ref[k] = ref.get(k, 0) + 1
        ours = {}
        for (pid, zone, onset), n in per_person.items():
            k = (pid, zone, round((onset - s.plan["offset_s"]) / cycle))
            ours[k] = ours.get(k, 0) + n
        dup = sum(n - 1 for n in ours.values() if n > 1)
        beyond = sum(max(0, n - ref.get(k, 0)) for k, n in ours.items() if n > 1)
        print(f"violations, scenario {s.name}: recall {hits / total:.2f} ({hits}/{total}), "
              f"extras {extras}; people with more than one violation in a zone and red "
              f"phase: {dup} extra violations, of which {beyond} more than the reference "
              f"gives that person (duplicates)")


def latency(seconds: float) -> None:
    import shutil

    from polesim.broker import start_broker
    from polesim.pole import SAMPLE_VIDEO, SimPole

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
