"""Expected red-light violations derived from ground truth alone (test-only reference).

Imports nothing from the product. From MOTChallenge ground truth (gt.txt), a zone
polygon and a fixed-time plan it lists every entry of a person's ground point
(bottom centre of the box) into the zone, and which of them are violations:
entries during red, at least `grace_s` after red onset. People inside at red
onset do not enter, so they are not violators; entries during green are not.

    python reference_violations.py gt.txt zone.json plan.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    t: float
    frame: int
    person: int
    red: bool
    violation: bool


def inside(poly: list[tuple[float, float]], x: float, y: float) -> bool:
    # Even-odd ray casting.
    res = False
    j = len(poly) - 1
    for i in range(len(poly)):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            res = not res
        j = i
    return res


def plan_red(t: float, red_s: float, green_s: float, offset_s: float) -> tuple[bool, float]:
    """(is red, seconds since red onset) with red starting at offset_s + k*cycle."""
    phase = (t - offset_s) % (red_s + green_s)
    return phase < red_s, phase


def feet(gt_path: str, fps: float = 10.0) -> dict[int, dict[int, tuple[float, float]]]:
    out: dict[int, dict[int, tuple[float, float]]] = defaultdict(dict)
    with open(gt_path) as fh:
        for line in fh:
            f = line.split(",")
            if int(float(f[6])) == 0:
                continue
            frame = int(float(f[0])) - 1  # gt frames are 1-based
            x, y, w, h = (float(v) for v in f[2:6])
            out[int(float(f[1]))][frame] = (x + w / 2, y + h)
    return out


def entries(gt_path: str, poly: list[tuple[float, float]], red_s: float, green_s: float,
            offset_s: float, grace_s: float, fps: float = 10.0, settle: int = 2) -> list[Entry]:
    """An entry: `settle` observed frames outside, then `settle` observed frames inside."""
    out = []
    for pid, track in feet(gt_path, fps).items():
        frames = sorted(track)
        ins = [inside(poly, *track[f]) for f in frames]
        for k in range(settle, len(frames) - settle + 1):
            if ins[k] and not ins[k - 1]:
                before = ins[k - settle:k]
                after = ins[k:k + settle]
                contiguous = frames[k + settle - 1] - frames[k - settle] == 2 * settle - 1
                if not any(before) and all(after) and contiguous:
                    t = frames[k] / fps
                    red, since = plan_red(t, red_s, green_s, offset_s)
                    out.append(Entry(t, frames[k], pid, red, red and since >= grace_s))
    return sorted(out, key=lambda e: e.t)


def main() -> None:
    gt, zone_path, plan_path = sys.argv[1:4]
    with open(zone_path) as fh:
        poly = [tuple(p) for p in json.load(fh)]
    with open(plan_path) as fh:
        plan = json.load(fh)
    for e in entries(gt, poly, plan["red_s"], plan["green_s"], plan["offset_s"],
                     plan["grace_s"]):
        print(json.dumps(e.__dict__))


if __name__ == "__main__":
    main()
