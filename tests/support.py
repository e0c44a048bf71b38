"""What every test suite shares: what "in CI" means, skipping without hiding a broken CI
setup, the shared test data, and building the firmware."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from polesim.broker import Broker, mosquitto_path, start_mosquitto

ROOT = Path(__file__).resolve().parents[1]
# Large recordings live beside the checkout, not in it.
PETS = ROOT.parent / "shared" / "data" / "pets09-s2l1"
# CI sets CI=true (GitHub Actions, GitLab, .ci/run); any other value is a developer's shell.
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(reason: str) -> NoReturn:
    """Skip here, but never in CI: there a missing tool or data set is a broken setup."""
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def need_pets() -> Path:
    """The PETS09-S2L1 folder (skipped locally when absent, a failure in CI)."""
    if (PETS / "vtest.avi").is_file() and (PETS / "gt.txt").is_file():
        return PETS
    need(f"PETS09-S2L1 test data not found at {PETS} (the shared/ folder beside the repo)")


def mosquitto() -> Iterator[Broker]:
    """A mosquitto on a free loopback port for as long as the generator lives (for a
    `yield from` fixture)."""
    if mosquitto_path() is None:
        need("mosquitto is not installed (apt-get install mosquitto)")
    b = start_mosquitto()
    yield b
    b.stop()


def build_firmware(out: Path | None = None, version: str | None = None,
                   counter: int | None = None) -> Path:
    """Build the firmware from the current source, as `make firmware` does (into `out`, or
    build/firmware); returns the build folder."""
    cmd = [sys.executable, str(ROOT / "firmware" / "build.py")]
    if out is not None:
        cmd += ["--out", str(out)]
    if version:
        cmd += ["--version", version]
    if counter is not None:
        cmd += ["--counter", str(counter)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        pytest.fail(f"firmware build failed:\n{res.stdout}\n{res.stderr}")
    return out if out is not None else ROOT / "build" / "firmware"
