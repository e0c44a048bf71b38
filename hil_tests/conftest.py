"""HIL fixtures: a real mosquitto, the firmware build on the MicroPython unix port over a
pty pair (or a real board on a serial port), and the controller as a separate process.

    pytest hil_tests                          # --target sim (default)
    pytest hil_tests --target serial:/dev/ttyUSB0

A test that needs something the chosen target lacks (the simulated hardware
panel, say, on a rig without instruments) is skipped with the reason. In CI
(CI=true) a missing broker or firmware build is a failure, not a skip.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from polesim.broker import Broker
from polesim.pole import SimPole, render_toml

from hil_tests.capture import Capture
from tests.support import IN_CI as IN_CI  # hil tests import it from here
from tests.support import build_firmware, mosquitto


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--target", default="sim",
                     help="sim (default) or serial:PORT for a board on a real rig")


@dataclass(frozen=True)
class Target:
    kind: str  # "sim" | "serial"
    port: str = ""

    @property
    def has_panel(self) -> bool:
        return self.kind == "sim"


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    raw = str(request.config.getoption("--target"))
    if raw == "sim":
        return Target("sim")
    if raw.startswith("serial:") and len(raw) > 7:
        return Target("serial", raw[7:])
    raise pytest.UsageError(f"--target {raw!r}: use sim or serial:PORT")


@pytest.fixture(scope="session")
def firmware_build() -> Path:
    # Once per session, into build/firmware where SimPole looks for it.
    return build_firmware()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    yield from mosquitto()


class RigPole(SimPole):
    """A board on a real serial port: only the controller runs here."""

    def __init__(self, workdir: Path, broker_url: str, port: str,
                 overrides: dict[str, Any] | None = None) -> None:
        super().__init__(workdir, broker_url, overrides=overrides)
        self.serial_port = port

    @property
    def link_port(self) -> str:
        return self.serial_port

    def start(self) -> RigPole:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_toml(self.config()))
        self.start_controller()
        return self


_poles = itertools.count(1)


def make_pole(target: Target, broker: Broker, build: Path, workdir: Path,
              overrides: dict[str, Any] | None = None) -> SimPole:
    # A fresh pole id per test: retained state/birth of an earlier test's pole on the
    # shared broker must never satisfy this test's waits.
    pole_id = f"hil-{os.getpid()}-{next(_poles)}"
    p: SimPole
    if target.kind == "serial":
        p = RigPole(workdir, broker.url, target.port, overrides)
    else:
        p = SimPole(workdir, broker.url, overrides=overrides, build_dir=build)
    # Like a provisioned pole: commands must be signed; Capture.publish signs a test's
    # commands with this pole's test key (polesim.signing).
    p.signed = True
    p.pole_id = pole_id
    return p.start()


@pytest.fixture
def pole(target: Target, broker: Broker, firmware_build: Path,
         request: pytest.FixtureRequest) -> Iterator[SimPole]:
    marker = request.node.get_closest_marker("pole_config")
    overrides = marker.args[0] if marker else None
    with tempfile.TemporaryDirectory(prefix="hil-") as d:
        p = make_pole(target, broker, firmware_build, Path(d), overrides)
        try:
            yield p
        finally:
            p.stop()
            if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
                sys.stderr.write(f"\n--- controller log ---\n{p.controller_log_tail()}\n")
                if p.firmware is not None:
                    sys.stderr.write(f"--- firmware log ---\n{p.firmware.log_tail()}\n")


@pytest.fixture
def panel(pole: SimPole, target: Target):  # type: ignore[no-untyped-def]
    if not target.has_panel or pole.firmware is None:
        pytest.skip("needs the simulated hardware panel (target sim) or a rig instrument")
    return pole.firmware.panel


@pytest.fixture
def observer(broker: Broker, pole: SimPole) -> Iterator[Capture]:
    cap = Capture("127.0.0.1", broker.port, f"smartpole/v1/{pole.pole_id}/#")
    yield cap
    cap.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pole_config(overrides): config sections for the pole")
