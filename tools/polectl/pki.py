"""The pole's identity material for `polectl provision`: keys, the certificate signing
request, fingerprints, and the local CA that labs, tests and the simulated city use
(never real poles)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from polectl.keyfile import PRIVATE, PUBLIC, write_file

KeyType = Literal["ec-p256", "ed25519"]


class ProvisionError(Exception):
    """Something the installer can fix; the message says what and how."""


def x509_module() -> Any:
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - a dependency of polectl
        raise ProvisionError("the cryptography package is missing: pip install cryptography"
                             ) from None
    return x509


def new_key(kind: KeyType) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _hash_for(key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def fingerprint(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def make_csr(key: Any, pole_id: str, org: str) -> Any:
    x509 = x509_module()
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, pole_id),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    return (x509.CertificateSigningRequestBuilder().subject_name(name)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:smartpole:pole:{pole_id}")]),
                critical=False)
            .sign(key, _hash_for(key)))


@dataclass
class LocalCA:
    """A local CA for labs, tests and the simulated city: never for real poles."""

    key: Any
    cert: Any
    directory: Path

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    def revoked(self) -> list[dict[str, Any]]:
        p = self.directory / "revoked.json"
        return list(json.loads(p.read_text())) if p.exists() else []

    def write_crl(self, revoked: list[dict[str, Any]], days: int = 30) -> Path:
        """The CA-signed list of revoked serials (mosquitto `crlfile`), valid `days`."""
        x509 = x509_module()
        from cryptography.hazmat.primitives import hashes, serialization

        now = dt.datetime.now(dt.UTC)
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
             .last_update(now - dt.timedelta(minutes=5))
             .next_update(now + dt.timedelta(days=days)))
        for r in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(r["serial"], 16))
                .revocation_date(dt.datetime.fromisoformat(r["at"].replace("Z", "+00:00")))
                .build())
        crl = b.sign(self.key, hashes.SHA256())
        write_bundle_file(self.directory / "revoked.json",
                          json.dumps(revoked, indent=1).encode() + b"\n")
        write_bundle_file(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_path

    def test_command_key(self) -> bytes:
        """The lab's command-signing key pair in this folder (commands.key, 0600, and
        commands.pub), created once; returns the public PEM. Labs only."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        kp, pp = self.directory / "commands.key", self.directory / "commands.pub"
        if not pp.exists():
            key = ed25519.Ed25519PrivateKey.generate()
            write_bundle_file(kp, key_pem(key), private=True)
            write_bundle_file(pp, key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return pp.read_bytes()

    @staticmethod
    def load_or_create(directory: Path) -> tuple[LocalCA, bool]:
        x509 = x509_module()
        from cryptography.hazmat.primitives import serialization

        kp, cp = directory / "ca.key", directory / "ca.pem"
        if kp.exists() and cp.exists():
            try:
                key = serialization.load_pem_private_key(kp.read_bytes(), None)
                cert = x509.load_pem_x509_certificate(cp.read_bytes())
            except (ValueError, TypeError) as e:
                raise ProvisionError(f"{directory}: ca.key/ca.pem are not a usable CA ({e}); "
                                     "point --test-ca at another folder") from None
            return LocalCA(key, cert, directory), False
        if kp.exists() or cp.exists():
            raise ProvisionError(f"{directory}: has only one of ca.key and ca.pem; restore the "
                                 "other or use an empty folder")
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smartpole test CA"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smartpole (test)")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                             False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, _hash_for(key)))
        directory.mkdir(parents=True, exist_ok=True)
        write_bundle_file(kp, key_pem(key), private=True)
        write_bundle_file(cp, cert.public_bytes(serialization.Encoding.PEM))
        ca = LocalCA(key, cert, directory)
        ca.write_crl([])  # the broker's crlfile must exist: an empty, CA-signed list
        return ca, True

    def sign(self, csr: Any, days: int, server_names: list[str] | None = None) -> Any:
        """A client certificate for `csr` (or a server one with `server_names` as SANs)."""
        x509 = x509_module()
        from cryptography.x509.oid import ExtendedKeyUsageOID

        now = dt.datetime.now(dt.UTC)
        b = (x509.CertificateBuilder().subject_name(csr.subject)
             .issuer_name(self.cert.subject).public_key(csr.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 self.cert.public_key()), critical=False))
        if server_names:
            sans: list[Any] = []
            for n in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                critical=False)
        else:
            try:
                san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                b = b.add_extension(san.value, critical=False)
            except x509.ExtensionNotFound:
                pass
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                critical=False)
        return b.sign(self.key, _hash_for(self.key))

    def issue_server_cert(self, names: list[str], out_dir: Path,
                          days: int = 825) -> tuple[Path, Path]:
        """Key and certificate for a lab broker (e.g. names ["localhost", "127.0.0.1"])."""
        from cryptography.hazmat.primitives import serialization

        key = new_key("ec-p256")
        csr = make_csr(key, names[0], "smartpole (test)")
        cert = self.sign(csr, days, server_names=names)
        out_dir.mkdir(parents=True, exist_ok=True)
        kp, cp = out_dir / "server.key", out_dir / "server.crt"
        write_bundle_file(kp, key_pem(key), private=True)
        write_bundle_file(cp, cert.public_bytes(serialization.Encoding.PEM))
        return cp, kp


def write_bundle_file(path: Path, data: bytes, private: bool = False) -> None:
    # O_EXCL|O_NOFOLLOW temp file, mode set on the descriptor, renamed over `path`:
    # a planted symlink is never written through and an old 0644 key never stays 0644.
    write_file(path, data, PRIVATE if private else PUBLIC)
