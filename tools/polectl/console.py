"""Where polectl writes (one console for results, one for messages) and how every command
reports a config it cannot use."""

from __future__ import annotations

import json
from typing import NoReturn

import typer
from rich.console import Console

from edge_controller.config import ConfigError

# soft_wrap: a file path or key must never be broken across lines.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def print_config_problems(e: ConfigError, hint: str | None = None) -> None:
    """One line per problem (`file: key: reason`), then what to do about them."""
    for k, r in e.problems:
        err.print(f"[red]{e.source}[/]: [bold]{k}[/]: {r}")
    if hint:
        err.print(hint)


def fail(what: str, error: object, as_json: bool, code: int = 2) -> NoReturn:
    """End a command that could not do its job: `{"ok": false, "error": ...}` on stdout
    with --json, else `what: error` in red on stderr; exit `code`."""
    if as_json:
        out.print_json(json.dumps({"ok": False, "error": str(error)}))
    else:
        err.print(f"[red]{what}[/]: {error}")
    raise typer.Exit(code)
