"""`polectl provision`: identity, CSR or test-CA certificate, config bundle, and the
refusal to overwrite without --force."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

from edge_controller.config import load


def _run(app: typer.Typer, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["provision", *args])
    return r.exit_code, r.output


def test_bundle_with_test_ca(polectl_app: typer.Typer, tmp_path: Path) -> None:
    code, output = _run(polectl_app, "pole-0042", "--broker", "mqtts://broker.lab:8883",
                        "--out", str(tmp_path / "b"), "--test-ca", str(tmp_path / "ca"),
                        "--lat", "52.52", "--lon", "13.405", "--tz", "Europe/Berlin",
                        "--camera", "rtsp://cam.local/stream1", "--json")
    assert code == 0, output
    doc = json.loads(output)
    bundle = tmp_path / "b" / "pole-0042"
    assert doc["bundle"] == str(bundle) and doc["ca_created"]
    assert sorted(p.name for p in bundle.iterdir()) == [
        "ca.pem", "identity.json", "pole.crt", "pole.csr", "pole.key", "pole.toml"]
    assert stat.S_IMODE((bundle / "pole.key").stat().st_mode) == 0o600
    cfg = load(bundle / "pole.toml")
    assert cfg.pole.id == "pole-0042" and cfg.pole.timezone == "Europe/Berlin"
    assert cfg.pole.latitude == 52.52 and cfg.mqtt.tls
    assert str(cfg.mqtt.cert_file) == "/etc/smartpole/pole.crt"
    assert str(cfg.mqtt.ca_file) == "/etc/smartpole/ca.pem"
    assert cfg.camera.source == "rtsp://cam.local/stream1"
    # The certificate: CN = pole id, client auth, signed by the test CA, matches the key.
    cert = x509.load_pem_x509_certificate((bundle / "pole.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((bundle / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((bundle / "pole.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "pole-0042"
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ident = json.loads((bundle / "identity.json").read_text())
    assert ident["public_key_fingerprint"].startswith("sha256:")
    assert "CN=pole-0042" in ident["certificate"]["subject"]


def test_refuses_to_overwrite_without_force(polectl_app: typer.Typer, tmp_path: Path) -> None:
    args = ("pole-7", "--broker", "mqtt://127.0.0.1:1883", "--out", str(tmp_path))
    assert _run(polectl_app, *args)[0] == 0
    key = (tmp_path / "pole-7" / "pole.key").read_bytes()
    code, output = _run(polectl_app, *args)
    assert code == 2
    assert "already holds a bundle" in output and "--force" in output
    assert (tmp_path / "pole-7" / "pole.key").read_bytes() == key  # untouched
    code, output = _run(polectl_app, *args, "--force")
    assert code == 0, output
    assert (tmp_path / "pole-7" / "pole.key").read_bytes() != key
    cfg = load(tmp_path / "pole-7" / "pole.toml")
    assert not cfg.camera.enabled and cfg.mqtt.cert_file is None  # plain mqtt: no TLS files


def test_csr_only_with_ed25519_and_city_ca(polectl_app: typer.Typer, tmp_path: Path) -> None:
    ca_dir = tmp_path / "labca"
    assert _run(polectl_app, "x-1", "--broker", "mqtts://h:8883", "--out", str(tmp_path / "o"),
                "--test-ca", str(ca_dir))[0] == 0
    code, output = _run(polectl_app, "pole-0043", "--broker", "mqtts://mqtt.city:8883",
                        "--out", str(tmp_path / "o"), "--key-type", "ed25519",
                        "--ca-cert", str(ca_dir / "ca.pem"))
    assert code == 0, output
    b = tmp_path / "o" / "pole-0043"
    assert not (b / "pole.crt").exists() and "city PKI" in output
    csr = x509.load_pem_x509_csr((b / "pole.csr").read_bytes())
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), ed25519.Ed25519PublicKey)
    assert (b / "ca.pem").read_bytes() == (ca_dir / "ca.pem").read_bytes()


def test_errors_suggest_the_fix(polectl_app: typer.Typer, tmp_path: Path) -> None:
    code, output = _run(polectl_app, "Pole_42", "--broker", "mqtt://h:1883", "--out",
                        str(tmp_path))
    assert code == 2 and "lowercase" in output
    code, output = _run(polectl_app, "p-1", "--broker", "http://h", "--out", str(tmp_path))
    assert code == 2 and "mqtts://host:port" in output
    tpl = tmp_path / "tpl.toml"
    tpl.write_text('[pole]\nid = "${pole_id}"\n[mqtt]\nurl = "${broker_url}"\nkeepalive_s = 1\n')
    code, output = _run(polectl_app, "p-1", "--broker", "mqtt://h:1883", "--out",
                        str(tmp_path), "--template", str(tpl))
    assert code == 2 and "mqtt.keepalive_s" in output
    tpl.write_text('[pole]\nid = "${pole_id}"\n[mqtt]\nurl = "${broker}"\n')
    code, output = _run(polectl_app, "p-1", "--broker", "mqtt://h:1883", "--out",
                        str(tmp_path), "--template", str(tpl))
    assert code == 2 and "${broker}" in output and "broker_url" in output
