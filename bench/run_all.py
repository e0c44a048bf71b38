"""`make bench`: every benchmark, figures printed, nothing asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> int:
    codec_dir = str(ROOT / "edge_controller" / "link")
    print("== link codec throughput (same mix, same run)")
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "codec_bench.py"), codec_dir,
                         "50000"], capture_output=True, text=True, check=True).stdout.strip()
    mp = subprocess.run([str(BIN / "micropython"), "-X", "heapsize=1M",
                         str(ROOT / "bench" / "codec_bench.py"), codec_dir, "20000"],
                        capture_output=True, text=True, check=True).stdout.strip()
    print(cp)
    print(mp)
    fps = {line.split()[0]: float(line.split("roundtrip_fps=")[1].split()[0])
           for line in (cp, mp)}
    print(f"micropython/cpython round-trip ratio: {fps['micropython'] / fps['cpython']:.2f}")
    rc = 0
    for title, script in (("simulated pole", "pole_bench.py"),
                          ("person detector (PETS09)", "detect_bench.py"),
                          ("seeing in fog, at night, in grey (PETS09)", "conditions_bench.py"),
                          ("crossing: tracking and warning latency", "crossing_bench.py")):
        print(f"== {title}", flush=True)
        rc |= subprocess.run([sys.executable, str(ROOT / "bench" / script)]).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
