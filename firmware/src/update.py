# Receiving end of the update path (docs/link.md, "Updates"; docs/firmware.md,
# "Slots"). The loader imports it at boot on a board with slot storage (an
# import later, on a fragmented heap, could fail for want of a contiguous
# block) and sets App.upd; a board without slots never loads it. The loader
# also uses verify() to check a slot before booting it.
#
# RAM-lean: each chunk is CRC-checked, appended to <slot>/image.spb on flash
# and fed to an incremental SHA-256; nothing holds the image, and the one
# 256-byte buffer (rehash, unpack, verify) is allocated with the Updater.
#
# begin: choose the inactive slot, resume a transfer of the same image
# (rehashing what reached flash before a reset) or erase the slot (manifest
# first, so it can never boot half-written) and start afresh.
# commit: check the whole-image SHA-256, unpack the bundle member by member
# from flash, verify every file against the bundle's manifest, check its
# anti-rollback counter against the floor, and only then name the slot
# pending in state.json. On trial, committing the running image's hash
# confirms it and raises the floor to the image's counter.
#
# Anti-rollback (docs/security.md, "Firmware updates"): ROOT/floor holds the
# highest counter ever confirmed; it lives beside state.json, outside both
# slots, so no slot switch or erase touches it, and it only ever goes up.
# The effective floor is max(that file, the running image's counter). A
# new image must carry a counter above the floor, or be a recovery image
# whose manifest says "downgrade_from": N with N >= the floor. The board
# cannot check who signed the manifest (Ed25519 does not fit beside the
# app); the controller checks the signature over the whole bundle, manifest
# included, before a byte is sent.

import hashlib
import json
import os
from binascii import hexlify
from time import ticks_diff, ticks_ms

import slots
from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from typing import Any

# update_status.state (docs/link.md)
_IDLE = const(0)
_RECEIVING = const(1)
_PENDING = const(2)
_TRIAL = const(3)
# update_status.code
_OK = const(0)
_CRC = const(1)
_OFFSET = const(2)
_SIZE = const(3)
_HASH = const(4)
_FORMAT = const(5)
_STORAGE = const(6)
_SLOT = const(7)
_ROLLED_BACK = const(8)
_NO_TRANSFER = const(9)
_CONFIRMED = const(10)
_BUSY = const(11)
_ROLLBACK = const(12)
# NAK reasons (linkcodec's; not imported: the loader imports this module
# before the slot is on sys.path, and must not pin the factory's codec).
_NAK_BAD_VALUE = const(3)
_NAK_BUSY = const(4)
_NAK_STATE = const(6)

_T_BEGIN = const(0x40)
_T_CHUNK = const(0x41)
_T_STATUS = const(0x43)
_MAX_IMAGE = const(0x100000)  # 1 MiB: far above a bundle (~27 KB), below any flash
_FLUSH_EVERY = const(4096)  # bytes between flushes: the resume point after a reset
_BUF = const(256)


def _rm(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return str(f.read())
    except OSError:
        return ""


def _running_sha() -> str:
    return _read(slots.ROOT + "/" + str(slots.BOOTED) + "/image.sha256")


_RUN = -1  # the running image's counter, once read


def _counter() -> int:
    # The running image's counter: its slot manifest's (what the controller
    # verified under the signature), or the factory image's FW_COUNTER.
    global _RUN
    if _RUN < 0:
        c = -1
        if slots.BOOTED is not None:
            try:
                with open(slots.ROOT + "/" + slots.BOOTED + "/manifest.json") as f:
                    c = json.load(f).get("counter", -1)
            except (OSError, ValueError, AttributeError):
                pass
        if type(c) is not int or c < 0:
            from app import FW_COUNTER  # imported already by the loader: a lookup

            c = FW_COUNTER
        _RUN = c
    return _RUN


def floor() -> int:
    """Lowest counter a new image must exceed (docs/security.md)."""
    f = _read(slots.ROOT + "/floor")
    try:
        n = int(f) if f else 0
    except ValueError:
        n = 0  # a torn write: the running image's counter still holds the line
    c = _counter()
    return n if n > c else c


def _raise_floor(n: int) -> None:
    f = floor()
    n = n if n > f else f  # never down
    if _read(slots.ROOT + "/floor") == str(n):
        return
    tmp = slots.ROOT + "/floor.tmp"
    with open(tmp, "w") as w:
        w.write(str(n))
    os.rename(tmp, slots.ROOT + "/floor")  # atomic, like state.json


def allowed(m: "dict[str, Any]") -> bool:
    """Is this manifest's counter above the floor, or a recovery that covers it?"""
    c = m.get("counter")
    d = m.get("downgrade_from")
    f = floor()
    if type(c) is not int:
        return False
    return c > f or (type(d) is int and d >= f)


def begin(u: "Any", seq: int, slot: int, size: int, sha_b: bytes) -> int:
    if slots.TRIAL_END is not None:
        # The other slot is the rollback image until this one confirms.
        u.st(seq, _TRIAL, 0, _BUSY)
        return _NAK_BUSY
    sha = hexlify(sha_b).decode()
    booted = slots.BOOTED
    name = ("b" if booted == "a" else "a") if slot == 0xFF else (
        slots.NAMES[slot] if slot < 2 else booted)
    if name is None or name == booted:
        u.st(seq, _IDLE, 0, _SLOT)
        return _NAK_BAD_VALUE
    if len(sha_b) != 32 or size < 8 or size > _MAX_IMAGE:
        u.st(seq, _IDLE, 0, _SIZE)
        return _NAK_BAD_VALUE
    d = slots.ROOT + "/" + name
    if u.f is not None and u.dir == d and u.size == size and u.sha == sha:
        u.st(seq, _RECEIVING, u.off, _OK)  # the same transfer: carry on
        return 0
    u.close()
    u.name = name
    u.dir = d
    u.size = size
    u.sha = sha
    st = slots.load()
    if st.get("pending") == name and _read(d + "/image.sha256") == sha:
        u.st(seq, _PENDING, size, _OK)  # committed already
        return 0
    tag = "%s %d" % (sha, size)
    h = hashlib.sha256()
    n = 0
    if _read(d + "/incoming") == tag:
        # This image was arriving before a reset: rehash what reached flash.
        buf = u.buf
        mv = memoryview(buf)
        try:
            with open(d + "/image.spb", "rb") as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    h.update(mv[:k])
                    n += k
        except OSError:
            n = 0
    if not n or n > size:
        if st.get("pending") == name:
            st["pending"] = None
            slots.save(st)  # never leave state.json naming a slot being erased
        try:
            os.mkdir(d)
        except OSError:
            pass
        _rm(d + "/manifest.json")  # first: from here on the slot cannot boot
        slots.crash("begin:erase")
        for x in os.listdir(d):
            _rm(d + "/" + x)
        with open(d + "/incoming", "w") as f:
            f.write(tag)
        h = hashlib.sha256()
        n = 0
    u.f = open(d + "/image.spb", "ab")
    u.h = h
    u.off = n
    u.st(seq, _RECEIVING, n, _OK)
    return 0


def commit(u: "Any", seq: int, sha_b: bytes) -> int:
    sha = hexlify(sha_b).decode()
    if slots.TRIAL_END is not None:
        # On trial, committing the running image's hash confirms it.
        if sha != _running_sha():
            u.st(seq, _TRIAL, 0, _BUSY)
            return _NAK_STATE
        st = slots.load()
        if st.get("active") != slots.BOOTED:
            st["previous"] = st.get("active")
        st["active"] = slots.BOOTED
        st["trial"] = None
        slots.save(st)
        # After state.json: a power cut in between leaves the floor file
        # behind, but floor() takes the running image's counter as well.
        # (Before it, a cut would roll back below a raised floor.)
        _raise_floor(_counter())
        slots.crash("confirm:saved")
        slots.TRIAL_END = None
        u.app.hal.log("update: slot %s confirmed" % slots.BOOTED)
        u.st(seq, _IDLE, 0, _CONFIRMED)
        return 0
    d = u.dir
    if u.f is None:
        if d and sha == u.sha and _read(d + "/image.sha256") == sha:
            u.st(seq, _PENDING, u.size, _OK)  # a repeated commit
            return 0
        if slots.BOOTED is not None and sha == _running_sha():
            u.st(seq, _IDLE, 0, _CONFIRMED)  # a repeated confirmation
            return 0
        u.st(seq, _IDLE, 0, _NO_TRANSFER)
        return _NAK_STATE
    if u.off != u.size:
        u.st(seq, _RECEIVING, u.off, _SIZE)
        return _NAK_STATE
    digest = hexlify(u.h.digest()).decode()
    u.close()
    code = _OK
    if digest != sha or digest != u.sha:
        code = _HASH
    elif not _unpack(d, u.size, u.buf):
        code = _FORMAT
    else:
        m = verify(u.name, u.buf)
        if m is None or m.get("loader") != slots.API:
            code = _FORMAT  # damaged, or built for another loader
        elif not allowed(m):
            code = _ROLLBACK  # not above the floor, and no recovery for it
    if code:
        u.app.hal.log("update: image refused (code %d), slot erased" % code)
        for x in os.listdir(d):
            _rm(d + "/" + x)
        u.sha = ""
        u.st(seq, _IDLE, 0, code)
        return _NAK_BAD_VALUE
    with open(d + "/image.sha256", "w") as f:
        f.write(sha)
    _rm(d + "/image.spb")
    _rm(d + "/incoming")
    slots.crash("commit:unpacked")
    st = slots.load()
    st["pending"] = u.name
    slots.save(st)
    slots.crash("commit:pending")
    u.app.hal.log("update: slot %s pending" % u.name)
    u.st(seq, _PENDING, u.size, _OK)
    return 0


def verify(name: str, buf: "bytearray | None" = None) -> "dict[str, Any] | None":
    """The slot's manifest if every file it lists has its size and sha256."""
    d = slots.ROOT + "/" + name
    try:
        with open(d + "/manifest.json") as f:
            m = json.load(f)
        buf = buf or bytearray(_BUF)
        mv = memoryview(buf)
        for e in m["files"]:
            h = hashlib.sha256()
            n = 0
            with open(d + "/" + e[0], "rb") as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    h.update(mv[:k])
                    n += k
            if n != e[1] or hexlify(h.digest()).decode() != e[2]:
                return None
        return m  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _unpack(d: str, size: int, buf: bytearray) -> bool:
    # Bundle (docs/deploy.md): b"SPB1", then members (name u8-prefixed, size
    # u32 LE, bytes), manifest.json first. Written as they come: the
    # manifest lands first, so a half-unpacked slot never verifies.
    mv = memoryview(buf)
    src = open(d + "/image.spb", "rb")
    try:
        if src.read(4) != b"SPB1":
            return False
        pos = 4
        while pos < size:
            name = src.read(src.read(1)[0]).decode()
            left = int.from_bytes(src.read(4), "little")
            pos += 5 + len(name) + left
            ok = name == "manifest.json" or (name.endswith(".mpy") and len(name) < 40)
            for c in name:
                ok = ok and (c.isalpha() or c.isdigit() or c in "._")
            if not ok or pos > size:
                return False
            with open(d + "/" + name, "wb") as out:
                while left:
                    k = src.readinto(mv[:left if left < _BUF else _BUF])
                    if not k:
                        return False
                    out.write(mv[:k])
                    left -= k
            slots.crash("commit:unpack")
        return True
    except (IndexError, ValueError, UnicodeError):
        return False
    finally:
        src.close()


class Updater:
    def __init__(self) -> None:
        self.app: "Any" = None  # the App of the call in progress
        self.name = ""  # target slot of the open (or committed) transfer
        self.dir = ""  # its directory
        self.size = 0
        self.sha = ""  # hex
        self.off = 0
        self.h: "Any" = None  # running sha256 while receiving
        self.f: "Any" = None  # image.spb, open for append while receiving
        self.code = _OK  # last outcome, repeated in the status after hello
        self.buf = bytearray(_BUF)
        import linkcodec  # here, not at the top: see _NAK_* above

        self.crc16 = linkcodec.crc16

    def st(self, seq: int, state: int, off: int, code: int) -> None:
        """Send update_status (before the ack/nak it explains)."""
        self.code = code
        self.app._send(_T_STATUS, seq, (state, off, code))

    def hello(self, app: "Any", seq: int) -> None:
        """After hello + board_id: where the update path stands."""
        self.app = app
        if slots.TRIAL_END is not None:
            left = ticks_diff(slots.TRIAL_END, ticks_ms())
            self.st(seq, _TRIAL, left if left > 0 else 0, _OK)
        elif self.f is not None:
            self.st(seq, _RECEIVING, self.off, _OK)
        else:
            s = slots.load()
            if s.get("pending") is not None:
                self.st(seq, _PENDING, self.size, _OK)
            elif s.get("rolled_back") is not None:
                self.st(seq, _IDLE, 0, _ROLLED_BACK)
            else:
                self.st(seq, _IDLE, 0, self.code)

    def get(self, key: str) -> "int | None":
        """Read-only config_get keys of the update path (docs/link.md)."""
        if key == "upd_floor":
            return floor()
        if key == "fw_counter":
            return _counter()
        return None

    def handle(self, app: "Any", t: int, seq: int, v: "dict[str, Any]") -> int:
        """update_begin/chunk/commit; returns 0 (ack) or a NAK reason."""
        self.app = app
        try:
            if t == _T_CHUNK:
                return self._chunk(seq, v["offset"], v["crc16"], v["data"])
            if t == _T_BEGIN:
                return begin(self, seq, v["slot"], v["size"], v["sha256"])
            return commit(self, seq, v["sha256"])
        except OSError as e:  # flash full or failing: the running image is untouched
            self.app.hal.log("update: storage %r" % (e,))
            self.close()
            self.st(seq, _IDLE, 0, _STORAGE)
            return _NAK_BUSY

    def _chunk(self, seq: int, offset: int, crc: int, data: bytes) -> int:
        if self.f is None:
            self.st(seq, _IDLE, 0, _NO_TRANSFER)
            return _NAK_STATE
        if self.crc16(data) != crc:
            self.st(seq, _RECEIVING, self.off, _CRC)
            return _NAK_BAD_VALUE
        if offset != self.off:
            self.st(seq, _RECEIVING, self.off, _OFFSET)
            return _NAK_STATE
        if offset + len(data) > self.size or not data:
            self.st(seq, _RECEIVING, self.off, _SIZE)
            return _NAK_BAD_VALUE
        self.f.write(data)
        self.h.update(data)
        self.off = offset + len(data)
        if self.off % _FLUSH_EVERY < len(data):
            self.f.flush()
        return 0

    def close(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
        self.f = None
        self.h = None
