"""Fixtures for the installer-tool tests: the polectl app with the installer commands,
a mosquitto broker, the firmware build (as the HIL suite builds it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from polesim.broker import Broker, mosquitto_path, start_mosquitto

IN_CI = os.environ.get("CI", "").lower() == "true"
COMMANDS = ("flash", "provision", "commission", "calibrate", "fleet-sim", "ingest")


def need(reason: str) -> None:
    """Skip here, but never in CI: there a missing tool is a broken setup."""
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def register(app: typer.Typer) -> None:
    """The registration lines of tools/polectl/cli.py for the installer commands."""
    from polectl import calibrate, commission, flash, fleet, provision

    app.command("flash")(flash.flash_command)
    app.command("provision")(provision.provision_command)
    app.command("commission")(commission.commission_command)
    app.command("calibrate")(calibrate.calibrate_command)
    app.command("fleet-sim")(fleet.fleet_sim_command)
    app.command("ingest")(fleet.ingest_command)


@pytest.fixture(scope="session")
def polectl_app() -> typer.Typer:
    """polectl itself once cli.py registers the installer commands; until then a copy of
    the app with the same registration lines."""
    return cli_app()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    if mosquitto_path() is None:
        need("mosquitto is not installed (apt-get install mosquitto)")
    b = start_mosquitto()
    yield b
    b.stop()


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        need("needs Debian's chromium and chromium-driver (apt-get install chromium "
             "chromium-driver)")
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def cli_app() -> typer.Typer:
    """The same app as the `polectl_app` fixture, for scripts (the install-doc test)."""
    from polectl import cli

    if set(COMMANDS) <= {c.name for c in cli.app.registered_commands}:
        return cli.app
    app = typer.Typer(no_args_is_help=True)
    register(app)
    for c in cli.app.registered_commands:  # config check, monitor, ... as in polectl
        app.registered_commands.append(c)
    for g in cli.app.registered_groups:
        app.registered_groups.append(g)
    return app
