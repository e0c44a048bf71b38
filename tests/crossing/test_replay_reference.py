"""`polectl replay` against an independent reference on real video, on every model build.

The reference (reference_violations.py, which imports nothing from the product)
derives the expected violations from PETS09 ground truth, the zones and the
fixed-time plans of scenarios.py. The product runs its whole pipeline (detector,
tracker, rule) on the video, for the fp32 and the INT8 models (NanoDet-m, which looks
at every frame by default, and the SSDLite of the SSD pipeline) at 1 and 2 onnxruntime
threads: INT8 kernels differ per instruction set (AVX2, AVX-512 VNNI, ARM), so each
run moves detections a little, and the answer must hold in all of them.

Each (model, threads) build runs the detector once, on the `road` scenario, and saves
its boxes (`--save-detections`); the `crosswalks` scenario replays those boxes
(`--detections`), since the detector does not depend on zones or plans.

Floors, with margin across CPUs (measured on an AVX-512 VNNI Xeon, issue 12's note):
- `road`: recall >= 0.8 and at most 1 extra (measured 0.95 with no extra for every
  build; 0.95-1.00 with at most 1 under the perturbation);
- `crosswalks`: recall >= 0.8 and at most 1 extra (measured 0.966 with no extra for
  every build and under the perturbation; with SSDLite, which merges its walking
  pairs and trio, it was 0.83).
A violation matches an expected one within +-1.5 s of the entry time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_controller.detect.config import NANODET_FP32, SSD_FP32, SSD_INT8
from tests.crossing.reference_violations import entries, feet, inside
from tests.crossing.scenarios import SCENARIOS, Scenario
from tests.support import need

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"
TOLERANCE_S = 1.5
FLOORS = {"road": (0.8, 1), "crosswalks": (0.8, 1)}  # (recall, extras)
BUILDS = [("int8", 1), ("int8", 2), ("fp32", 1), ("fp32", 2)]


def _data() -> Path:
    if not (DATA / "vtest.avi").is_file():
        need(f"PETS09 data not found at {DATA}")
    return DATA


def config_text(s: Scenario, model: str = "int8", threads: int = 1) -> str:
    lines = ['[pole]', 'id = "replay-ref"', 'timezone = "UTC"', "",
             "[camera]", "enabled = true", 'source = "file:/dev/null"', ""]
    for name, poly in s.zones.items():
        pts = ", ".join(f"[{x}, {y}]" for x, y in poly)
        lines += ["[[zones]]", f'name = "{name}"', 'kind = "carriageway"',
                  f"polygon = [{pts}]", ""]
    path = SSD_FP32 if model == "fp32" else SSD_INT8
    lines += ["[signal]", 'source = "plan"', "", "[signal.plan]",
              *(f"{k} = {v}" for k, v in s.plan.items()), "",
              "[crossing]", "enabled = true", f"grace_s = {s.grace_s}", "",
              "[detector]", f'model = "{path}"', f"threads = {threads}", ""]
    if model == "fp32":  # NanoDet looks at every frame by default: its fp32 original too
        lines += ["[detector.nanodet]", f'model = "{NANODET_FP32}"', ""]
    return "\n".join(lines)


def match(expected: list[float], got: list[float]) -> tuple[int, int]:
    """(hits, extras): one-to-one, nearest first, within the tolerance."""
    pairs = sorted((abs(g - e), i, j) for i, e in enumerate(expected)
                   for j, g in enumerate(got) if abs(g - e) <= TOLERANCE_S)
    used_e: set[int] = set()
    used_g: set[int] = set()
    for _, i, j in pairs:
        if i not in used_e and j not in used_g:
            used_e.add(i)
            used_g.add(j)
    return len(used_e), len(got) - len(used_g)


def expected(s: Scenario, zone: str) -> list[float]:
    return [e.t for e in entries(str(_data() / "gt.txt"), s.zones[zone], grace_s=s.grace_s,
                                 **s.plan) if e.violation]


def score(s: Scenario, violations: list[tuple[float, str]]) -> tuple[int, int, int, list[str]]:
    hits = extras = total = 0
    report = []
    for name in s.zones:
        exp = expected(s, name)
        got = sorted(t for t, z in violations if z == name)
        h, x = match(exp, got)
        hits, extras, total = hits + h, extras + x, total + len(exp)
        report.append(f"{name}: expected {exp}, got {[round(g, 1) for g in got]}, "
                      f"hits {h}, extras {x}")
    return hits, extras, total, report


def _cmd(video: Path, cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "polectl.cli", "replay", str(video), "-c", str(cfg),
            "--events-out", str(out), "--json", *extra]


def _events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


_RUNS: dict[tuple[str, int], dict[str, Any]] = {}
_LOCK = threading.Lock()  # the background passes and the tests take turns on _RUNS
_PROCS: list[subprocess.Popen[str]] = []
_DIRS: list[Path] = []


def start_background() -> None:
    """Start every build's detector pass now, in the background (tests/crossing/conftest.py
    calls this once the session is collected and runs this module's tests last). The
    suite mostly waits (real-time video, brokers, deadlines): the passes, its longest CPU
    work, run meanwhile on one core. What fails here is run again, and reported, by the
    test that needs it."""
    tmp = Path(tempfile.mkdtemp(prefix="replay-ref-"))
    _DIRS.append(tmp)

    def work() -> None:
        # A failure (or a skip for want of data) here is left to the test, which runs
        # the missing pass again and reports it.
        with _LOCK, contextlib.suppress(BaseException):
            _detect_all(tmp, cores=max(1, (os.cpu_count() or 1) - 1), niceness=19)

    threading.Thread(target=work, name="replay-ref-detect", daemon=True).start()


def stop_background() -> None:
    for proc in _PROCS:
        if proc.poll() is None:
            proc.kill()
    for d in _DIRS:
        shutil.rmtree(d, ignore_errors=True)


def _detect_all(tmp: Path, cores: int | None = None, niceness: int = 0) -> None:
    """The first scenario of every build, i.e. every detector run, at once: builds run in
    parallel as long as their threads fit `cores` (all of the machine's by default: on 2
    cores the two 1-thread builds together, then each 2-thread one). In the background
    they run at the lowest priority (`niceness` 19), so that they take only the time the
    suite leaves idle and cannot delay a test that times something (a supervisor test's
    20 ms sleep once took 66 ms under them in CI)."""
    data = _data()
    first = next(iter(SCENARIOS.values()))
    cores = max(1, cores or os.cpu_count() or 1)
    pending = [b for b in BUILDS if b not in _RUNS]
    running: list[tuple[tuple[str, int], subprocess.Popen[str], Path]] = []
    failures = []
    while pending or running:
        while pending and (not running or sum(t for (_, t), _, _ in running)
                           + pending[0][1] <= cores):
            model, threads = pending.pop(0)
            d = tmp / f"{model}-{threads}"
            d.mkdir(parents=True, exist_ok=True)
            cfg = d / f"{first.name}.toml"
            cfg.write_text(config_text(first, model, threads))
            out = d / f"{first.name}.jsonl"
            cmd = _cmd(data / "vtest.avi", cfg, out, "--save-detections",
                       str(d / "detections.npz"))
            if niceness:
                cmd = ["nice", "-n", str(niceness), *cmd]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, cwd=ROOT)
            _PROCS.append(proc)
            running.append(((model, threads), proc, out))
        key, proc, out = running.pop(0)
        log, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            failures.append(f"{key}: {log}")
            continue
        _RUNS[key] = {"events": {first.name: _events(out)},
                      "detections": out.parent / "detections.npz"}
    assert not failures, failures


def build_run(model: str, threads: int, tmp: Path) -> dict[str, Any]:
    """Events per scenario for one build, plus its saved detections (cached per session).
    The other scenarios replay the first one's boxes (`--detections`)."""
    key = (model, threads)
    with _LOCK:
        if key not in _RUNS:
            _detect_all(tmp)
    run = _RUNS[key]
    d = Path(run["detections"]).parent
    for s in SCENARIOS.values():
        if s.name not in run["events"]:
            cfg = d / f"{s.name}.toml"
            cfg.write_text(config_text(s, model, threads))
            out = d / f"{s.name}.jsonl"
            r = subprocess.run(_cmd(_data() / "vtest.avi", cfg, out, "--detections",
                                    str(run["detections"])),
                               capture_output=True, text=True, cwd=ROOT, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            run["events"][s.name] = _events(out)
    return run


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay-ref")


def test_scenarios_have_the_hard_cases() -> None:
    gt = _data() / "gt.txt"
    tracks = feet(str(gt))
    road = SCENARIOS["road"]
    poly = road.zones["mid-road"]
    for onset in (5.0, 30.0, 55.0):  # people inside at red onset: not violators
        frame = int(onset * 10)
        assert any(frame in tr and inside(poly, *tr[frame]) for tr in tracks.values()), onset
    for s in SCENARIOS.values():
        es = [e for z in s.zones.values() for e in entries(str(gt), z, grace_s=s.grace_s,
                                                              **s.plan)]
        assert any(not e.red for e in es), "no crossing during green"
        assert sum(e.violation for e in es) >= 10
    xw = SCENARIOS["crosswalks"]
    es = [e for z in xw.zones.values()
          for e in entries(str(gt), z, grace_s=xw.grace_s, **xw.plan)]
    cycle = xw.red_s + xw.green_s
    near_grace = [e for e in es if e.red
                  and abs((e.t - xw.offset_s) % cycle - xw.grace_s) <= 0.5]
    assert len(near_grace) >= 4, "entries close to the grace boundary"
    v = sorted(e.t for e in es if e.violation)
    assert sum(1 for a, b in itertools.pairwise(v) if b - a <= 0.5) >= 3, "pairs"


# The first test runs the detector of every build over the whole clip (about 25 s a build
# on one free core; several times that on a loaded machine): a longer safety net.
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("model", "threads"), BUILDS, ids=[f"{m}-{t}t" for m, t in BUILDS])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_replay_finds_the_reference_violations(scenario: str, model: str, threads: int,
                                               runs_dir: Path) -> None:
    s = SCENARIOS[scenario]
    events = build_run(model, threads, runs_dir)["events"][scenario]
    for e in events:
        assert {"type", "t", "frame", "track_id", "zone"} <= e.keys()
    for e in events:
        if e["type"] == "violation":
            # Entered (interpolated) no later than confirmed, and never long before.
            assert 0 <= e["confirmed_t"] - e["t"] <= 3.0, e
            assert e["frame"] == round(e["confirmed_t"] * 10)
    got = [(e["t"], e["zone"]) for e in events if e["type"] == "violation"]
    hits, extras, total, report = score(s, got)
    print("\n".join(report))
    print(f"{scenario} {model} {threads}t: recall {hits / total:.3f} ({hits}/{total}), "
          f"extras {extras}")
    floor, max_extras = FLOORS[scenario]
    assert hits >= floor * total, report
    assert extras <= max_extras, report


def perturb(dets: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What another CPU's kernels do to detections, and more: boxes jittered by +-2 px,
    5 % of detections dropped, noise of 0.03 on the scores."""
    out = {}
    for k, d in dets.items():
        d = d[rng.random(len(d)) >= 0.05].astype(np.float64)
        d[:, :4] += rng.uniform(-2.0, 2.0, size=(len(d), 4))
        d[:, 4] = np.clip(d[:, 4] + rng.normal(0.0, 0.03, len(d)), 0.0, 1.0)
        out[k] = d
    return out


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_perturbed_detections_give_the_same_answer(scenario: str, runs_dir: Path) -> None:
    """The tracker and rule (in process) on jittered copies of the INT8 run's boxes stay
    within the same bar, for three seeds."""
    import cv2

    from edge_controller.config import parse
    from edge_controller.crossing.engine import CrossingEngine, zones_from_config

    s = SCENARIOS[scenario]
    with np.load(build_run("int8", 1, runs_dir)["detections"]) as z:
        dets = {k: z[k] for k in z.files}
    cfg = parse(tomllib.loads(config_text(s)), "replay-ref.toml")
    floor, max_extras = FLOORS[scenario]
    for seed in range(3):
        noisy = perturb(dets, np.random.default_rng(seed))
        engine = CrossingEngine(zones_from_config(cfg.zones), cfg.crossing, cfg.signal, "UTC")
        cap = cv2.VideoCapture(str(_data() / "vtest.avi"))
        got: list[tuple[float, str]] = []
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            d = noisy.get(f"f{i}")
            if d is not None:
                got += [(v.t, v.zone) for v in engine.step(i, i / 10, d, img).violations]
            i += 1
        cap.release()
        hits, extras, total, report = score(s, got)
        print(f"{scenario} seed {seed}: recall {hits / total:.3f} ({hits}/{total}), "
              f"extras {extras}")
        assert hits >= floor * total, report
        assert extras <= max_extras, report
