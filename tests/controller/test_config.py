"""Config parsing and loading, and `polectl config check`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from polectl.cli import app
from typer.testing import CliRunner

from edge_controller import config
from edge_controller.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]

GOOD_TOML = """\
[pole]
id = "pole-0042"
latitude = 52.37

[link]
port = "/dev/ttyAMA0"
retries = 5

[mqtt]
url = "mqtts://broker.example.net:8883"
protocol = "3.1.1"
"""


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        config.parse(data)
    return ei.value.problems


# ---- parse -------------------------------------------------------------------------


def test_defaults_parse() -> None:
    cfg = config.parse({})
    assert cfg.pole.id == "pole-0001"
    assert cfg.link.port == "/dev/ttyUSB0" and cfg.link.retries == 3
    assert cfg.link.heartbeat_s == 1.0 and cfg.link.lost_after_s == 3.5
    assert cfg.mqtt.url == "mqtt://127.0.0.1:1883" and cfg.mqtt.protocol == "auto"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert cfg.telemetry.interval_s == 10.0
    assert cfg.supervisor.max_restarts == 20
    assert config.parse({"pole": {}, "mqtt": {}}) == cfg


def test_explicit_values_parse() -> None:
    cfg = config.parse({"pole": {"id": "p-7"}, "mqtt": {"url": "mqtts://b.example:9999"},
                        "camera": {"enabled": False, "on_end": "exit"}})
    assert cfg.pole.id == "p-7"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("b.example", 9999, True)
    assert cfg.camera.enabled is False and cfg.camera.on_end == "exit"
    assert config.parse({"mqtt": {"url": "mqtts://b.example"}}).mqtt.port == 8883


@pytest.mark.parametrize(("data", "key"), [
    ({"mqtt": {"prot": "5"}}, "mqtt.prot"),
    ({"link": {"heartbeat": 1}}, "link.heartbeat"),
    ({"polle": {"id": "x"}}, "polle"),
    ({"supervisor": {"max_restart": 3}}, "supervisor.max_restart"),
])
def test_unknown_key_names_the_full_path(data: dict[str, Any], key: str) -> None:
    ((k, reason),) = problems(data)
    assert k == key
    assert "unknown key" in reason


@pytest.mark.parametrize(("data", "key", "words"), [
    ({"link": {"retries": 11}}, "link.retries", "less than or equal to 10"),
    ({"link": {"heartbeat_s": 0}}, "link.heartbeat_s", "greater than 0"),
    ({"link": {"baudrate": "fast"}}, "link.baudrate", "integer"),
    ({"pole": {"id": "Pole_1"}}, "pole.id", "pattern"),
    ({"pole": {"latitude": 91}}, "pole.latitude", "less than or equal to 90"),
    ({"mqtt": {"url": "http://broker:1883"}}, "mqtt.url", "mqtt://host:port"),
    ({"mqtt": {"url": "mqtt://broker:99999"}}, "mqtt.url", "port"),
    ({"mqtt": {"protocol": "4"}}, "mqtt.protocol", "'3.1.1'"),
    ({"mqtt": {"topic_root": "smartpole/#"}}, "mqtt.topic_root", "wildcards"),
    ({"mqtt": {"keepalive_s": 1}}, "mqtt.keepalive_s", "greater than or equal to 5"),
    ({"camera": {"on_end": "explode"}}, "camera.on_end", "'loop'"),
    ({"telemetry": {"interval_s": 0.1}}, "telemetry.interval_s", "0.2"),
    ({"link": "fast"}, "link", "dictionary"),
])
def test_bad_values_name_the_key_and_the_reason(data: dict[str, Any], key: str,
                                                  words: str) -> None:
    ((k, reason),) = problems(data)
    assert k == key
    assert words in reason


def test_every_problem_is_reported_at_once() -> None:
    got = problems({"mqtt": {"prot": "5", "keepalive_s": 0}, "link": {"retries": -1}})
    assert sorted(k for k, _ in got) == ["link.retries", "mqtt.keepalive_s", "mqtt.prot"]


def test_config_error_message_has_one_line_per_problem_with_the_source() -> None:
    with pytest.raises(ConfigError) as ei:
        config.parse({"mqtt": {"prot": "5"}, "link": {"retries": 99}}, source="pole.toml")
    lines = str(ei.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith("pole.toml: ") for line in lines)
    assert any("mqtt.prot: unknown key" in line for line in lines)


@pytest.mark.parametrize(("section", "lo", "hi"), [
    ("mqtt", "reconnect_min_s", "reconnect_max_s"),
    ("supervisor", "restart_min_s", "restart_max_s"),
])
def test_a_minimum_delay_above_its_maximum_is_rejected(section: str, lo: str, hi: str) -> None:
    # backoff_delays(lo, hi) would then wait longer than the "largest" delay.
    got = problems({section: {lo: 50.0, hi: 1.0}})
    assert got and all(k.startswith(section) for k, _ in got)


# ---- load --------------------------------------------------------------------------


def test_load_good_file(tmp_path: Path) -> None:
    p = tmp_path / "pole.toml"
    p.write_text(GOOD_TOML)
    cfg = config.load(p)
    assert cfg.pole.id == "pole-0042" and cfg.link.retries == 5 and cfg.mqtt.tls


def test_load_names_the_file_for_a_syntax_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text('[mqtt]\nurl = "mqtt://x:1883\n')
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert ei.value.source == str(p)
    ((k, reason),) = ei.value.problems
    assert k == "(syntax)" and "line 2" in reason
    assert str(p) in str(ei.value)


def test_load_names_the_file_when_it_is_missing(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert ei.value.source == str(p)
    ((k, reason),) = ei.value.problems
    assert k == "(file)" and "No such file" in reason
    assert str(p) in str(ei.value)


def test_load_names_the_file_for_bad_values(tmp_path: Path) -> None:
    p = tmp_path / "pole.toml"
    p.write_text("[mqtt]\nprot = 5\n")
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert ei.value.source == str(p)
    assert ei.value.problems[0][0] == "mqtt.prot"
    assert str(ei.value).startswith(f"{p}: mqtt.prot: unknown key")


def test_load_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes('[pole]\nid = "pôle"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert ei.value.source == str(p)
    assert ei.value.problems[0][0] == "(syntax)"


def test_config_version() -> None:
    assert config.config_version(None) == "defaults"
    v = config.config_version(ROOT / "pyproject.toml")
    assert len(v) == 16 and int(v, 16) >= 0


# ---- polectl config check ---------------------------------------------------------------

runner = CliRunner()


def test_check_good_file_exits_0(tmp_path: Path) -> None:
    p = tmp_path / "pole.toml"
    p.write_text(GOOD_TOML)
    r = runner.invoke(app, ["config", "check", str(p)])
    assert r.exit_code == 0, r.output
    assert "pole-0042" in r.output


def test_check_good_file_json(tmp_path: Path) -> None:
    p = tmp_path / "pole.toml"
    p.write_text(GOOD_TOML)
    r = runner.invoke(app, ["config", "check", "--json", str(p)])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert {k: doc[k] for k in ("ok", "file", "pole_id")} == \
        {"ok": True, "file": str(p), "pole_id": "pole-0042"}
    # Valid but permissive (issue 17): unsigned commands are warned about, not refused.
    assert "commands.require_signature" in {w["key"] for w in doc["warnings"]}


def test_check_bad_file_exits_2_and_names_the_key(tmp_path: Path) -> None:
    p = tmp_path / "pole.toml"
    p.write_text("[mqtt]\nprot = 5\n[link]\nretries = 99\n")
    r = runner.invoke(app, ["config", "check", str(p)])
    assert r.exit_code == 2
    assert "mqtt.prot" in r.output and "link.retries" in r.output


def test_check_bad_file_json_lists_problems(tmp_path: Path) -> None:
    d = tmp_path / "a-rather-long-directory-name-for-installers" / "site-0042-north-avenue"
    d.mkdir(parents=True)
    p = d / "pole.toml"
    p.write_text("[mqtt]\nprot = 5\n[link]\nretries = 99\n")
    r = runner.invoke(app, ["config", "check", str(p), "--json"])
    assert r.exit_code == 2
    doc = json.loads(r.stdout)  # machine-readable even with long paths and reasons
    assert doc["ok"] is False and doc["file"] == str(p)
    by_key = {pr["key"]: pr["reason"] for pr in doc["problems"]}
    assert set(by_key) == {"mqtt.prot", "link.retries"}
    assert "unknown key" in by_key["mqtt.prot"]


def test_check_missing_file_json(tmp_path: Path) -> None:
    p = tmp_path / "missing.toml"
    r = runner.invoke(app, ["config", "check", "--json", str(p)])
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert doc["problems"][0]["key"] == "(file)"


def test_polectl_script_exit_codes(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "polectl"
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD_TOML)
    bad.write_text("[pole]\nid = 'UPPER'\n")
    ok = subprocess.run([str(exe), "config", "check", str(good)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    no = subprocess.run([str(exe), "config", "check", "--json", str(bad)],
                        capture_output=True, text=True, timeout=60)
    assert no.returncode == 2
    assert json.loads(no.stdout)["problems"][0]["key"] == "pole.id"
