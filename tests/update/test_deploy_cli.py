"""`polectl deploy` and `polectl bundle`: over our link against the simulated
board, the exact mpremote invocations for a bare board, and errors that
say how to fix them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from polectl.deploy import (
    HASH_TAG,
    DeployError,
    bundle_app,
    check_hashes,
    deploy,
    expected_hashes,
    hash_script,
    mpremote_commands,
    parse_hashes,
    run_mpremote,
)
from polesim.firmware import find_micropython
from typer.testing import CliRunner

from edge_controller.update import bundle as bundles
from edge_controller.update import signing
from tests.update.conftest import BoardFactory, Builds, Keys, slot_verified

app = typer.Typer()
app.command()(deploy)
app.add_typer(bundle_app, name="bundle")
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    """`polectl deploy ARGS`, or `polectl bundle ...` when ARGS starts with bundle."""
    argv = list(args) if args and args[0] == "bundle" else ["deploy", *args]
    res = runner.invoke(app, argv)
    return res.exit_code, res.output


def test_deploy_over_the_link(make_board: BoardFactory, builds: Builds, keys: Keys,
                              pole_config: Path, tmp_path: Path) -> None:
    board = make_board()
    code, out = cli("--port", board.wire.ctl_path, "--key", str(keys.private),
                    "--version", "9.3.0-cli", "--counter", "5", "--config", str(pole_config),
                    "--out", str(tmp_path), "--json")
    assert code == 0, out
    res = json.loads(out)
    assert res["ok"] and res["version_before"] == builds.old_version
    assert res["version_after"] == "9.3.0-cli" and res["confirmed"]
    assert board.state()["active"] == "a" and slot_verified(board.slots, "a")
    spb = tmp_path / "firmware-9.3.0-cli.spb"
    assert res["sha256"] == bundles.parse(spb.read_bytes()).sha256.hex()
    assert signing.sig_path(spb).stat().st_size == 64
    # The same signed bundle again, checked with the key the pole's config pins: the
    # board runs exactly this image already, so nothing moves.
    code, out = cli("--port", board.wire.ctl_path, "--bundle", str(spb),
                    "--config", str(pole_config))
    assert code == 0, out
    assert "9.3.0-cli -> 9.3.0-cli" in out and board.fw.reboots == 1


def test_tampered_bundle_is_refused_before_the_link(new_bundle: bundles.Bundle, keys: Keys,
                                                    pole_config: Path, tmp_path: Path) -> None:
    spb = tmp_path / "fw.spb"
    data = bytearray(new_bundle.data)
    signing.sig_path(spb).write_bytes(signing.sign(bytes(data),
                                                   signing.load_private(keys.private)))
    data[-10] ^= 1
    spb.write_bytes(bytes(data))
    # No board on this port: the signature check comes first.
    code, out = cli("--port", "/dev/nonexistent", "--bundle", str(spb),
                    "--config", str(pole_config), "--json")
    assert code == 1
    res = json.loads(out)
    assert not res["ok"] and "signature does not verify" in res["error"]
    assert "signed with the city's key" in res["hint"]


def test_errors_suggest_the_fix(keys: Keys, tmp_path: Path, new_bundle: bundles.Bundle,
                                pole_config: Path) -> None:
    code, out = cli("--key", str(keys.private))
    assert code == 1 and "no --port" in out and "--mpremote for a bare board" in out
    code, out = cli("--port", "/dev/x", "--out", str(tmp_path))
    assert code == 1 and "polectl bundle keygen" in out
    code, out = cli("--port", "/dev/x", "--key", str(tmp_path / "missing.pem"),
                    "--out", str(tmp_path))
    assert code == 1 and "not found" in out and "keygen" in out
    spb = tmp_path / "ok.spb"
    spb.write_bytes(new_bundle.data)
    signing.sig_path(spb).write_bytes(signing.sign(new_bundle.data,
                                                   signing.load_private(keys.private)))
    code, out = cli("--port", "/dev/nonexistent", "--bundle", str(spb),
                    "--config", str(pole_config), "--json")
    res = json.loads(out)
    assert code == 1 and "cannot open /dev/nonexistent" in res["error"] and res["hint"]


def test_board_without_slots_is_told_to_use_mpremote(builds: Builds, keys: Keys,
                                                     new_bundle: bundles.Bundle,
                                                     pole_config: Path,
                                                     tmp_path: Path) -> None:
    from polesim.firmware import SimFirmware
    from polesim.wire import PtyWire

    spb = tmp_path / "ok.spb"
    spb.write_bytes(new_bundle.data)
    signing.sig_path(spb).write_bytes(signing.sign(new_bundle.data,
                                                   signing.load_private(keys.private)))
    with PtyWire() as wire, SimFirmware(wire.fw_path, builds.factory,
                                        log_path=tmp_path / "fw.log"):
        code, out = cli("--port", wire.ctl_path, "--bundle", str(spb),
                        "--config", str(pole_config), "--json")
    res = json.loads(out)
    assert code == 1 and "no update path" in res["error"] and "--mpremote" in res["hint"]


def test_mpremote_commands(builds: Builds) -> None:
    cmds = mpremote_commands(builds.new, "/dev/ttyACM0")
    assert [c[:4] for c in cmds] == [
        ["mpremote", "connect", "/dev/ttyACM0", "fs"],
        ["mpremote", "connect", "/dev/ttyACM0", "exec"],
        ["mpremote", "connect", "/dev/ttyACM0", "reset"],
    ]
    cp = cmds[0]
    assert cp[4] == "cp" and cp[-1] == ":"
    srcs = [Path(p) for p in cp[5:-1]]
    # main.py goes as source (MicroPython runs main.py, never main.mpy); the
    # loader and every module as .mpy, all at the root (the factory image).
    assert srcs[0] == builds.new / "src" / "main.py"
    assert sorted(p.name for p in srcs[1:]) == sorted(
        p.name for p in builds.new.glob("*.mpy") if p.name != "main.mpy")
    assert {"loader.mpy", "slots.mpy", "update.mpy", "app.mpy"} <= {p.name for p in srcs}
    script = cmds[1][4]
    compile(script, "<exec>", "exec")
    assert "/slots/state.json" in script


def test_hash_script_runs_under_micropython(builds: Builds, tmp_path: Path) -> None:
    # What `mpremote exec` runs on the board, run on the unix port against a
    # copy of the files, must report exactly the build's hashes.
    files = expected_hashes(builds.new)
    for name in files:
        src = builds.new / ("src/main.py" if name == "main.py" else name)
        (tmp_path / name).write_bytes(src.read_bytes())
    (tmp_path / "slots").mkdir()
    (tmp_path / "slots" / "state.json").write_text("{}")
    (tmp_path / "lamp.mpy").write_bytes(b"flash went bad")
    res = subprocess.run([find_micropython(), "-c", hash_script(sorted(files), f"{tmp_path}/")],
                         capture_output=True, text=True, timeout=30)
    got = parse_hashes(res.stdout)
    assert check_hashes(files, got) == ["lamp.mpy"]
    assert not (tmp_path / "slots" / "state.json").exists()


def fake_mpremote(tmp_path: Path, build: Path, corrupt: str = "") -> Path:
    """A stand-in `mpremote` that logs its argv and answers exec like a board."""
    hashes = expected_hashes(build)
    if corrupt:
        hashes[corrupt] = "0" * 64
    exe = tmp_path / "mpremote"
    exe.write_text(f"""#!{sys.executable}
import json, sys
with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[3:4] == ["exec"]:
    print({HASH_TAG!r}, json.dumps({hashes!r}))
""")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_run_mpremote_checks_hashes(builds: Builds, tmp_path: Path) -> None:
    exe = fake_mpremote(tmp_path, builds.new)
    cmds = mpremote_commands(builds.new, "/dev/ttyUSB0", str(exe))
    assert run_mpremote(cmds, builds.new)["ok"]
    calls = [json.loads(ln) for ln in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c[2] for c in calls] == ["fs", "exec", "reset"]
    bad = tmp_path / "bad"
    bad.mkdir()
    exe = fake_mpremote(bad, builds.new, corrupt="app.mpy")
    with pytest.raises(DeployError, match=r"hash mismatch on the board for app\.mpy"):
        run_mpremote(mpremote_commands(builds.new, "/dev/ttyUSB0", str(exe)), builds.new)


def test_cli_mpremote_prints_the_commands(tmp_path: Path) -> None:
    code, out = cli("--mpremote", "--port", "/dev/ttyUSB1", "--out", str(tmp_path))
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("mpremote connect /dev/ttyUSB1 fs cp ")
    assert lines[-1] == "mpremote connect /dev/ttyUSB1 reset"
    code, out = cli("--mpremote", "--port", "/dev/ttyUSB1", "--out", str(tmp_path), "--json")
    res = json.loads(out)
    assert res["ok"] and len(res["commands"]) == 3 and "app.mpy" in res["hashes"]


def test_bundle_keygen_build_verify(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    code, out = cli("bundle", "keygen", str(key))
    assert code == 0 and (tmp_path / "k.pub").exists(), out
    code, out = cli("bundle", "keygen", str(key))
    assert code == 1 and "--force" in out
    code, out = cli("bundle", "build", "--key", str(key), "--version", "3.1.4",
                    "--out", str(tmp_path))
    assert code == 0, out
    spb = tmp_path / "firmware-3.1.4.spb"
    code, out = cli("bundle", "verify", str(spb), "--pubkey", str(tmp_path / "k.pub"))
    assert code == 0 and "signature valid" in out
    other = tmp_path / "other.pem"
    signing.generate(other)
    code, out = cli("bundle", "verify", str(spb), "--pubkey", str(tmp_path / "other.pub"))
    assert code == 1 and "another key" in out
    assert os.stat(key).st_mode & 0o077 == 0
