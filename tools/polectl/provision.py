"""`polectl provision`: a pole's identity and its config bundle.

    polectl provision pole-0042 --broker mqtts://mqtt.city.example:8883 \\
        --lat 52.52 --lon 13.405 --tz Europe/Berlin --ca-cert city-ca.pem
    polectl provision pole-0042 --broker mqtts://127.0.0.1:8883 --test-ca lab-ca/

writes `<out>/<pole_id>/`:

| file | what |
| --- | --- |
| `pole.key` | the pole's private key (PEM, PKCS#8, mode 0600); never leaves the bundle |
| `pole.csr` | certificate signing request (CN = pole id) for the city's PKI |
| `pole.crt` | client certificate, when a local test CA (`--test-ca DIR`) signed the CSR |
| `ca.pem` | the CA that signs the broker's certificate (`--ca-cert`, or the test CA) |
| `pole.toml` | the pole's config, from a template, validated like the controller does |
| `identity.json` | id, location, key type, public-key fingerprint, certificate facts |

The certificate's CN is the pole id, so a broker that takes the identity from the
certificate (mosquitto `use_identity_as_username`) can give each pole its own
subtree with an ACL pattern (docs/mqtt.md, access control). An existing bundle is
never replaced without `--force` (its key would no longer match a certificate
already issued for it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from edge_controller.config import POLE_ID_RE, ConfigError, parse

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

KeyType = Literal["ec-p256", "ed25519"]
BUNDLE_FILES = ("pole.key", "pole.csr", "pole.crt", "ca.pem", "pole.toml", "identity.json")

DEFAULT_TEMPLATE = """\
# Pole ${pole_id}: written by `polectl provision` on ${created}.
# Check it with `polectl config check pole.toml`; every key is in docs/config.md.

[pole]
id = "${pole_id}"
${location}timezone = "${timezone}"

[link]
port = "${link_port}"

[mqtt]
url = "${broker_url}"
${tls}
[camera]
${camera}${update}"""


class ProvisionError(Exception):
    """Something the installer can fix; the message says what and how."""


def _crypto() -> Any:
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
    x509 = _crypto()
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

    @staticmethod
    def load_or_create(directory: Path) -> tuple[LocalCA, bool]:
        x509 = _crypto()
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
        _write(kp, key_pem(key), private=True)
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return LocalCA(key, cert, directory), True

    def sign(self, csr: Any, days: int, server_names: list[str] | None = None) -> Any:
        """A client certificate for `csr` (or a server one with `server_names` as SANs)."""
        x509 = _crypto()
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
        _write(kp, key_pem(key), private=True)
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cp, kp


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


@dataclass
class Identity:
    pole_id: str
    broker_url: str
    latitude: float | None = None
    longitude: float | None = None
    timezone: str = "UTC"
    link_port: str = "/dev/ttyUSB0"
    camera_source: str | None = None
    install_dir: str = "/etc/smartpole"
    key_type: KeyType = "ec-p256"
    org: str = "smartpole"
    cert_days: int = 825
    update_key: str | None = None  # the city's update key, 64 hex digits (pinned)


def render_config(ident: Identity, template: str | None, with_cert: bool, with_ca: bool,
                  created: str) -> str:
    """The pole's TOML from `template` (string.Template placeholders; see --template)."""
    tls_lines = ""
    d = ident.install_dir.rstrip("/")
    ca_file = f"{d}/ca.pem"
    cert_file = f"{d}/pole.crt"
    key_file = f"{d}/pole.key"
    if ident.broker_url.startswith("mqtts://"):
        if with_ca:
            tls_lines += f"ca_file = {_toml_str(ca_file)}\n"
        tls_lines += (f"cert_file = {_toml_str(cert_file)}\n"
                      f"key_file = {_toml_str(key_file)}\n")
    location = ""
    if ident.latitude is not None and ident.longitude is not None:
        location = f"latitude = {ident.latitude!r}\nlongitude = {ident.longitude!r}\n"
    camera = (f"source = {_toml_str(ident.camera_source)}\n" if ident.camera_source
              else "enabled = false\n")
    # The city's update key, pinned in the pole's config: deploy verifies every
    # bundle with it and no other (docs/security.md).
    update = (f"\n[update]\npublic_key = {_toml_str(ident.update_key)}\n"
              if ident.update_key else "")
    values = {
        "update": update, "update_public_key": ident.update_key or "",
        "pole_id": ident.pole_id, "created": created, "location": location,
        "timezone": ident.timezone, "link_port": ident.link_port,
        "broker_url": ident.broker_url, "tls": tls_lines, "camera": camera,
        "latitude": "" if ident.latitude is None else repr(ident.latitude),
        "longitude": "" if ident.longitude is None else repr(ident.longitude),
        "camera_source": ident.camera_source or "", "ca_file": ca_file,
        "cert_file": cert_file, "key_file": key_file,
        "install_dir": d,
    }
    text = template if template is not None else DEFAULT_TEMPLATE
    if update and "${update" not in text:
        text += "${update}"  # a custom template that predates the key still pins it
    tpl = string.Template(text)
    try:
        return tpl.substitute(values)
    except KeyError as e:
        raise ProvisionError(f"the template uses ${{{e.args[0]}}}, which provision does not "
                             f"know; use one of: {', '.join(sorted(values))}") from None
    except ValueError as e:
        raise ProvisionError(f"the template has a stray '$' ({e}); write $$ for a "
                             "literal dollar sign") from None


def provision(ident: Identity, out_dir: Path, *, test_ca: Path | None = None,
              ca_cert: Path | None = None, template: Path | None = None,
              force: bool = False) -> dict[str, Any]:
    """Write the bundle; returns what `--json` prints."""
    if not re.fullmatch(POLE_ID_RE, ident.pole_id):
        raise ProvisionError(f"pole id {ident.pole_id!r}: use 1-63 lowercase letters, digits "
                             "and '-', not starting with '-' (e.g. pole-0042)")
    if not ident.broker_url.startswith(("mqtt://", "mqtts://")):
        raise ProvisionError(f"--broker {ident.broker_url!r}: use mqtts://host:port (TLS) or "
                             "mqtt://host:port")
    if test_ca is not None and ca_cert is not None:
        raise ProvisionError("--test-ca and --ca-cert exclude each other: the test CA's own "
                             "certificate goes into the bundle")
    bundle = out_dir / ident.pole_id
    existing = [f for f in BUNDLE_FILES if (bundle / f).exists()]
    if existing and not force:
        raise ProvisionError(
            f"{bundle} already holds a bundle ({', '.join(existing)}); replacing it makes a new "
            "key that no longer matches a certificate issued for the old one. Pass --force to "
            "replace it, or choose another --out.")
    tpl_text = None
    if template is not None:
        try:
            tpl_text = template.read_text()
        except OSError as e:
            raise ProvisionError(f"--template {template}: {e.strerror or e}") from None
    ca_pem: bytes | None = None
    if ca_cert is not None:
        try:
            ca_pem = ca_cert.read_bytes()
            _crypto().load_pem_x509_certificate(ca_pem)
        except (OSError, ValueError) as e:
            raise ProvisionError(f"--ca-cert {ca_cert}: not a readable PEM certificate ({e})"
                                 ) from None
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ca: LocalCA | None = None
    ca_created = False
    if test_ca is not None:
        ca, ca_created = LocalCA.load_or_create(test_ca)
    text = render_config(ident, tpl_text, with_cert=ca is not None,
                         with_ca=ca is not None or ca_pem is not None, created=created)
    try:
        cfg = parse(tomllib.loads(text), str(bundle / "pole.toml"))
    except tomllib.TOMLDecodeError as e:
        raise ProvisionError(f"the template renders invalid TOML: {e}") from None
    except ConfigError as e:
        raise ProvisionError("the rendered config is invalid:\n" + "\n".join(
            f"  {k}: {r}" for k, r in e.problems)) from None
    if cfg.pole.id != ident.pole_id:
        raise ProvisionError(f"the template sets pole.id = {cfg.pole.id!r}; use ${{pole_id}}")

    from cryptography.hazmat.primitives import serialization

    key = new_key(ident.key_type)
    csr = make_csr(key, ident.pole_id, ident.org)
    bundle.mkdir(parents=True, exist_ok=True)
    for f in existing:  # --force: nothing of the old bundle may survive
        (bundle / f).unlink()
    _write(bundle / "pole.key", key_pem(key), private=True)
    _write(bundle / "pole.csr", csr.public_bytes(serialization.Encoding.PEM))
    cert_info: dict[str, Any] | None = None
    if ca is not None:
        cert = ca.sign(csr, ident.cert_days)
        _write(bundle / "pole.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(bundle / "ca.pem", ca.cert.public_bytes(serialization.Encoding.PEM))
        cert_info = {"serial": f"{cert.serial_number:x}",
                     "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "issuer": cert.issuer.rfc4514_string(),
                     "subject": cert.subject.rfc4514_string()}
    elif ca_pem is not None:
        _write(bundle / "ca.pem", ca_pem)
    _write(bundle / "pole.toml", text.encode())
    ident_doc = {
        "pole_id": ident.pole_id, "created": created,
        "location": {"latitude": ident.latitude, "longitude": ident.longitude,
                     "timezone": ident.timezone},
        "broker_url": ident.broker_url, "key_type": ident.key_type,
        "public_key_fingerprint": fingerprint(key.public_key()),
        "certificate": cert_info, "test_ca": str(test_ca) if test_ca else None,
        "install_dir": ident.install_dir,
    }
    _write(bundle / "identity.json", json.dumps(ident_doc, indent=1).encode() + b"\n")
    files = {f: str(bundle / f) for f in BUNDLE_FILES if (bundle / f).exists()}
    return {"ok": True, "bundle": str(bundle), "files": files, "ca_created": ca_created,
            **ident_doc}


def provision_command(
    pole_id: Annotated[str, typer.Argument(help="Pole id, e.g. pole-0042 (lowercase letters, "
                                           "digits, '-'; part of every MQTT topic).")],
    broker: Annotated[str, typer.Option(help="Broker URL the pole connects to: "
                                        "mqtts://host:port (TLS) or mqtt://host:port.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundles go to OUT/<pole_id>/.")]
        = Path("bundles"),
    lat: Annotated[float | None, typer.Option(min=-90, max=90, help="Latitude, degrees.")]
        = None,
    lon: Annotated[float | None, typer.Option(min=-180, max=180, help="Longitude, degrees.")]
        = None,
    tz: Annotated[str, typer.Option(help="IANA time zone, e.g. Europe/Berlin.")] = "UTC",
    link_port: Annotated[str, typer.Option(help="Serial device of the I/O board on the "
                                           "edge computer.")] = "/dev/ttyUSB0",
    camera: Annotated[str | None, typer.Option(help="Camera source (rtsp://..., v4l2:0, "
                                               "file:PATH); none: camera disabled.")] = None,
    key_type: Annotated[str, typer.Option(help="ec-p256 (widest TLS support) or ed25519.")]
        = "ec-p256",
    test_ca: Annotated[Path | None, typer.Option(help="Sign the CSR with the local test CA "
                                                 "in this folder (created when empty). Labs "
                                                 "and simulation only.")] = None,
    ca_cert: Annotated[Path | None, typer.Option(help="The city's CA certificate (PEM) that "
                                                 "signs the broker's certificate; copied into "
                                                 "the bundle as ca.pem.")] = None,
    template: Annotated[Path | None, typer.Option(help="Config template (TOML with "
                                                  "${pole_id}, ${broker_url}, ${ca_file}, ... "
                                                  "placeholders).")] = None,
    install_dir: Annotated[str, typer.Option(help="Where the bundle will live on the pole "
                                             "(paths in pole.toml).")] = "/etc/smartpole",
    org: Annotated[str, typer.Option(help="Organisation in the certificate subject.")]
        = "smartpole",
    days: Annotated[int, typer.Option(min=1, max=3650, help="Test-CA certificate "
                                      "validity, days.")] = 825,
    update_key: Annotated[str | None, typer.Option(
        help="The city's firmware-update public key (PEM file or 64 hex digits), pinned in "
        "pole.toml as [update] public_key.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle (new "
                                        "key: any certificate issued for the old one stops "
                                        "matching).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create a pole's identity (key pair, CSR or a test-CA certificate, broker URL,
    location) and its config bundle; refuses to overwrite one without --force."""
    if key_type not in ("ec-p256", "ed25519"):
        err.print(f"[red]--key-type[/] {key_type!r}: use ec-p256 or ed25519")
        raise typer.Exit(2)
    if (lat is None) != (lon is None):
        err.print("[red]--lat/--lon[/]: give both or neither")
        raise typer.Exit(2)
    pinned = None
    if update_key is not None:
        from cryptography.hazmat.primitives import serialization

        from edge_controller.update.signing import load_public

        try:
            pinned = load_public(update_key).public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
        except (OSError, ValueError) as e:
            err.print(f"[red]--update-key[/] {update_key}: {e}")
            raise typer.Exit(2) from None
    ident = Identity(pole_id, broker, lat, lon, tz, link_port, camera, install_dir,
                     key_type, org, days, pinned)  # type: ignore[arg-type]
    try:
        res = provision(ident, out_dir, test_ca=test_ca, ca_cert=ca_cert, template=template,
                        force=force)
    except ProvisionError as e:
        if as_json:
            out.print_json(json.dumps({"ok": False, "error": str(e)}))
        else:
            err.print(f"[red]provision {pole_id}[/]: {e}")
        raise typer.Exit(2) from None
    if as_json:
        out.print_json(json.dumps(res))
        return
    if res["ca_created"]:
        err.print(f"[yellow]created a new test CA in {test_ca}[/] (labs and simulation "
                  "only; never for real poles)")
    out.print(f"[green]OK[/] bundle for {pole_id} in {res['bundle']}: "
              f"{', '.join(Path(f).name for f in res['files'].values())}")
    out.print(f"key {res['key_type']} {res['public_key_fingerprint']}")
    if res["certificate"]:
        out.print(f"certificate {res['certificate']['subject']} until "
                  f"{res['certificate']['not_after']} (test CA)")
    else:
        out.print(f"next: send {res['files']['pole.csr']} to the city PKI and put the "
                  "certificate it returns next to it as pole.crt")
