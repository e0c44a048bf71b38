"""The `polectl` script: every wheel installs it, but only `smartpole[installer]` brings
what it needs, so a pole that has the script without the extra gets a sentence instead
of an ImportError traceback."""

from __future__ import annotations

import importlib.util
import sys

NEEDS = ("typer", "rich")


def main() -> None:
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        print(f"polectl: {', '.join(missing)} not installed. polectl is the installer's tool: "
              "pip install 'smartpole[installer]' (a pole needs only `smartpole` and runs "
              "pole-controller).", file=sys.stderr)
        sys.exit(2)
    from polectl.cli import app

    app()
