"""`polectl deploy`: build the firmware, sign it, put it on a board, check it.

Two ways onto the board (docs/deploy.md):

* over our own link (`--port`, a serial port or the sim's pty): the signed
  bundle goes through the update path into the inactive slot, the board
  checks its SHA-256, boots it on trial, and deploy confirms it once the new
  version says hello; an interrupted deploy resumes when run again;
* with `mpremote` (`--mpremote`), for a bare board with stock MicroPython:
  the loader and the factory image are copied to the filesystem root and
  their hashes read back from the board. Without `--run` the exact
  commands are printed.

The bundle is verified with the city's key **pinned in the pole's config**
(`[update] public_key` of `--config`), never with the key deploy was given
to sign with; its anti-rollback counter must be above the board's floor
(a signed recovery bundle and `--allow-downgrade` to go below it).

`polectl bundle keygen|build|verify` manage keys and signed bundles.

Registered in polectl/cli.py as::

    from polectl.deploy import bundle_app, deploy
    app.command()(deploy)
    app.add_typer(bundle_app, name="bundle")
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from edge_controller.config import LinkConfig
from edge_controller.link import codec
from edge_controller.update import bundle as bundles
from edge_controller.update import signing
from edge_controller.update.policy import PolicyError, pinned_key
from edge_controller.update.uploader import (
    SwitchReport,
    UpdateError,
    UpdateTap,
    Uploader,
    UploadReport,
)

ROOT = Path(__file__).resolve().parents[2]
BUILD_PY = ROOT / "firmware" / "build.py"
DEFAULT_OUT = ROOT / "build" / "deploy"
DEFAULT_CONFIG = Path("/etc/smartpole/pole.toml")
HASH_TAG = "SMARTPOLE-HASHES"

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
bundle_app = typer.Typer(help="Signing keys and signed firmware bundles.", no_args_is_help=True)


class DeployError(Exception):
    """A problem the installer can fix; `hint` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


# ---- build and sign ---------------------------------------------------------


def build_firmware(out_dir: Path, version: str | None, counter: int | None = None) -> Path:
    """firmware/build.py into `out_dir` (mpy-cross); returns the build directory."""
    if not BUILD_PY.exists():
        raise DeployError(f"{BUILD_PY} not found: building needs a source checkout",
                          "pass a signed bundle with --bundle instead")
    build_dir = out_dir / "firmware"
    cmd = [sys.executable, str(BUILD_PY), "--out", str(build_dir)]
    if version:
        cmd += ["--version", version]
    if counter is not None:
        cmd += ["--counter", str(counter)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise DeployError(f"firmware build failed:\n{res.stdout}{res.stderr}".rstrip(),
                          "fix the error above; `python firmware/build.py` reproduces it")
    return build_dir


def make_signed_bundle(build_dir: Path, key_path: Path, out_dir: Path,
                       downgrade_from: int | None = None) -> Path:
    """Pack and sign a build; writes X.spb and X.spb.sig, returns X.spb. With
    `downgrade_from`, a recovery bundle that may go below floors up to it."""
    try:
        key = signing.load_private(key_path)
    except FileNotFoundError:
        raise DeployError(f"signing key {key_path} not found",
                          "create one with `polectl bundle keygen KEYFILE`") from None
    data = bundles.build_bundle(build_dir, downgrade_from=downgrade_from)
    b = bundles.parse(data)
    path = out_dir / f"firmware-{b.version}.spb"
    path.write_bytes(data)
    signing.sig_path(path).write_bytes(signing.sign(data, key))
    return path


def load_verified(bundle_path: Path, pubkey: str | None = None, *,
                  config: Path | None = None) -> bundles.Bundle:
    """The bundle, verified with the key pinned in `config` (or, for `bundle
    verify` on a build machine, an explicit `pubkey`)."""
    try:
        if config is not None:
            key = pinned_key(config)
        elif pubkey is not None:
            key = signing.load_public(pubkey)
        else:  # pragma: no cover - the commands always pass one
            raise DeployError("no key to verify the bundle with", "pass --config")
    except PolicyError as e:
        raise DeployError(str(e), e.hint) from None
    except (OSError, ValueError) as e:
        raise DeployError(f"public key {pubkey}: {e}",
                          "give the city's Ed25519 public key (PEM file or 64 hex digits)"
                          ) from None
    try:
        return signing.read_signed(bundle_path, key)
    except FileNotFoundError:
        raise DeployError(f"bundle {bundle_path} not found", "check the path") from None
    except signing.SignatureError as e:
        raise DeployError(f"refused: {e}", "only a bundle signed with the city's key can be "
                          "deployed; get a freshly signed bundle") from None
    except bundles.BundleError as e:
        raise DeployError(f"refused: {e}", "rebuild the bundle") from None


# ---- over the link ----------------------------------------------------------


@dataclass
class LinkResult:
    port: str
    version_before: str
    version_after: str
    board_id: str
    bytes: int
    seconds: float
    rate_bps: float
    resumed_at: list[int]
    reboot_to_hello_s: float
    confirmed: bool
    sha256: str


async def deploy_over_link(port: str, b: bundles.Bundle, *, baudrate: int = 115200,
                           confirm: bool = True, connect_timeout_s: float = 10.0,
                           stall_timeout_s: float = 30.0, progress: bool = False,
                           allow_downgrade: bool = False) -> LinkResult:
    from edge_controller.link.client import LinkClient

    tap = UpdateTap()
    client = LinkClient(LinkConfig(port=port, baudrate=baudrate), "polectl-deploy", tap.on_event)
    task = asyncio.create_task(client.run(), name="deploy.link")
    try:
        up = await tap.wait(lambda: client.up or task.done(), connect_timeout_s)
        if task.done():
            exc = task.exception()
            raise DeployError(f"cannot open {port}: {exc}",
                              "check the port name, and stop any program that holds it "
                              "(the controller service owns the link on a live pole)")
        if not up:
            raise DeployError(f"no hello from a board on {port} within {connect_timeout_s:g} s",
                              "check the cable and the baud rate; is the board powered?")
        fw = client.session.firmware
        before, board_id = fw.version, fw.board_id
        if not fw.caps & codec.CAP_UPDATE:
            raise DeployError(f"the board on {port} (firmware {before}) has no update path",
                              "install the loader once with `polectl deploy --mpremote`")
        up_rep, sw = await _run_with_progress(
            Uploader(client, tap, stall_timeout_s=stall_timeout_s), b, confirm, progress,
            allow_downgrade)
        return LinkResult(port, before, sw.version, board_id, up_rep.size, up_rep.seconds,
                          up_rep.rate_bps, up_rep.resumed_at, sw.reboot_to_hello_s,
                          sw.confirmed, b.sha256.hex())
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _run_with_progress(upl: Uploader, b: bundles.Bundle, confirm: bool,
                             show: bool, allow_downgrade: bool = False,
                             ) -> tuple[UploadReport, SwitchReport]:
    if not show:
        return await upl.deploy(b, confirm=confirm, allow_downgrade=allow_downgrade)
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*cols, console=err, transient=False) as bar:
        t = bar.add_task(f"firmware {b.version}", total=b.size)
        res = await upl.deploy(b, lambda done, total: bar.update(t, completed=done),
                               confirm=confirm, allow_downgrade=allow_downgrade)
        bar.update(t, description=f"firmware {b.version}: switched")
    return res


# ---- mpremote (bare board) ---------------------------------------------------


def board_files(build_dir: Path) -> list[tuple[Path, str]]:
    """(local file, name on the board): the loader's main.py as source (MicroPython
    runs main.py, never main.mpy), every other module as .mpy, all at the root."""
    src_main = build_dir / "src" / "main.py"
    if not src_main.exists():
        raise DeployError(f"{build_dir} is not a firmware build (no src/main.py)",
                          "run `python firmware/build.py` or let deploy build it")
    files = [(src_main, "main.py")]
    files += [(p, p.name) for p in sorted(build_dir.glob("*.mpy")) if p.name != "main.mpy"]
    return files


def hash_script(names: list[str], root: str = "/") -> str:
    """MicroPython code for `mpremote exec`: drop the slot state (so the fresh
    factory image boots), then print the sha256 of each installed file."""
    return (
        "import os, hashlib, binascii, json\n"
        f"try:\n os.remove({root + 'slots/state.json'!r})\nexcept OSError:\n pass\n"
        "r = {}\n"
        f"for n in {names!r}:\n"
        " h = hashlib.sha256()\n"
        f" with open({root!r} + n, 'rb') as f:\n"
        "  while True:\n"
        "   b = f.read(512)\n"
        "   if not b:\n    break\n"
        "   h.update(b)\n"
        " r[n] = binascii.hexlify(h.digest()).decode()\n"
        f"print({HASH_TAG!r}, json.dumps(r))\n"
    )


def mpremote_commands(build_dir: Path, port: str, mpremote: str = "mpremote") -> list[list[str]]:
    """The exact invocations for a bare board: copy, hash check, reset."""
    files = board_files(build_dir)
    base = [mpremote, "connect", port]
    return [
        [*base, "fs", "cp", *[str(p) for p, _ in files], ":"],
        [*base, "exec", hash_script([n for _, n in files])],
        [*base, "reset"],
    ]


def expected_hashes(build_dir: Path) -> dict[str, str]:
    return {n: hashlib.sha256(p.read_bytes()).hexdigest() for p, n in board_files(build_dir)}


def parse_hashes(output: str) -> dict[str, str]:
    for line in output.splitlines():
        if line.startswith(HASH_TAG + " "):
            got = json.loads(line[len(HASH_TAG) + 1:])
            if isinstance(got, dict):
                return {str(k): str(v) for k, v in got.items()}
    raise DeployError("the board printed no hashes",
                      "is this a MicroPython board? try `mpremote connect PORT repl`")


def check_hashes(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    """Names whose hash on the board differs from the build (or is missing)."""
    return sorted(n for n, h in expected.items() if got.get(n) != h)


def run_mpremote(cmds: list[list[str]], build_dir: Path) -> dict[str, Any]:
    for cmd in cmds:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise DeployError(f"{cmd[0]} not found", "pip install mpremote") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"{shlex.join(cmd[:4])} timed out",
                              "check the USB cable and port; press the board's reset") from None
        if res.returncode != 0:
            raise DeployError(f"{shlex.join(cmd[:4])} failed: {res.stderr.strip()}",
                              "check the port (`mpremote connect list`) and that no "
                              "other program holds it")
        if cmd[3] == "exec":
            bad = check_hashes(expected_hashes(build_dir), parse_hashes(res.stdout))
            if bad:
                raise DeployError(f"hash mismatch on the board for {', '.join(bad)}",
                                  "run the deploy again; if it persists the flash is failing")
    return {"ok": True, "files": len(board_files(build_dir))}


# ---- CLI ----------------------------------------------------------------------


def _fail(e: DeployError | UpdateError, as_json: bool) -> typer.Exit:
    hint = e.hint
    msg = str(e.args[0]) if e.args else str(e)
    if as_json:
        out.print_json(json.dumps({"ok": False, "error": msg, "hint": hint,
                                   "code": getattr(e, "code", "")}))
    else:
        err.print(f"[red]deploy failed[/]: {msg}")
        if hint:
            err.print(f"[yellow]fix[/]: {hint}")
    return typer.Exit(1)


# Long: most of it is the option list typer turns into the command line.
def deploy(
    port: Annotated[str | None, typer.Option(
        "--port", "-p", help="Serial port of the board (or the sim's pty path).")] = None,
    key: Annotated[Path | None, typer.Option(
        help="Ed25519 private key (PEM) that signs the freshly built bundle.")] = None,
    config: Annotated[Path, typer.Option(
        "--config", help="The pole's config: the bundle must verify with the update key "
        "pinned there ([update] public_key), whatever key signed it.")] = DEFAULT_CONFIG,
    bundle: Annotated[Path | None, typer.Option(
        help="Deploy this signed bundle (X.spb beside X.spb.sig) instead of building.")]
        = None,
    version: Annotated[str | None, typer.Option(
        help="Firmware version to build in (default: FW_VERSION of firmware/src/app.py).")]
        = None,
    counter: Annotated[int | None, typer.Option(
        help="Anti-rollback counter to build in (default: FW_COUNTER of app.py); must be "
        "above the board's floor.")] = None,
    allow_downgrade: Annotated[bool, typer.Option(
        help="Install a signed recovery bundle (built with --downgrade-from) whose counter "
        "is not above the board's floor.")] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Where builds and bundles go.")]
        = DEFAULT_OUT,
    baudrate: Annotated[int, typer.Option(help="Link speed.")] = 115200,
    confirm: Annotated[bool, typer.Option(
        help="Confirm the new image once it says hello (without: it rolls back at its "
        "trial deadline).")] = True,
    use_mpremote: Annotated[bool, typer.Option(
        "--mpremote", help="Bare board: install loader + factory image with mpremote.")]
        = False,
    run: Annotated[bool, typer.Option(
        help="With --mpremote: run the commands (default: print them).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result.")] = False,
) -> None:
    """Build the firmware with mpy-cross, sign it, and put it on a board over the link
    (verified, switched, confirmed) or with mpremote for a bare board."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if use_mpremote:
            build_dir = build_firmware(out_dir, version)
            cmds = mpremote_commands(build_dir, port or "auto")
            if not run:
                if as_json:
                    out.print_json(json.dumps({"ok": True, "commands": cmds,
                                               "hashes": expected_hashes(build_dir)}))
                else:
                    for c in cmds:
                        print(shlex.join(c))
                return
            done = run_mpremote(cmds, build_dir)
            if as_json:
                out.print_json(json.dumps(done))
            else:
                out.print(f"[green]OK[/] {done['files']} files on the board, hashes verified; "
                          "reset")
            return
        if port is None:
            raise DeployError("no --port given", "pass the board's serial port, e.g. "
                              "--port /dev/ttyUSB0, or --mpremote for a bare board")
        if bundle is None:
            if key is None:
                raise DeployError("nothing to sign with",
                                  "pass --key PRIVATE.pem (create one with `polectl bundle "
                                  "keygen`) or a signed --bundle")
            bundle = make_signed_bundle(build_firmware(out_dir, version, counter), key,
                                        out_dir)
        # Never the public half of --key: a key that signs is not thereby the city's.
        b = load_verified(bundle, config=config)
        t0 = time.monotonic()
        res = asyncio.run(deploy_over_link(port, b, baudrate=baudrate, confirm=confirm,
                                           progress=not as_json,
                                           allow_downgrade=allow_downgrade))
    except (DeployError, UpdateError) as e:
        raise _fail(e, as_json) from None
    if as_json:
        out.print_json(json.dumps({"ok": True, **res.__dict__,
                                   "total_s": round(time.monotonic() - t0, 3)}))
    else:
        out.print(f"[green]OK[/] {res.port}: {res.version_before} -> {res.version_after} "
                  f"({res.bytes} bytes at {res.rate_bps / 1000:.1f} kB/s, SHA-256 checked on "
                  f"the board, switched in {res.reboot_to_hello_s:.2f} s, "
                  f"{'confirmed' if res.confirmed else 'on trial, NOT confirmed'})")


@bundle_app.command("keygen")
def keygen(
    private: Annotated[Path, typer.Argument(help="Private key file to write (PEM, 0600).")],
    public: Annotated[Path | None, typer.Option(
        help="Public key file (default: PRIVATE with .pub).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Create an Ed25519 signing key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from polectl.keyfile import PRIVATE, PUBLIC, write_file

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    try:
        # O_EXCL|O_NOFOLLOW, 0600 set on the descriptor: an old 0644 file is replaced by a
        # new 0600 one (--force), a planted symlink is never written through.
        private.parent.mkdir(parents=True, exist_ok=True)
        write_file(private, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), PRIVATE, exclusive=not force)
        write_file(public or private.with_suffix(".pub"), pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            PUBLIC, exclusive=not force)
    except FileExistsError as e:
        err.print(f"[red]refused[/]: {e}")
        raise typer.Exit(1) from None
    out.print(f"[green]OK[/] {private} (keep it secret), {public or private.with_suffix('.pub')}"
              f" (key id {signing.key_id(pub)})")


@bundle_app.command("build")
def bundle_build(
    key: Annotated[Path, typer.Option(help="Ed25519 private key (PEM).")],
    version: Annotated[str | None, typer.Option(help="Firmware version to build in.")] = None,
    counter: Annotated[int | None, typer.Option(
        help="Anti-rollback counter to build in (default: FW_COUNTER of app.py).")] = None,
    downgrade_from: Annotated[int | None, typer.Option(
        help="Recovery bundle: may be installed below board floors up to this counter "
        "(signed into the manifest; deploy needs --allow-downgrade).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = DEFAULT_OUT,
) -> None:
    """Build the firmware and write a signed bundle (X.spb + X.spb.sig)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = make_signed_bundle(build_firmware(out_dir, version, counter), key, out_dir,
                                  downgrade_from)
    except (DeployError, bundles.BundleError, signing.KeyFileError) as e:
        err.print(f"[red]bundle failed[/]: {e}")
        raise typer.Exit(1) from None
    b = bundles.parse(path.read_bytes())
    out.print(f"[green]OK[/] {path} ({b.size} bytes, {len(b.files)} modules, version "
              f"{b.version}, counter {b.counter}"
              + (f", recovery from {b.downgrade_from}" if b.downgrade_from is not None else "")
              + f", sha256 {b.sha256.hex()[:16]}...)")


@bundle_app.command("verify")
def bundle_verify(
    path: Annotated[Path, typer.Argument(help="Bundle (X.spb, with X.spb.sig beside it).")],
    pubkey: Annotated[str | None, typer.Option(
        help="Public key (PEM file or 64 hex digits).")] = None,
    config: Annotated[Path | None, typer.Option(
        help="A pole's config: verify with the key pinned there, as deploy does.")] = None,
) -> None:
    """Check a bundle's signature and contents as the controller does."""
    try:
        if (pubkey is None) == (config is None):
            raise DeployError("give exactly one of --pubkey and --config",
                              "--config checks with the key a pole pins")
        b = load_verified(path, pubkey, config=config)
    except DeployError as e:
        raise _fail(e, False) from None
    out.print(f"[green]OK[/] {path}: version {b.version}, counter {b.counter}, "
              f"{len(b.files)} modules, signature valid")
