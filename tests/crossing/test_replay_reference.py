"""`polectl replay` against an independent reference on real video.

The reference (reference_violations.py, which imports nothing from the product)
derives the expected violations from PETS09 ground truth, two zones and a
fixed-time plan chosen here. The product runs its whole pipeline (detector,
tracker, rule) on the video; it must find at least 90 % of the expected
violations within +-1.5 s and report at most one that is not among them.

The scenario has people inside a zone at red onset (t = 5, 30, 55 s) and
crossings during green; both must produce no violation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crossing.reference_violations import entries, feet, inside

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"
ZONES = {
    # The middle of the road, and the wider road band further right.
    "mid-road": [(300, 190), (560, 175), (640, 300), (600, 420), (420, 330), (300, 290)],
    "road-band": [(250, 195), (500, 180), (700, 170), (768, 300), (768, 420), (650, 420),
                  (400, 330), (250, 290)],
}
PLAN = {"red_s": 15.0, "green_s": 10.0, "offset_s": 5.0}
GRACE_S = 2.0
TOLERANCE_S = 1.5


def _data() -> Path:
    if not (DATA / "vtest.avi").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must not skip: {DATA} is missing")
        pytest.skip(f"PETS09 data not found at {DATA}")
    return DATA


def _config(tmp: Path) -> Path:
    lines = ['[pole]', 'id = "replay-ref"', 'timezone = "UTC"', "",
             "[camera]", "enabled = true", 'source = "file:/dev/null"', ""]
    for name, poly in ZONES.items():
        pts = ", ".join(f"[{x}, {y}]" for x, y in poly)
        lines += ["[[zones]]", f'name = "{name}"', 'kind = "carriageway"',
                  f"polygon = [{pts}]", ""]
    lines += ["[signal]", 'source = "plan"', "", "[signal.plan]",
              *(f"{k} = {v}" for k, v in PLAN.items()), "",
              "[crossing]", "enabled = true", f"grace_s = {GRACE_S}", ""]
    p = tmp / "pole.toml"
    p.write_text("\n".join(lines))
    return p


def _match(expected: list[float], got: list[float]) -> tuple[int, int]:
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


def test_scenario_has_the_hard_cases() -> None:
    gt = _data() / "gt.txt"
    tracks = feet(str(gt))
    poly = ZONES["mid-road"]
    for onset in (5.0, 30.0, 55.0):
        frame = int(onset * 10)
        assert any(frame in tr and inside(poly, *tr[frame]) for tr in tracks.values()), onset
    es = [e for z in ZONES.values() for e in entries(str(gt), z, grace_s=GRACE_S, **PLAN)]
    assert any(not e.red for e in es), "no crossing during green"
    assert sum(e.violation for e in es) >= 10


def test_replay_finds_the_reference_violations(tmp_path: Path) -> None:
    data = _data()
    cfg = _config(tmp_path)
    out = tmp_path / "events.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "polectl.cli", "replay", str(data / "vtest.avi"), "-c", str(cfg),
         "--events-out", str(out), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    for e in events:
        assert {"type", "t", "frame", "track_id", "zone"} <= e.keys()
        assert e["frame"] == round(e["t"] * 10)
    hits = extras = total = 0
    report = []
    for name, poly in ZONES.items():
        expected = [e.t for e in entries(str(data / "gt.txt"), poly, grace_s=GRACE_S, **PLAN)
                    if e.violation]
        got = [e["t"] for e in events if e["type"] == "violation" and e["zone"] == name]
        h, x = _match(expected, got)
        hits, extras, total = hits + h, extras + x, total + len(expected)
        report.append(f"{name}: expected {expected}, got {got}, hits {h}, extras {x}")
    print("\n".join(report))
    print(f"reference recall {hits / total:.3f} ({hits}/{total}), extras {extras}")
    assert hits >= 0.9 * total, report
    assert extras <= 1, report
