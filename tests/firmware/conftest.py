"""Fixtures for the firmware tests: one firmware build per session (into a
temporary directory, so `make firmware` running beside is not disturbed) and
a fresh simulated board per test, wired to a controller end over a PtyWire."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from polesim.firmware import SimFirmware
from polesim.wire import PtyWire

from tests.firmware.linkctl import Ctl
from tests.support import build_firmware

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fw_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_firmware(tmp_path_factory.mktemp("fwbuild"))


@dataclass
class Rig:
    wire: PtyWire
    fw: SimFirmware
    ctl: Ctl


RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig(fw_build: Path, tmp_path: Path) -> Iterator[RigFactory]:
    made: list[Rig] = []

    def make(settings: dict[str, int] | None = None, heap: str = "64K",
             settings_file: Path | None = None) -> Rig:
        if settings is not None:
            settings_file = settings_file or tmp_path / "settings.json"
            settings_file.write_text(json.dumps(settings))
        wire = PtyWire()
        ctl = Ctl(wire.ctl_path)  # open first: nothing the firmware says is missed
        fw = SimFirmware(wire.fw_path, fw_build, heap=heap, settings_path=settings_file,
                         log_path=tmp_path / f"fw{len(made)}.log")
        rig = Rig(wire, fw, ctl)
        made.append(rig)
        fw.start()
        return rig

    yield make
    for rig in made:
        rig.fw.stop()
        rig.ctl.close()
        rig.wire.close()
        tail = rig.fw.log_tail()
        if tail:
            print(f"--- firmware log {rig.fw.log_path} ---\n{tail}")


@pytest.fixture
def rig(make_rig: RigFactory) -> Rig:
    return make_rig()
