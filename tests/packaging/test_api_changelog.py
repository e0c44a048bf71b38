"""docs/api/CHANGELOG.md records every API version up to the one asyncapi.yaml declares."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api"


def test_changelog_has_every_minor_up_to_the_current_one() -> None:
    current = yaml.safe_load((API / "asyncapi.yaml").read_text())["info"]["version"]
    rows = re.findall(r"^\| (\d+\.\d+\.\d+) \|", (API / "CHANGELOG.md").read_text(), re.M)
    assert rows and rows[0] == current, (rows, current)  # newest first
    major, minor, _ = map(int, current.split("."))
    assert rows == [f"{major}.{m}.0" for m in range(minor, -1, -1)], rows
    assert "api/CHANGELOG.md" in (ROOT / "docs" / "mqtt.md").read_text()
