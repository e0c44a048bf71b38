"""`polectl provision` + `polectl commission` end to end against the simulated pole: a
bundle from a local test CA, mosquitto with TLS and client certificates, the controller
on the bundle's config, and the checklist writing both reports with an anonymised
snapshot."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from polectl.provision import LocalCA
from polectl.snapshot import grab_frame
from polesim.broker import Broker, free_port, mosquitto_path, start_mosquitto
from polesim.pole import SAMPLE_VIDEO, SimPole
from typer.testing import CliRunner

from tests.support import build_firmware, need

ZONE = [[300, 190], [560, 175], [640, 300], [600, 420], [420, 330], [300, 290]]


@pytest.fixture(scope="module")
def firmware_build() -> Path:
    return build_firmware()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, polectl_app: typer.Typer,
         firmware_build: Path) -> Iterator[tuple[SimPole, Broker, Path]]:
    """provision -> TLS broker -> simulated pole running on the bundle's config."""
    if mosquitto_path() is None:
        need("mosquitto is not installed (apt-get install mosquitto)")
    tmp = tmp_path_factory.mktemp("site")
    port = free_port()
    pole_id = "comm-pole-1"
    r = CliRunner().invoke(polectl_app, [
        "provision", pole_id, "--broker", f"mqtts://127.0.0.1:{port}", "--out",
        str(tmp / "bundles"), "--test-ca", str(tmp / "ca"), "--camera",
        f"file:{SAMPLE_VIDEO}", "--install-dir", str(tmp / "bundles" / pole_id), "--json"])
    assert r.exit_code == 0, r.output
    bundle = tmp / "bundles" / pole_id
    ca, _ = LocalCA.load_or_create(tmp / "ca")
    # mosquitto started as root reads its TLS files as user mosquitto after dropping
    # privileges: they go to a folder it can read (pytest's temp folders are 0700).
    tls_dir = Path(tempfile.mkdtemp(prefix="smartpole-broker-tls-"))
    tls_dir.chmod(0o755)
    crt, key = ca.issue_server_cert(["localhost", "127.0.0.1"], tls_dir)
    shutil.copy(ca.cert_path, tls_dir / "ca.pem")
    for f in tls_dir.iterdir():
        f.chmod(0o644)  # a throwaway test key
    broker = start_mosquitto(port, extra_conf=(
        f"cafile {tls_dir / 'ca.pem'}\ncertfile {crt}\nkeyfile {key}\n"
        "require_certificate true\nuse_identity_as_username true\n"))
    data = tomllib.loads((bundle / "pole.toml").read_text())
    # The city's command-signing key: this pole accepts signed commands only.
    city = Ed25519PrivateKey.generate()
    (tmp / "city.key").write_bytes(city.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp / "city.pub").write_bytes(city.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    overrides: dict[str, Any] = {
        "mqtt": data["mqtt"],
        "commands": {"public_key": str(tmp / "city.pub"), "require_signature": True},
        "camera": {**data["camera"], "enabled": True, "on_end": "loop"},
        "zones": [{"name": "mid-road", "kind": "carriageway", "polygon": ZONE}],
    }
    pole = SimPole(tmp / "pole", data["mqtt"]["url"], pole_id=pole_id, overrides=overrides,
                   build_dir=firmware_build)
    try:
        pole.start()
        yield pole, broker, tmp
    finally:
        pole.stop()
        broker.stop()
        shutil.rmtree(tls_dir, ignore_errors=True)
        if sys.exc_info()[0] is not None:
            sys.stderr.write(pole.controller_log_tail())


def test_commission_end_to_end_writes_both_reports(
        site: tuple[SimPole, Broker, Path], polectl_app: typer.Typer) -> None:
    pole, _broker, tmp = site
    out_dir = tmp / "reports"
    r = CliRunner().invoke(polectl_app, ["commission", "--config", str(pole.config_path),
                                         "--out", str(out_dir), "--sign-key",
                                         str(tmp / "city.key"), "--json"])
    assert r.exit_code == 0, f"{r.output}\n{pole.controller_log_tail()}"
    rep = json.loads(r.stdout)
    checks = {c["name"]: c for c in rep["checks"]}
    assert list(checks) == ["link", "mqtt", "clock", "sensors", "lamp", "snapshot", "camera",
                            "zones"]
    for name in ("link", "mqtt", "sensors", "lamp", "snapshot", "camera", "zones"):
        assert checks[name]["status"] == "pass", checks[name]
    # This machine's clock may or may not be NTP-synchronised: reported either way.
    assert checks["clock"]["status"] in ("pass", "warn")
    assert rep["result"] in ("pass", "warn")
    assert checks["link"]["detail"]["link_protocol"] == "1.0"
    assert [s["level"] for s in checks["lamp"]["detail"]["steps"]] == [100, 50, 10, 0]
    assert all(s["telemetry_level"] == s["level"] for s in checks["lamp"]["detail"]["steps"])
    assert checks["camera"]["detail"]["width"] == 768
    assert checks["mqtt"]["detail"]["rtt_ms"] < 1000

    files = {k: Path(v) for k, v in rep["files"].items()}
    on_disk = json.loads(files["json"].read_text())
    assert on_disk["result"] == rep["result"] and on_disk["pole_id"] == pole.pole_id
    page = files["html"].read_text()
    assert f"Pole {pole.pole_id}" in page and "id=checks" in page
    for name in checks:
        assert f"check-{name}" in page
    m = re.search(r"src='data:image/jpeg;base64,([^']+)'", page)
    assert m, "the HTML page embeds the snapshot"
    snap = cv2.imdecode(np.frombuffer(base64.b64decode(m.group(1)), np.uint8), cv2.IMREAD_COLOR)
    assert snap.shape[:2] == (576, 768)
    assert files["snapshot"].read_bytes() == base64.b64decode(m.group(1))

    # Every person is blurred: where the snapshot shows a person there is no detail left.
    assert rep["snapshot"]["people_blurred"] >= 2
    raw = grab_frame(f"file:{SAMPLE_VIDEO}")
    from polectl.snapshot import detect_people

    from edge_controller.config import load

    boxes = detect_people(load(pole.config_path), raw)
    assert len(boxes) >= 2

    def sharpness(img: Any, b: Any) -> float:
        x1, y1, x2, y2 = (int(v) for v in b[:4])
        grey = cv2.cvtColor(img[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_64F).var())

    for b in boxes:
        assert sharpness(snap, b) < 0.2 * sharpness(raw, b) + 1.0, b
    # The zone is drawn: its outline colour appears along its edge.
    x, y = 470, 182  # on the top edge of ZONE
    assert snap[y - 3:y + 4, x - 3:x + 4, 2].max() > 150


def test_commission_fails_with_a_fix(site: tuple[SimPole, Broker, Path],
                                     polectl_app: typer.Typer) -> None:
    pole, _broker, tmp = site
    r = CliRunner().invoke(polectl_app, [
        "commission", "--config", str(pole.config_path), "--out", str(tmp / "r2"),
        "--frame-size", "1920x1080", "--sweep", "30", "--no-snapshot", "--sign-key",
        str(tmp / "city.key")])
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output and "expected 1920x1080" in r.output
    assert "resolution" in r.output  # the fix
    # Unsigned commands are refused by this pole, and commission says so.
    r = CliRunner().invoke(polectl_app, [
        "commission", "--config", str(pole.config_path), "--out", str(tmp / "r3"),
        "--no-snapshot", "--json"])
    assert r.exit_code == 1
    mqtt = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "mqtt")
    assert mqtt["status"] == "fail" and "rejected" in mqtt["summary"]
    html = next((tmp / "r2").glob("*.html")).read_text()
    assert "FAIL" in html


def test_commission_reports_an_unreachable_broker(polectl_app: typer.Typer,
                                                  tmp_path: Path) -> None:
    cfg = tmp_path / "pole.toml"
    cfg.write_text(f'[pole]\nid = "p-1"\n[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
                   "[camera]\nenabled = false\n")
    r = CliRunner().invoke(polectl_app, ["commission", "--config", str(cfg), "--out",
                                         str(tmp_path)])
    assert r.exit_code == 1 and "cannot connect to the broker" in r.output
    cfg.write_text('[pole]\nid = "P 1"\n')
    r = CliRunner().invoke(polectl_app, ["commission", "--config", str(cfg)])
    assert r.exit_code == 2 and "pole.id" in r.output
