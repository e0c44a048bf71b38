"""`polectl config check` warns about permissive settings and says how to migrate (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner


def _check(app: typer.Typer, cfg: Path) -> dict[str, object]:
    r = CliRunner().invoke(app, ["config", "check", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    out: dict[str, object] = json.loads(r.output)
    return out


def test_an_old_permissive_config_gets_a_warning_with_the_migration(
        polectl_app: typer.Typer, tmp_path: Path) -> None:
    cfg = tmp_path / "pole.toml"
    cfg.write_text('[pole]\nid = "pole-1"\n[mqtt]\nurl = "mqtt://broker.city:1883"\n'
                   'password = "hunter2"\n')
    warnings = {w["key"]: w for w in _check(polectl_app, cfg)["warnings"]}  # type: ignore
    assert {"commands.require_signature", "mqtt.url", "mqtt.password",
            "update.public_key"} <= set(warnings)
    assert "require_signature = true" in warnings["commands.require_signature"]["fix"]
    assert "password_file" in warnings["mqtt.password"]["fix"]
    r = CliRunner().invoke(polectl_app, ["config", "check", str(cfg)])
    assert r.exit_code == 0 and "warning" in r.output and "Upgrading a pole" in r.output


def test_a_provisioned_pole_has_no_command_warning(polectl_app: typer.Typer,
                                                   tmp_path: Path) -> None:
    r = CliRunner().invoke(polectl_app, [
        "provision", "pole-2", "--broker", "mqtts://broker.city:8883", "--out",
        str(tmp_path), "--test-ca", str(tmp_path / "ca"), "--install-dir",
        str(tmp_path / "pole-2")])
    assert r.exit_code == 0, r.output
    found = _check(polectl_app, tmp_path / "pole-2" / "pole.toml")["warnings"]
    keys = {w["key"] for w in found}  # type: ignore
    assert "commands.require_signature" not in keys and "mqtt.url" not in keys
