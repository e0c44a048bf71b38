"""Fixtures for the installer-tool tests: the polectl app, a mosquitto broker, Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from polesim.broker import Broker

from tests.support import mosquitto, need


@pytest.fixture(scope="session")
def polectl_app() -> typer.Typer:
    return cli_app()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    yield from mosquitto()


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        need("needs Debian's chromium and chromium-driver (apt-get install chromium "
             "chromium-driver)")
    return browser, driver


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def cli_app() -> typer.Typer:
    """polectl's app, as the `polectl` script runs it (for scripts: the install-doc test)."""
    from polectl import cli

    return cli.app
