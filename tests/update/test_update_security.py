"""Issue 18, updates: the attacks an independent review reproduced, each against
the real parts (`polectl deploy`, the uploader, the firmware on the MicroPython
unix port over a pty with A/B slot storage).

- a bundle signed with another key (or not signed at all) is refused even when
  deploy is handed that key: the key pinned in the pole's config decides;
- a downgrade is refused by the controller, and by the board when a
  controller skips its check (the counter is checked at commit on the board,
  and the floor survives slot switches and restarts);
- the signed recovery downgrade works, and only when asked for explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from polectl.deploy import bundle_app, deploy
from typer.testing import CliRunner

from edge_controller.link import codec as lc
from edge_controller.update import bundle as bundles
from edge_controller.update import signing
from edge_controller.update.policy import PolicyError, check_counter, pinned_key
from edge_controller.update.uploader import CHUNK_MAX, IDLE, UpdateError, Uploader
from tests.firmware.linkctl import Ctl
from tests.update.conftest import (
    FACTORY_COUNTER,
    NEW_COUNTER,
    BoardFactory,
    Builds,
    Keys,
    open_link,
)

app = typer.Typer()
app.command()(deploy)
app.add_typer(bundle_app, name="bundle")
runner = CliRunner()


def cli(*args: str) -> tuple[int, dict[str, object]]:
    res = runner.invoke(app, ["deploy", *args, "--json"])
    return res.exit_code, json.loads(res.output)


def write_signed(path: Path, b: bundles.Bundle, key: Path) -> Path:
    path.write_bytes(b.data)
    signing.sig_path(path).write_bytes(signing.sign(b.data, signing.load_private(key)))
    return path


def commit_raw(ctl: Ctl, img: bytes) -> dict[str, int]:
    """Send `img` by hand, as a controller that checks nothing would; the
    update_status that answers the commit."""
    import hashlib

    sha = hashlib.sha256(img).digest()
    assert ctl.command("update_begin", (0xFF, len(img), sha)).name == "ack"
    for off in range(0, len(img), CHUNK_MAX):
        c = img[off:off + CHUNK_MAX]
        assert ctl.command("update_chunk", (off, lc.crc16(c), c)).name == "ack"
    seq = ctl.send("update_commit", (sha,), lc.F_ACK_REQ)
    st: dict[str, int] = ctl.reply("update_status", seq).fields()  # type: ignore[assignment]
    ctl.expect_answer(seq)
    return st


def config_value(ctl: Ctl, key: str) -> str:
    seq = ctl.send("config_get", (key,))
    f = ctl.reply("config_value", seq).fields()
    assert f["status"] == 0, f
    return str(f["value"])


# ---- pinned key ---------------------------------------------------------------------


def test_foreign_key_bundle_refused_even_with_its_own_key(
        make_board: BoardFactory, builds: Builds, new_bundle: bundles.Bundle,
        pole_config: Path, tmp_path: Path) -> None:
    # Before: `deploy --key mallory.pem` verified against mallory's public half and
    # installed the image. Now only the key pinned in the pole's config counts.
    mallory = tmp_path / "mallory.pem"
    signing.generate(mallory)
    spb = write_signed(tmp_path / "evil.spb", new_bundle, mallory)
    board = make_board()
    code, res = cli("--port", board.wire.ctl_path, "--bundle", str(spb), "--key", str(mallory),
                    "--config", str(pole_config))
    assert code == 1 and "signature does not verify" in str(res["error"])
    # Building and signing with mallory's key in one step: refused the same way.
    code, res = cli("--port", board.wire.ctl_path, "--key", str(mallory), "--counter", "9",
                    "--out", str(tmp_path / "out"), "--config", str(pole_config))
    assert code == 1 and "signature does not verify" in str(res["error"])
    assert board.state().get("pending") is None and board.fw.reboots == 0
    assert not (board.slots / "a").exists() or not list((board.slots / "a").iterdir())


def test_unsigned_bundle_refused(new_bundle: bundles.Bundle, pole_config: Path,
                                 tmp_path: Path) -> None:
    spb = tmp_path / "unsigned.spb"
    spb.write_bytes(new_bundle.data)
    code, res = cli("--port", "/dev/nonexistent", "--bundle", str(spb),
                    "--config", str(pole_config))
    assert code == 1 and ".sig is missing" in str(res["error"])


def test_a_pole_without_a_pinned_key_takes_no_update(new_bundle: bundles.Bundle, keys: Keys,
                                                     tmp_path: Path) -> None:
    spb = write_signed(tmp_path / "ok.spb", new_bundle, keys.private)
    cfg = tmp_path / "pole.toml"
    cfg.write_text("[pole]\nid = \"pole-0001\"\n")
    code, res = cli("--port", "/dev/nonexistent", "--bundle", str(spb), "--config", str(cfg))
    assert code == 1 and "pins no update key" in str(res["error"])
    assert "provision --update-key" in str(res["hint"])
    with pytest.raises(PolicyError, match="pins no update key"):
        pinned_key(cfg)
    # Relative key paths are the config file's neighbours; hex works too.
    raw = signing.load_public(keys.public).public_bytes_raw().hex()
    cfg.write_text(f'[update]\npublic_key = "{raw}"\n')
    assert signing.key_id(pinned_key(cfg)) == signing.key_id(signing.load_public(keys.public))


# ---- anti-rollback --------------------------------------------------------------------


def test_check_counter_rules(new_bundle: bundles.Bundle, recovery_bundle: bundles.Bundle
                             ) -> None:
    check_counter(new_bundle, NEW_COUNTER - 1)
    for floor in (NEW_COUNTER, NEW_COUNTER + 1):
        with pytest.raises(PolicyError) as e:
            check_counter(new_bundle, floor)
        assert e.value.code == "rollback"
    with pytest.raises(PolicyError) as e:
        check_counter(recovery_bundle, NEW_COUNTER)
    assert e.value.code == "downgrade" and "--allow-downgrade" in e.value.hint
    check_counter(recovery_bundle, NEW_COUNTER, allow_downgrade=True)
    with pytest.raises(PolicyError) as e:  # a stale recovery: the floor moved past it
        check_counter(recovery_bundle, NEW_COUNTER + 1, allow_downgrade=True)
    assert e.value.code == "rollback"


async def test_downgrade_refused_by_the_controller(
        make_board: BoardFactory, builds: Builds, new_bundle: bundles.Bundle,
        old_bundle: bundles.Bundle) -> None:
    # Before: deploying the factory bundle after NEW switched the board back to it.
    board = make_board()
    async with open_link(board.wire.ctl_path) as link:
        await Uploader(link.client, link.tap).deploy(new_bundle)
        with pytest.raises(UpdateError) as e:
            await Uploader(link.client, link.tap).deploy(old_bundle)
        assert e.value.code == "rollback"
        assert f"floor is {NEW_COUNTER}" in str(e.value)
        # allow_downgrade does not turn an ordinary old bundle into a recovery.
        with pytest.raises(UpdateError) as e:
            await Uploader(link.client, link.tap).deploy(old_bundle, allow_downgrade=True)
        assert e.value.code == "rollback"
        assert link.client.session.firmware.version == builds.new_version
    assert board.fw.reboots == 1


def test_downgrade_refused_by_the_board_and_the_floor_persists(
        make_board: BoardFactory, builds: Builds, new_bundle: bundles.Bundle,
        old_bundle: bundles.Bundle, recovery_bundle: bundles.Bundle) -> None:
    # A controller that checks nothing (or root on the edge computer replaying an old,
    # validly signed bundle): the board compares the counter at commit itself.
    board = make_board()
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        assert config_value(ctl, "upd_floor") == str(FACTORY_COUNTER)
        assert config_value(ctl, "fw_counter") == str(FACTORY_COUNTER)
        # The factory image's own counter is the floor: same counter, refused.
        assert commit_raw(ctl, old_bundle.data) == {"state": IDLE, "offset": 0, "code": 12}
        assert board.state().get("pending") is None
        assert list((board.slots / "a").iterdir()) == []  # erased
        # NEW goes in, boots on trial, is confirmed: the floor rises to its counter.
        assert commit_raw(ctl, new_bundle.data)["code"] == 0
        ctl.clear()  # the boot hello is still in the backlog
        assert ctl.command("reboot", (0,)).name == "ack"
        assert ctl.expect("hello", timeout=5.0).fields()["fw_version"] == builds.new_version
        assert ctl.command("update_commit", (new_bundle.sha256,)).name == "ack"
        assert (board.slots / "floor").read_text() == str(NEW_COUNTER)
    finally:
        ctl.close()
    # Across a power cycle and a slot switch, the floor holds.
    board.restart()
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        assert config_value(ctl, "upd_floor") == str(NEW_COUNTER)
        assert commit_raw(ctl, old_bundle.data)["code"] == 12  # rollback
        assert commit_raw(ctl, new_bundle.data)["code"] == 12  # not above the floor either
        # The signed recovery covers this floor: the board takes it.
        assert commit_raw(ctl, recovery_bundle.data)["code"] == 0
        ctl.clear()  # the boot hello is still in the backlog
        assert ctl.command("reboot", (0,)).name == "ack"
        assert ctl.expect("hello", timeout=5.0).fields()["fw_version"] == builds.old_version
        assert ctl.command("update_commit", (recovery_bundle.sha256,)).name == "ack"
        # Running counter 1 now, but the floor never goes down: NEW (2) stays refused.
        assert config_value(ctl, "fw_counter") == str(FACTORY_COUNTER)
        assert config_value(ctl, "upd_floor") == str(NEW_COUNTER)
        assert commit_raw(ctl, new_bundle.data)["code"] == 12
    finally:
        ctl.close()
    assert (board.slots / "floor").read_text() == str(NEW_COUNTER)


def test_stale_recovery_refused_by_the_board(make_board: BoardFactory,
                                             recovery_bundle: bundles.Bundle) -> None:
    # A recovery signed for floors up to 2 cannot take a board whose floor is past it.
    board = make_board()
    (board.slots / "floor").write_text(str(NEW_COUNTER + 1))
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        assert commit_raw(ctl, recovery_bundle.data)["code"] == 12
    finally:
        ctl.close()


def test_bundle_without_counter_refused_by_the_board(make_board: BoardFactory,
                                                     new_bundle: bundles.Bundle) -> None:
    # A bundle from before anti-rollback: the board cannot compare it, so refuses it.
    import struct

    man = {k: v for k, v in new_bundle.manifest.items() if k != "counter"}
    members = [("manifest.json", json.dumps(man).encode()), *new_bundle.files.items()]
    img = b"SPB1" + b"".join(struct.pack("<B", len(n)) + n.encode() + struct.pack("<I", len(c))
                             + c for n, c in members)
    board = make_board()
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        assert commit_raw(ctl, img)["code"] == 12
    finally:
        ctl.close()


def test_signed_recovery_downgrade_works_only_when_asked(
        make_board: BoardFactory, builds: Builds, keys: Keys, new_bundle: bundles.Bundle,
        recovery_bundle: bundles.Bundle, pole_config: Path, tmp_path: Path) -> None:
    board = make_board()
    new = write_signed(tmp_path / "new.spb", new_bundle, keys.private)
    code, res = cli("--port", board.wire.ctl_path, "--bundle", str(new),
                    "--config", str(pole_config))
    assert code == 0, res
    spb = write_signed(tmp_path / "recovery.spb", recovery_bundle, keys.private)
    code, res = cli("--port", board.wire.ctl_path, "--bundle", str(spb),
                    "--config", str(pole_config))
    assert code == 1 and res["code"] == "downgrade" and "--allow-downgrade" in str(res["hint"])
    code, res = cli("--port", board.wire.ctl_path, "--bundle", str(spb),
                    "--config", str(pole_config), "--allow-downgrade")
    assert code == 0, res
    assert res["version_before"] == builds.new_version
    assert res["version_after"] == builds.old_version and res["confirmed"]
    assert (board.slots / "floor").read_text() == str(NEW_COUNTER)


def test_provision_pins_the_update_key(keys: Keys, tmp_path: Path) -> None:
    # provision --update-key writes the key into pole.toml; deploy then reads it from there.
    from polectl.provision import provision_command

    papp = typer.Typer()
    papp.command()(provision_command)
    res = runner.invoke(papp, ["pole-0042", "--broker", "mqtt://127.0.0.1:1883", "--out",
                               str(tmp_path), "--update-key", str(keys.public),
                               "--unsigned-commands"])  # no city command key here
    assert res.exit_code == 0, res.output
    cfg = tmp_path / "pole-0042" / "pole.toml"
    raw = signing.load_public(keys.public).public_bytes_raw().hex()
    assert f'public_key = "{raw}"' in cfg.read_text()
    assert signing.key_id(pinned_key(cfg)) == signing.key_id(signing.load_public(keys.public))
    res = runner.invoke(papp, ["pole-0043", "--broker", "mqtt://127.0.0.1:1883", "--out",
                               str(tmp_path), "--update-key", str(tmp_path / "nope.pub")])
    assert res.exit_code == 2 and "--update-key" in res.output
