"""What the model converters share: logged commands and a throwaway virtual environment.

TensorFlow and tf2onnx must never touch the project venv, so each converter
(`convert_ssdlite.py`, `convert_nanodet.py`) runs them in a venv of its own under its
work folder, made once and reused when the folder is kept.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def throwaway_venv(work: Path, toolchain: list[str]) -> Path:
    """The python of `work/venv` with `toolchain` installed (made if missing)."""
    venv = work / "venv"
    py = venv / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        run([str(py), "-m", "pip", "install", "-q", *toolchain])
    return py
