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
| `commands.pub` | the city's command-signing public key (`--command-key`, or the test CA's) |
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
import json
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from edge_controller.config import POLE_ID_RE, ConfigError, parse
from polectl.console import err, fail, out
from polectl.pki import (
    KeyType,
    LocalCA,
    ProvisionError,
    fingerprint,
    key_pem,
    make_csr,
    new_key,
    write_bundle_file,
    x509_module,
)

BUNDLE_FILES = ("pole.key", "pole.csr", "pole.crt", "ca.pem", "commands.pub", "pole.toml",
                "identity.json")

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
${camera}${update}${commands}"""


def load_command_key(path: Path) -> bytes:
    """The city's command-signing public key (Ed25519, PEM), as the pole will load it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        pem = path.read_bytes()
        key = load_pem_public_key(pem)
    except (OSError, ValueError) as e:
        raise ProvisionError(f"--command-key {path}: not a readable PEM public key ({e})"
                             ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ProvisionError(f"--command-key {path}: commands are signed with Ed25519; this "
                             f"is a {type(key).__name__}")
    return pem


def _pub_fingerprint(pem: bytes) -> str:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return fingerprint(load_pem_public_key(pem))


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
    signed_commands: bool = True  # [commands] with commands.pub and require_signature


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
    # Commands: signed by the city's key, required (docs/security.md, "Commands").
    commands = (f"\n[commands]\npublic_key = {_toml_str(d + '/commands.pub')}\n"
                "require_signature = true\n" if ident.signed_commands else "")
    values = {
        "update": update, "update_public_key": ident.update_key or "",
        "commands": commands, "commands_public_key": f"{d}/commands.pub",
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
    if commands and "${commands" not in text and "[commands]" not in text:
        text += "${commands}"  # nor does an older template leave commands unsigned
    tpl = string.Template(text)
    try:
        return tpl.substitute(values)
    except KeyError as e:
        raise ProvisionError(f"the template uses ${{{e.args[0]}}}, which provision does not "
                             f"know; use one of: {', '.join(sorted(values))}") from None
    except ValueError as e:
        raise ProvisionError(f"the template has a stray '$' ({e}); write $$ for a "
                             "literal dollar sign") from None


# Long: checks, key and CSR, CA signature, config and identity: one ordered bundle write.
def provision(ident: Identity, out_dir: Path, *, test_ca: Path | None = None,
              ca_cert: Path | None = None, template: Path | None = None,
              force: bool = False, command_key: Path | None = None) -> dict[str, Any]:
    """Write the bundle; returns what `--json` prints.

    `command_key`: the city's command-signing public key (PEM). Without it, a test CA's
    own test command key (labs); with neither, `ident.signed_commands` must be False."""
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
            x509_module().load_pem_x509_certificate(ca_pem)
        except (OSError, ValueError) as e:
            raise ProvisionError(f"--ca-cert {ca_cert}: not a readable PEM certificate ({e})"
                                 ) from None
    cmd_pub: bytes | None = None
    if command_key is not None:
        cmd_pub = load_command_key(command_key)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ca: LocalCA | None = None
    ca_created = False
    if test_ca is not None:
        ca, ca_created = LocalCA.load_or_create(test_ca)
        if cmd_pub is None and ident.signed_commands:
            cmd_pub = ca.test_command_key()
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
    if cmd_pub is None and ident.signed_commands and test_ca is None:
        raise ProvisionError(
            "give --command-key city-commands.pub (the public half of the Ed25519 key your "
            "backend signs commands with): a provisioned pole runs signed commands only. For "
            "a lab pole that runs anyone's commands pass --unsigned-commands instead.")

    from cryptography.hazmat.primitives import serialization

    key = new_key(ident.key_type)
    csr = make_csr(key, ident.pole_id, ident.org)
    bundle.mkdir(parents=True, exist_ok=True)
    for f in existing:  # --force: nothing of the old bundle may survive
        (bundle / f).unlink()
    write_bundle_file(bundle / "pole.key", key_pem(key), private=True)
    write_bundle_file(bundle / "pole.csr", csr.public_bytes(serialization.Encoding.PEM))
    cert_info: dict[str, Any] | None = None
    if ca is not None:
        cert = ca.sign(csr, ident.cert_days)
        write_bundle_file(bundle / "pole.crt", cert.public_bytes(serialization.Encoding.PEM))
        write_bundle_file(bundle / "ca.pem", ca.cert.public_bytes(serialization.Encoding.PEM))
        cert_info = {"serial": f"{cert.serial_number:x}",
                     "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "issuer": cert.issuer.rfc4514_string(),
                     "subject": cert.subject.rfc4514_string()}
    elif ca_pem is not None:
        write_bundle_file(bundle / "ca.pem", ca_pem)
    if cmd_pub is not None:
        write_bundle_file(bundle / "commands.pub", cmd_pub)
    write_bundle_file(bundle / "pole.toml", text.encode())
    ident_doc = {
        "pole_id": ident.pole_id, "created": created,
        "location": {"latitude": ident.latitude, "longitude": ident.longitude,
                     "timezone": ident.timezone},
        "broker_url": ident.broker_url, "key_type": ident.key_type,
        "public_key_fingerprint": fingerprint(key.public_key()),
        "certificate": cert_info, "test_ca": str(test_ca) if test_ca else None,
        "install_dir": ident.install_dir,
        "commands": ({"require_signature": True, "key_fingerprint": _pub_fingerprint(cmd_pub)}
                     if cmd_pub is not None else {"require_signature": False}),
    }
    write_bundle_file(bundle / "identity.json", json.dumps(ident_doc, indent=1).encode() + b"\n")
    files = {f: str(bundle / f) for f in BUNDLE_FILES if (bundle / f).exists()}
    return {"ok": True, "bundle": str(bundle), "files": files, "ca_created": ca_created,
            **ident_doc}


# Long: most of it is the option list typer turns into the command line.
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
    command_key: Annotated[Path | None, typer.Option(
        help="The city's command-signing public key (Ed25519 PEM): copied into the bundle "
        "as commands.pub; the pole runs only commands signed with it. With --test-ca and "
        "without this, the test CA folder's own test key (commands.key/.pub).")] = None,
    unsigned_commands: Annotated[bool, typer.Option(
        "--unsigned-commands", help="A lab pole that runs anyone's commands (no [commands] "
        "section; the pole warns at every start). Never for a street pole.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle (new "
                                        "key: any certificate issued for the old one stops "
                                        "matching).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create a pole's identity (key pair, CSR or a test-CA certificate, broker URL,
    location, the city's command key) and its config bundle; refuses to overwrite one
    without --force. `polectl provision revoke POLE` revokes a pole's certificate."""
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
    if unsigned_commands and command_key is not None:
        err.print("[red]--unsigned-commands[/] and --command-key exclude each other")
        raise typer.Exit(2)
    ident = Identity(pole_id, broker, lat, lon, tz, link_port, camera, install_dir,
                     key_type, org, days, pinned,  # type: ignore[arg-type]
                     signed_commands=not unsigned_commands)
    try:
        res = provision(ident, out_dir, test_ca=test_ca, ca_cert=ca_cert, template=template,
                        force=force, command_key=command_key)
    except ProvisionError as e:
        fail(f"provision {pole_id}", e, as_json)
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


# ---- revocation ---------------------------------------------------------------------------


def revoke(pole_id: str, ca_dir: Path, out_dir: Path, serial: str | None = None,
           reason: str = "") -> dict[str, Any]:
    """Add the pole's certificate to the CA folder's revocation list and rewrite crl.pem."""
    x509 = x509_module()
    ca = LocalCA.load_or_create(ca_dir)[0] if (ca_dir / "ca.key").exists() else None
    if ca is None:
        raise ProvisionError(f"{ca_dir}: no ca.key/ca.pem; point --ca at the CA folder that "
                             "issued the pole's certificate")
    if serial is None:
        crt = out_dir / pole_id / "pole.crt"
        try:
            cert = x509.load_pem_x509_certificate(crt.read_bytes())
        except (OSError, ValueError) as e:
            raise ProvisionError(f"{crt}: no readable certificate ({e}); give --serial HEX "
                                 "(the certificate's serial number)") from None
        serial = f"{cert.serial_number:x}"
    try:
        int(serial, 16)
    except ValueError:
        raise ProvisionError(f"--serial {serial!r}: a hexadecimal serial number") from None
    revoked = ca.revoked()
    if any(int(r["serial"], 16) == int(serial, 16) for r in revoked):
        return {"ok": True, "pole_id": pole_id, "serial": serial, "already": True,
                "crl": str(ca.crl_path), "revoked": len(revoked)}
    revoked.append({"serial": serial, "pole_id": pole_id, "reason": reason,
                    "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    crl = ca.write_crl(revoked)
    return {"ok": True, "pole_id": pole_id, "serial": serial, "already": False,
            "crl": str(crl), "revoked": len(revoked)}


def revoke_command(
    pole_id: Annotated[str, typer.Argument(help="The pole whose certificate to revoke.")],
    ca: Annotated[Path, typer.Option(help="The CA folder (ca.key, ca.pem) that issued it; "
                                     "its crl.pem is rewritten.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundles folder: the serial is read "
                                          "from OUT/<pole_id>/pole.crt.")] = Path("bundles"),
    serial: Annotated[str | None, typer.Option(help="The certificate's serial (hex), when "
                                               "its bundle is not at hand.")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the record (revoked.json).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Revoke a pole's certificate: add it to the CA's CRL (crl.pem), which the broker
    reads (`crlfile`); copy it there and reload mosquitto (SIGHUP)."""
    try:
        res = revoke(pole_id, ca, out_dir, serial, reason)
    except ProvisionError as e:
        fail(f"revoke {pole_id}", e, as_json)
    if as_json:
        out.print_json(json.dumps(res))
        return
    word = "was already revoked" if res["already"] else "revoked"
    out.print(f"[green]OK[/] {pole_id} (serial {res['serial']}) {word}; {res['crl']} lists "
              f"{res['revoked']} certificate(s)")
    out.print("next: install it as the broker's crlfile (/etc/mosquitto/smartpole/crl.pem) "
              "and reload: systemctl reload mosquitto (or kill -HUP); also remove the pole's "
              "city key trust if the pole itself is lost (docs/security.md)")


class _DefaultCreate(typer.core.TyperGroup):
    """`polectl provision POLE ...` creates a bundle; `polectl provision revoke POLE` revokes.
    (So a pole cannot be called "revoke".)"""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["new", *args]
        return super().parse_args(ctx, args)


provision_app = typer.Typer(cls=_DefaultCreate, no_args_is_help=True,
                            help="Create a pole's bundle (`polectl provision POLE --broker "
                            "URL ...`), or revoke its certificate (`polectl provision revoke "
                            "POLE --ca DIR`).")
provision_app.command("new")(provision_command)
provision_app.command("revoke")(revoke_command)
