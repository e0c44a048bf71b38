"""Send a bundle to the board over the link, switch to it and confirm it.

The transfer is `update_begin` / `update_chunk` / `update_commit` over
`LinkClient.command()` (acked, retried), one chunk in flight: at 115200 baud
a 233-byte chunk is 21 ms on the wire against ~1 ms for its ack, so a window
would gain < 10 %. The board answers begin, commit and every refused chunk
with `update_status` *before* its ack/nak, so when a command's outcome
arrives the status that explains it has already passed through the tap.

Interruptions: a chunk that times out (cable cut, board reset) makes the
uploader wait for the link and send `update_begin` again; the board answers
with the next offset it expects (it rehashes what reached flash after a
reset), so a transfer resumes where it stopped, also from a fresh process.

    tap = UpdateTap()
    client = LinkClient(cfg, "ctl", on_event=tap.wrap(other_handler))
    report = await Uploader(client, tap).deploy(bundle, progress=cb)

Docs: docs/deploy.md; the board side is firmware/src/update.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge_controller.link import codec
from edge_controller.link.session import LinkEvent, Outcome, as_int
from edge_controller.update.bundle import Bundle
from edge_controller.update.policy import PolicyError, check_counter

CHUNK_MAX = 233  # docs/link.md: update_chunk carries at most 233 data bytes
SLOT_AUTO = 0xFF

# update_status.state / .code (docs/link.md, "Updates").
IDLE, RECEIVING, PENDING, TRIAL = 0, 1, 2, 3
STATES = {IDLE: "idle", RECEIVING: "receiving", PENDING: "pending", TRIAL: "trial"}
CODES = {0: "ok", 1: "crc", 2: "offset", 3: "size", 4: "hash", 5: "format", 6: "storage",
         7: "slot", 8: "rolled_back", 9: "no_transfer", 10: "confirmed", 11: "busy",
         12: "rollback"}
C_CRC, C_OFFSET, C_CONFIRMED = 1, 2, 10

Progress = Callable[[int, int], None]


class LinkLike(Protocol):
    """What the uploader needs of `LinkClient`."""

    @property
    def up(self) -> bool: ...

    async def command(self, name: str, values: tuple[object, ...]) -> Outcome: ...

    async def request(self, name: str, values: tuple[object, ...] = ()) -> Outcome: ...


class UpdateError(RuntimeError):
    """The update did not complete; `hint` says what to do about it."""

    def __init__(self, message: str, hint: str = "", code: str = "") -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code  # update_status code name, NAK reason or our own word

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.hint})" if self.hint else str(self.args[0])


@dataclass(frozen=True)
class Status:
    state: int
    offset: int
    code: int
    at: float

    @property
    def state_name(self) -> str:
        return STATES.get(self.state, f"state_{self.state}")

    @property
    def code_name(self) -> str:
        return CODES.get(self.code, f"code_{self.code}")


@dataclass(frozen=True)
class Hello:
    version: str
    caps: int
    at: float


class UpdateTap:
    """Collects `update_status` and `hello` from the link's events.

    LinkClient takes one event callback; pass `tap.on_event`, or
    `tap.wrap(existing)` to keep another consumer.
    """

    def __init__(self) -> None:
        self.status: Status | None = None
        self.hello: Hello | None = None
        self.statuses = 0
        self._changed: asyncio.Event | None = None

    def wrap(self, inner: Callable[[LinkEvent], None]) -> Callable[[LinkEvent], None]:
        def both(ev: LinkEvent) -> None:
            self.on_event(ev)
            inner(ev)

        return both

    def on_event(self, ev: LinkEvent) -> None:
        now = time.monotonic()
        if ev.kind == "hello":
            self.hello = Hello(str(ev.fields.get("fw_version", "")),
                               as_int(ev.fields.get("caps", 0)), now)
        elif ev.kind == "frame" and ev.frame is not None and ev.frame.name == "update_status":
            f = ev.fields
            self.status = Status(as_int(f["state"]), as_int(f["offset"]), as_int(f["code"]), now)
            self.statuses += 1
        elif ev.kind not in ("up", "lost"):
            return
        if self._changed is not None:
            self._changed.set()

    async def wait(self, cond: Callable[[], bool], within_s: float) -> bool:
        """Wait until `cond()` holds (re-checked on each event), at most `within_s`."""
        if self._changed is None:
            self._changed = asyncio.Event()
        deadline = time.monotonic() + within_s
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.25))
        return True


@dataclass
class UploadReport:
    size: int
    sha256: str
    seconds: float = 0.0
    chunks: int = 0  # update_chunk commands that were acked
    sent_bytes: int = 0  # payload bytes acked (more than size after a rewind)
    resumed_at: list[int] = field(default_factory=list)  # offsets the board resumed from
    naks: int = 0
    link_waits: int = 0
    committed_before: bool = False  # the board already held this image, pending

    @property
    def rate_bps(self) -> float:
        return self.sent_bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SwitchReport:
    version: str
    reboot_to_hello_s: float
    confirm_s: float
    confirmed: bool


class Uploader:
    def __init__(
        self,
        link: LinkLike,
        tap: UpdateTap,
        *,
        chunk_size: int = CHUNK_MAX,
        status_timeout_s: float = 1.0,
        stall_timeout_s: float = 30.0,
    ) -> None:
        if not 1 <= chunk_size <= CHUNK_MAX:
            raise ValueError(f"chunk_size must be 1..{CHUNK_MAX}")
        self.link = link
        self.tap = tap
        self.chunk_size = chunk_size
        self.status_timeout_s = status_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._progress_at = 0.0

    # ---- the whole thing ---------------------------------------------------

    async def board_floor(self) -> int:
        """The board's anti-rollback floor (`config_get upd_floor`); 0 for a
        board whose firmware predates counters (it checks none itself)."""
        for _ in range(3):
            out = await self.link.request("config_get", ("upd_floor",))
            rep = out.reply or {}
            if out.ok and rep.get("status") == 0:
                try:
                    return int(str(rep.get("value")))
                except ValueError:
                    break
            if out.ok:
                return 0  # unknown key: no anti-rollback on this board yet
            await self.tap.wait(lambda: self.link.up, 0.5)
        raise UpdateError("the board did not report its anti-rollback floor",
                          "check the link and run the deploy again", "no_floor")

    async def deploy(self, bundle: Bundle, progress: Progress | None = None, *,
                     confirm: bool = True, hello_timeout_s: float = 30.0,
                     allow_downgrade: bool = False,
                     ) -> tuple[UploadReport, SwitchReport]:
        """Check the counter against the board's floor, upload (resuming if the
        board holds part of it), reboot, check the new version's hello,
        confirm. The signature must be checked before (signing.verify, with
        the pinned key); this only moves verified bytes."""
        hello = self.tap.hello
        on_trial = (self.tap.status is not None and self.tap.status.state == TRIAL
                    and hello is not None and hello.version == bundle.version)
        if not on_trial:  # a trial of this very bundle only needs its confirmation
            floor = await self.board_floor()
            try:
                check_counter(bundle, floor, allow_downgrade=allow_downgrade)
            except PolicyError as e:
                if bundle.counter == floor and await self._runs(bundle.sha256):
                    # The board runs exactly this image already: a repeated deploy is
                    # done, not a rollback.
                    return (UploadReport(bundle.size, bundle.sha256.hex(),
                                         committed_before=True),
                            SwitchReport(bundle.version, 0.0, 0.0, True))
                raise UpdateError(str(e), e.hint, e.code) from None
        try:
            up = await self.upload(bundle.data, progress)
        except UpdateError as e:
            hello = self.tap.hello
            if e.code != "busy" or not confirm or hello is None \
                    or hello.version != bundle.version:
                raise
            # The board runs this version on trial already (a deploy cut short
            # after its reboot): confirming it is all that is left. The board
            # checks that the hash is the trial image's.
            t0 = time.monotonic()
            self._progress_at = t0
            if not await self._confirm(bundle.sha256):
                raise
            return (UploadReport(bundle.size, bundle.sha256.hex(), committed_before=True),
                    SwitchReport(bundle.version, 0.0, time.monotonic() - t0, True))
        sw = await self.switch(bundle.sha256, bundle.version, confirm=confirm,
                               hello_timeout_s=hello_timeout_s)
        return up, sw

    # ---- transfer ----------------------------------------------------------

# Long: chunks, acks, retries and the commit share the transfer state and its report.
    async def upload(self, image: bytes, progress: Progress | None = None) -> UploadReport:
        """Transfer and commit `image`; on return the board holds it pending."""
        size = len(image)
        sha = hashlib.sha256(image).digest()
        rep = UploadReport(size, sha.hex())
        t0 = time.monotonic()
        self._progress_at = t0
        state, off = await self._begin(size, sha, rep)
        rep.committed_before = state == PENDING
        if progress is not None:
            progress(off, size)
        crc_naks = 0
        while state != PENDING:
            self._check_stall()
            if off < size:
                chunk = image[off:off + self.chunk_size]
                self.tap.status = None
                out = await self.link.command(
                    "update_chunk", (off, codec.crc16(chunk), chunk))
                if out.ok:
                    off += len(chunk)
                    rep.chunks += 1
                    rep.sent_bytes += len(chunk)
                    crc_naks = 0
                    self._progress_at = time.monotonic()
                    if progress is not None:
                        progress(off, size)
                    continue
                st = self.tap.status
                if out.reason == "bad_value" and st is not None and st.code == C_CRC:
                    # Only possible if the chunk changed between our CRC and the
                    # frame's: resend; twenty in a row means a broken sender.
                    rep.naks += 1
                    crc_naks += 1
                    if crc_naks > 20:
                        raise UpdateError("the board keeps refusing chunk CRCs",
                                          "check the link for a faulty adapter", "crc")
                    continue
                state, off = await self._recover(out, size, sha, rep)
                continue
            self.tap.status = None
            out = await self.link.command("update_commit", (sha,))
            if out.ok:
                state = PENDING
                break
            if out.reason == "bad_value":
                st = self.tap.status
                code = st.code_name if st is not None else "unknown"
                raise UpdateError(
                    f"the board refused the image at commit: {code}",
                    "the bytes it received do not hash to the bundle's SHA-256; the slot "
                    "was erased and the running image is untouched. Rebuild and re-sign the "
                    "bundle, then deploy again" if code == "hash" else
                    "the bundle's counter is not above the board's floor (anti-rollback); "
                    "deploy a newer build or a signed recovery bundle" if code == "rollback"
                    else "the bundle is malformed for this firmware; rebuild it", code)
            state, off = await self._recover(out, size, sha, rep)
        rep.seconds = time.monotonic() - t0
        if progress is not None:
            progress(size, size)
        return rep

    async def _begin(self, size: int, sha: bytes, rep: UploadReport) -> tuple[int, int]:
        while True:
            self._check_stall()
            if not self.link.up:
                await self._wait_up(rep)
            self.tap.status = None
            out = await self.link.command("update_begin", (SLOT_AUTO, size, sha))
            if out.ok:
                await self.tap.wait(lambda: self.tap.status is not None, self.status_timeout_s)
                st = self.tap.status
                if st is None:
                    continue  # the status frame was lost: ask again
                if st.state == RECEIVING:
                    if st.offset:
                        rep.resumed_at.append(st.offset)
                    return RECEIVING, st.offset
                if st.state == PENDING:
                    return PENDING, size
                raise UpdateError(f"unexpected update_status {st.state_name}/{st.code_name} "
                                  "after update_begin", "report this as a firmware bug")
            if out.reason in ("timeout", "link_down"):
                rep.link_waits += 1
                await self._wait_up(rep)
                continue
            raise self._refused("update_begin", out)

    async def _recover(self, out: Outcome, size: int, sha: bytes,
                       rep: UploadReport) -> tuple[int, int]:
        if out.reason not in ("timeout", "link_down"):
            rep.naks += 1
        st = self.tap.status
        if out.reason == "state" and st is not None and st.state == RECEIVING \
                and st.code == C_OFFSET:
            return RECEIVING, st.offset  # the board expects another offset: go there
        if out.reason in ("timeout", "link_down"):
            rep.link_waits += 1
            await self._wait_up(rep)
        elif out.reason != "state":
            raise self._refused("update transfer", out)
        return await self._begin(size, sha, rep)

    def _refused(self, what: str, out: Outcome) -> UpdateError:
        st = self.tap.status
        code = st.code_name if st is not None else ""
        if out.reason == "unsupported":
            return UpdateError(f"{what}: the board has no update path (NAK unsupported)",
                               "it runs without slot storage; install the loader once "
                               "with `polectl deploy --mpremote`", "unsupported")
        if code == "busy" or (st is not None and st.state == TRIAL):
            return UpdateError(f"{what}: the board is running a new image on trial",
                               "confirm it (deploy again with the same bundle) or wait for "
                               "its rollback deadline", "busy")
        if code == "storage":
            return UpdateError(f"{what}: the board could not write its flash",
                               "free space on the board's filesystem or check the flash",
                               "storage")
        if out.reason == "incompatible":
            return UpdateError(f"{what}: the board speaks another link version",
                               "flash a compatible firmware with `polectl deploy --mpremote`",
                               "incompatible")
        return UpdateError(f"{what} refused: NAK {out.reason}" + (f", {code}" if code else ""),
                           "see docs/link.md, Updates", code or out.reason)

    async def _wait_up(self, rep: UploadReport) -> None:
        while not self.link.up:
            self._check_stall()
            await self.tap.wait(lambda: self.link.up, 0.5)

    def _check_stall(self) -> None:
        idle = time.monotonic() - self._progress_at
        if idle > self.stall_timeout_s:
            raise UpdateError(f"no progress for {idle:.0f} s",
                              "check the cable and the port, then run the same deploy again: "
                              "the board keeps what it received and resumes", "stalled")

    # ---- switch ------------------------------------------------------------

    async def switch(self, sha: bytes, version: str, *, confirm: bool = True,
                     reboot_delay_ms: int = 50, hello_timeout_s: float = 30.0,
                     ) -> SwitchReport:
        """Reboot into the pending image, wait for its hello, confirm it."""
        self.tap.hello = None
        self.tap.status = None
        t0 = time.monotonic()
        out = await self.link.command("reboot", (reboot_delay_ms,))
        if not out.ok and out.reason not in ("timeout", "link_down"):
            raise self._refused("reboot", out)
        if not await self.tap.wait(lambda: self.tap.hello is not None, hello_timeout_s):
            raise UpdateError(f"the board did not say hello within {hello_timeout_s:g} s of "
                              "the reboot", "power-cycle it: an unconfirmed image rolls back "
                              "on its own", "no_hello")
        hello = self.tap.hello
        assert hello is not None
        t_hello = hello.at - t0
        if hello.version != version:
            await self.tap.wait(lambda: self.tap.status is not None, self.status_timeout_s)
            st = self.tap.status
            why = st.code_name if st is not None else "unknown"
            raise UpdateError(f"the board came back with version {hello.version}, not "
                              f"{version} (update_status: {why})",
                              "the new image did not start and the board rolled back; "
                              "check its log", "rolled_back")
        if not confirm:
            return SwitchReport(version, t_hello, 0.0, False)
        t1 = time.monotonic()
        self._progress_at = t1
        if not await self._confirm(sha):
            raise self._refused("confirmation", Outcome(0, False, "state"))
        return SwitchReport(version, t_hello, time.monotonic() - t1, True)

    async def _runs(self, sha: bytes) -> bool:
        """Does the board run the image with this SHA-256, confirmed? (A commit of the
        running image's hash outside a trial is a repeated confirmation: the board acks
        it with `confirmed` and changes nothing; any other hash gets NAK state.)"""
        self.tap.status = None
        out = await self.link.command("update_commit", (sha,))
        await self.tap.wait(lambda: self.tap.status is not None, self.status_timeout_s)
        st = self.tap.status
        return out.ok and st is not None and st.code == C_CONFIRMED

    async def _confirm(self, sha: bytes) -> bool:
        """update_commit of the running trial image; False if the board says no."""
        while True:
            try:
                self._check_stall()
            except UpdateError:
                raise UpdateError("the confirmation was never acknowledged",
                                  "run the deploy again to confirm before the trial deadline",
                                  "timeout") from None
            self.tap.status = None
            out = await self.link.command("update_commit", (sha,))
            if out.ok:
                return True
            if out.reason not in ("timeout", "link_down"):
                return False
            await self.tap.wait(lambda: self.link.up, 0.5)
