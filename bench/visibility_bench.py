"""Visibility and dimming figures: estimator error per MOR band (day and night) on
PETS09 frames fogged by the test generator, cost per analysed frame, and the
firmware's fail-safe reaction time on the simulated board. Prints; asserts nothing.

    .venv/bin/python bench/visibility_bench.py [--quick]

Fog is put on the report split (frames 400-794); references are learnt from the
development split (0-399). Each MOR is run with the calibration 10 % short, exact
and 10 % long (camera height), several seeds, 6 analysed frames each (the
reported value is the smoothed one after the 6th).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_controller.visibility.config import CalibrationConfig, VisibilityConfig  # noqa: E402
from edge_controller.visibility.estimator import VisibilityEstimator, band_of  # noqa: E402
from tests.visibility import foggen as fg  # noqa: E402

PETS = ROOT.parent / "shared" / "data" / "pets09-s2l1"
LAMP_H = 8.0
REF = tuple(range(0, 400, 40))
REPORT = tuple(range(405, 795, 13))
BANDS = {
    "<50": (25, 40),
    "50-200": (60, 100, 150),
    "200-1000": (250, 400, 600, 850),
    ">=1000": (1500, 3000, None),
}


def load() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], fg.Camera]:
    import cv2

    want = set(REF) | set(REPORT)
    cap = cv2.VideoCapture(str(PETS / "vtest.avi"))
    frames = {}
    for i in range(max(want) + 1):
        if i in want:
            _ok, img = cap.read()
            frames[i] = img
        else:
            cap.grab()
    cap.release()
    rows = np.loadtxt(PETS / "gt.txt", delimiter=",", ndmin=2)
    boxes = {}
    for f in want:
        r = rows[rows[:, 0] == f + 1]
        boxes[f] = np.stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]], axis=1)
    return frames, boxes, fg.fit_camera(PETS / "gt.txt")


def day_shot(lin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return fg.sensor(lin, rng, gain=rng.uniform(0.85, 1.15),
                     jpeg_quality=int(rng.integers(70, 90)))


def night_shot(lin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain = 0.8 / max(float(np.percentile(lin, 99.5)), 1e-6)
    return fg.sensor(lin * gain, rng, read_noise=0.008, shot=0.004, jpeg_quality=75)


def estimator(cam: fg.Camera, err: float) -> VisibilityEstimator:
    cal = CalibrationConfig(mounting_height_m=cam.height_m * err, tilt_deg=cam.tilt_deg,
                            vfov_deg=cam.vfov_deg, roll_deg=cam.roll_deg,
                            lamp_height_m=LAMP_H * err)
    return VisibilityEstimator(VisibilityConfig(enabled=True, calibration=cal,
                                                reference_gap_s=0.0))


def band_table(night: bool, frames: dict[int, np.ndarray], boxes: dict[int, np.ndarray],
               cam: fg.Camera, seeds: int) -> None:
    depth = fg.depth_map(cam, (576, 768))
    scene = fg.NightScene(LAMP_H)
    regime = "night@100" if night else "day"
    learnt = {}
    for err in (0.9, 1.0, 1.1):
        est = estimator(cam, err)
        rng = np.random.default_rng(0)
        for k, i in enumerate(REF):
            lin = fg.srgb_to_linear(frames[i])
            img = night_shot(fg.night(lin, cam, scene), rng) if night else day_shot(lin, rng)
            est.observe(img, 5.0 * k, regime, boxes[i])
        learnt[err] = est
    print(f"\n{'night (lamp on the pole, 8 m)' if night else 'day'}: "
          f"{seeds} seeds x 3 calibrations per MOR")
    print(f"  {'band':<9} {'MOR m':>6} {'median err':>11} {'worst err':>10} "
          f"{'band right':>11} {'conf p50':>9} {'mor null':>9}")
    for band, mors in BANDS.items():
        errs_band: list[float] = []
        for mor in mors:
            errs, right, conf, null = [], 0, [], 0
            n = 0
            for err, base in learnt.items():
                for s in range(seeds):
                    est = copy.deepcopy(base)
                    est.forget()
                    rng = np.random.default_rng(1000 * s + int(err * 10) + (mor or 0))
                    picks = rng.choice(REPORT, size=6, replace=False)
                    for k, i in enumerate(picks):
                        lin = fg.srgb_to_linear(frames[int(i)])
                        if night:
                            img = night_shot(fg.night(lin, cam, scene, 1.0, mor_m=mor,
                                                      rng=rng), rng)
                        else:
                            img = day_shot(lin if mor is None else
                                           fg.fog(lin, depth, mor, rng), rng)
                        rd = est.observe(img, 1000.0 + 5 * k, regime, boxes[int(i)])
                    n += 1
                    truth = band_of(mor) if mor is not None else ">=1000"
                    right += rd.band == truth
                    conf.append(rd.confidence)
                    if rd.mor_m is None:
                        null += 1
                    elif mor is not None:
                        errs.append(100.0 * (rd.mor_m - mor) / mor)
            errs_band += [abs(e) for e in errs]
            med = f"{statistics.median([abs(e) for e in errs]):.1f} %" if errs else "-"
            worst = f"{max(errs, key=abs):+.1f} %" if errs else "-"
            print(f"  {band:<9} {mor if mor is not None else 'clear':>6} {med:>11} "
                  f"{worst:>10} {right:>5}/{n:<5} {statistics.median(conf):>9.2f} "
                  f"{null:>5}/{n:<3}")
        if errs_band:
            print(f"  {band:<9} {'all':>6} {statistics.median(errs_band):>9.1f} % "
                  f"{max(errs_band):>8.1f} % (absolute)")


def cost(frames: dict[int, np.ndarray], cam: fg.Camera) -> None:
    print("\ncost per analysed frame (768x576 in, fog on, after the reference):")
    depth = fg.depth_map(cam, (576, 768))
    rng = np.random.default_rng(3)
    imgs = [day_shot(fg.fog(fg.srgb_to_linear(frames[i]), depth, 300, rng), rng)
            for i in REPORT[:20]]
    for width in (256, 384, 512):
        base = estimator(cam, 1.0)
        base.cfg = base.cfg.model_copy(update={"analysis_width": width})
        for k, i in enumerate(REF):
            base.observe(frames[i], 5.0 * k, "day")
        cpu, wall = [], []
        for rep in range(3):
            for k, img in enumerate(imgs):
                c0, w0 = time.process_time(), time.perf_counter()
                base.observe(img, 2000.0 + 100 * rep + k, "day")
                cpu.append((time.process_time() - c0) * 1000)
                wall.append((time.perf_counter() - w0) * 1000)
        print(f"  analysis_width {width}: {statistics.median(cpu):.1f} ms CPU "
              f"(p95 {sorted(cpu)[int(0.95 * len(cpu))]:.1f}), "
              f"{statistics.median(wall):.1f} ms wall; one frame every 5 s = "
              f"{statistics.median(cpu) / 50:.2f} % of a core")


def failsafe(trials: int) -> None:
    """The board's reaction to a silent controller: time from the last valid frame
    to fail-safe (lamp_state failsafe=1 on the panel), against failsafe_timeout_ms."""
    from polesim.firmware import SimFirmware
    from polesim.wire import PtyWire

    from tests.firmware.linkctl import Ctl

    with tempfile.TemporaryDirectory() as d:
        build = Path(d) / "fw"
        subprocess.run([sys.executable, str(ROOT / "firmware" / "build.py"), "--out",
                        str(build)], check=True, capture_output=True)
        settings = Path(d) / "settings.json"
        timeout_ms = 2000
        settings.write_text(json.dumps({"failsafe_timeout_ms": timeout_ms,
                                        "failsafe_fade_ms": 0}))
        late = []
        with PtyWire() as wire:
            ctl = Ctl(wire.ctl_path)
            fw = SimFirmware(wire.fw_path, build, settings_path=settings)
            fw.start()
            try:
                fw.panel.set(lux=1.0)
                for _ in range(trials):
                    for _ in range(5):  # alive: heartbeats every 100 ms
                        ctl.send("heartbeat", (1,))
                        ctl.pump(0.1)
                    ctl.send("heartbeat", (1,))
                    t_last = time.monotonic()
                    while not fw.panel.get()["lamp"]["failsafe"]:
                        time.sleep(0.005)
                    late.append((time.monotonic() - t_last) * 1000 - timeout_ms)
                    ctl.send("heartbeat", (1,))  # back
                    ctl.pump(0.2)
            finally:
                fw.stop()
                ctl.close()
    late.sort()
    print(f"\nfail-safe reaction (sim board, failsafe_timeout_ms {timeout_ms}, {trials} runs): "
          f"after the last controller frame + timeout: p50 {statistics.median(late):+.0f} ms, "
          f"max {late[-1]:+.0f} ms (tick 20 ms, lux poll 100 ms, panel poll 5 ms). "
          f"From a cable cut with the controller's 1 s heartbeat: timeout - 1 s .. timeout "
          f"+ {late[-1]:.0f} ms.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed per case")
    args = ap.parse_args()
    if (PETS / "vtest.avi").is_file():
        frames, boxes, cam = load()
        seeds = 1 if args.quick else 3
        band_table(False, frames, boxes, cam, seeds)
        band_table(True, frames, boxes, cam, seeds)
        cost(frames, cam)
    else:
        print(f"PETS09 data not found at {PETS}: no estimator figures")
    failsafe(5 if args.quick else 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
