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
        "ca.pem", "commands.pub", "identity.json", "pole.crt", "pole.csr", "pole.key",
        "pole.toml"]
    assert stat.S_IMODE((bundle / "pole.key").stat().st_mode) == 0o600
    cfg = load(bundle / "pole.toml")
    # Issue 17: a provisioned pole requires signed commands (the test CA's test key here).
    assert cfg.commands.require_signature
    assert str(cfg.commands.public_key) == "/etc/smartpole/commands.pub"
    assert (bundle / "commands.pub").read_bytes() == (tmp_path / "ca" / "commands.pub").read_bytes()
    assert stat.S_IMODE((tmp_path / "ca" / "commands.key").stat().st_mode) == 0o600
    assert doc["commands"]["require_signature"] is True
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
    args = ("pole-7", "--broker", "mqtt://127.0.0.1:1883", "--out", str(tmp_path),
            "--unsigned-commands")
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
                        "--ca-cert", str(ca_dir / "ca.pem"),
                        "--command-key", str(ca_dir / "commands.pub"))
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
                        str(tmp_path), "--template", str(tpl), "--unsigned-commands")
    assert code == 2 and "mqtt.keepalive_s" in output
    tpl.write_text('[pole]\nid = "${pole_id}"\n[mqtt]\nurl = "${broker}"\n')
    code, output = _run(polectl_app, "p-1", "--broker", "mqtt://h:1883", "--out",
                        str(tmp_path), "--template", str(tpl))
    assert code == 2 and "${broker}" in output and "broker_url" in output


# ---- issue 17: signed commands, key files, revocation ----------------------------------------


def test_a_street_pole_needs_the_city_command_key(polectl_app: typer.Typer,
                                                  tmp_path: Path) -> None:
    code, output = _run(polectl_app, "pole-9", "--broker", "mqtts://mqtt.city:8883", "--out",
                        str(tmp_path))
    assert code == 2 and "--command-key" in output and not (tmp_path / "pole-9").exists()
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "city-commands.pub"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, output = _run(polectl_app, "pole-9", "--broker", "mqtts://mqtt.city:8883", "--out",
                        str(tmp_path), "--command-key", str(pub))
    assert code == 0, output
    cfg = load(tmp_path / "pole-9" / "pole.toml")
    assert cfg.commands.require_signature
    assert (tmp_path / "pole-9" / "commands.pub").read_bytes() == pub.read_bytes()
    ec_pub = tmp_path / "ec.pub"
    ec_pub.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, output = _run(polectl_app, "pole-10", "--broker", "mqtts://h:8883", "--out",
                        str(tmp_path), "--command-key", str(ec_pub))
    assert code == 2 and "Ed25519" in output


def test_key_files_are_0600_never_written_through_a_symlink(tmp_path: Path) -> None:
    # Before: an existing 0644 key kept 0644, and a symlink was followed.
    from polectl.keyfile import write_file

    key = tmp_path / "city.key"
    key.write_bytes(b"old")
    key.chmod(0o644)
    write_file(key, b"secret")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_bytes() == b"secret"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "pole.key"
    link.symlink_to(victim)
    write_file(link, b"secret")
    assert victim.read_bytes() == b"keep" and not link.is_symlink()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    import pytest

    with pytest.raises(FileExistsError):
        write_file(key, b"x", exclusive=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_bundle_keygen_replaces_a_0644_key_with_0600(polectl_app: typer.Typer,
                                                    tmp_path: Path) -> None:
    key = tmp_path / "city.key"
    key.write_bytes(b"old")
    key.chmod(0o644)
    r = CliRunner().invoke(polectl_app, ["bundle", "keygen", str(key)])
    assert r.exit_code == 1 and key.read_bytes() == b"old"  # refused without --force
    r = CliRunner().invoke(polectl_app, ["bundle", "keygen", str(key), "--force"])
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    serialization.load_pem_private_key(key.read_bytes(), None)


def test_revoke_writes_a_ca_signed_crl(polectl_app: typer.Typer, tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    assert _run(polectl_app, "pole-1", "--broker", "mqtts://h:8883", "--out",
                str(tmp_path / "b"), "--test-ca", str(ca_dir))[0] == 0
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    empty = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert empty.is_signature_valid(ca.public_key()) and len(empty) == 0
    code, output = _run(polectl_app, "revoke", "pole-1", "--ca", str(ca_dir), "--out",
                        str(tmp_path / "b"), "--json")
    assert code == 0, output
    cert = x509.load_pem_x509_certificate((tmp_path / "b" / "pole-1" / "pole.crt").read_bytes())
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    code, output = _run(polectl_app, "revoke", "pole-1", "--ca", str(ca_dir), "--out",
                        str(tmp_path / "b"), "--json")
    assert code == 0 and json.loads(output)["already"] is True
    code, output = _run(polectl_app, "revoke", "pole-2", "--ca", str(tmp_path / "nope"))
    assert code == 2 and "ca.key" in output
