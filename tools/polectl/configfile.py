"""Reading a pole's TOML config for a polectl command: always the whole file, validated
exactly as the controller validates it at start-up; a command takes the sections it needs
from the result."""

from __future__ import annotations

from pathlib import Path

import typer

from edge_controller.config import Config, ConfigError, load
from polectl.console import print_config_problems


def load_or_raise(path: Path, error: type[Exception]) -> Config:
    """The config, or `error` with one `file: key: reason` line per problem (for library
    functions that report through their own exception)."""
    try:
        return load(path)
    except ConfigError as e:
        raise error(str(e)) from None


def load_or_exit(path: Path, hint: str | None = None) -> Config:
    """The config, or the problems printed and exit code 2 (a usage error)."""
    try:
        return load(path)
    except ConfigError as e:
        print_config_problems(e, hint)
        raise typer.Exit(2) from None
