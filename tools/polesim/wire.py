"""Simulated serial cables made of pseudo-terminals.

`PtyWire` is a null-modem cable between the simulated firmware (endpoint A,
`fw_path`) and the controller (endpoint B, `ctl_path`). Each endpoint is the
slave side of its own pty pair; a relay thread copies bytes between the two
masters, which is where faults are made: `inject()` adds garbage to one
direction and `cut(True)` unplugs the cable (everything in flight and sent
meanwhile is dropped).

`SimPanelPty` is the plain pty pair for the simulated-hardware channel: the
firmware opens `path`, the host talks through the master fd.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import termios
import threading
import tty
from typing import Literal

Direction = Literal["fw", "ctl"]

# Stop reading a master while this much is queued for the other side: a
# receiver that does not read then slows its sender, like a real UART
# with flow control would, instead of growing a buffer here without bound.
_BACKLOG = 64 * 1024


def _raw(fd: int) -> None:
    """Raw, non-blocking-read line discipline: bytes pass untouched (no echo,
    no CR/LF mangling, no ^C/^S)."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[6][termios.VMIN] = 0
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class PtyWire:
    """A null-modem cable between two pty slaves, with fault injection."""

    def __init__(self) -> None:
        self._fw_m, self._fw_s = os.openpty()
        self._ctl_m, self._ctl_s = os.openpty()
        # The slave fds stay open here for the cable's life: with no slave
        # open, reads on the master fail with EIO whenever a side reconnects.
        for fd in (self._fw_s, self._ctl_s):
            _raw(fd)
        for fd in (self._fw_m, self._ctl_m):
            os.set_blocking(fd, False)
        self.fw_path = os.ttyname(self._fw_s)
        self.ctl_path = os.ttyname(self._ctl_s)
        self._lock = threading.Lock()
        # Bytes waiting to be written into each master (= to that endpoint).
        self._pend = {self._fw_m: bytearray(), self._ctl_m: bytearray()}
        self._cut = False
        self._closed = False
        self.fw_to_ctl = 0  # bytes delivered firmware -> controller
        self.ctl_to_fw = 0
        self.dropped = 0  # bytes lost while the cable was cut
        self.injected = 0
        self.damaged = 0  # bytes flipped, lost or duplicated by faults()
        self._faults: tuple[float, float, float] | None = None
        self._rng = random.Random(0)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._relay, name="pty-wire", daemon=True)
        self._thread.start()

    # ---- control --------------------------------------------------------

    def inject(self, to: Direction, data: bytes) -> None:
        """Put `data` on the wire towards the firmware ("fw") or the controller ("ctl").

        Delivered even while the cable is cut: it models noise picked up at
        the receiving end.
        """
        dst = self._fw_m if to == "fw" else self._ctl_m if to == "ctl" else None
        if dst is None:
            raise ValueError("to must be 'fw' or 'ctl'")
        with self._lock:
            self._pend[dst].extend(data)
            self.injected += len(data)
        self._wake()

    def cut(self, on: bool = True) -> None:
        """Unplug (True) or replug (False) the cable."""
        with self._lock:
            self._cut = on
            if on:
                for buf in self._pend.values():
                    self.dropped += len(buf)
                    buf.clear()

    def faults(self, flip: float = 0.0, drop: float = 0.0, dup: float = 0.0,
               seed: int = 0) -> None:
        """A noisy cable: per byte, flip one bit with probability `flip` or lose it with
        probability `drop`; per read chunk, deliver it twice with probability `dup`.
        All zero switches the noise off."""
        with self._lock:
            self._faults = (flip, drop, dup) if (flip or drop or dup) else None
            self._rng = random.Random(seed)

    def _damage(self, data: bytes) -> bytes:
        assert self._faults is not None
        flip, drop, dup = self._faults
        rng = self._rng
        out = bytearray()
        for b in data:
            r = rng.random()
            if r < drop:
                self.damaged += 1
                continue
            if r < drop + flip:
                b ^= 1 << rng.randrange(8)
                self.damaged += 1
            out.append(b)
        if dup and rng.random() < dup:
            out.extend(bytes(out))
            self.damaged += len(data)
        return bytes(out)

    @property
    def is_cut(self) -> bool:
        return self._cut

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"fw_to_ctl": self.fw_to_ctl, "ctl_to_fw": self.ctl_to_fw,
                    "dropped": self.dropped, "injected": self.injected}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(timeout=2.0)
        for fd in (self._fw_m, self._fw_s, self._ctl_m, self._ctl_s, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyWire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- relay thread -------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _relay(self) -> None:
        other = {self._fw_m: self._ctl_m, self._ctl_m: self._fw_m}
        while not self._closed:
            with self._lock:
                rl = [m for m in other if len(self._pend[other[m]]) < _BACKLOG]
                wl = [m for m in other if self._pend[m]]
            try:
                r, w, _ = select.select([self._wake_r, *rl], wl, [], 0.5)
            except (OSError, ValueError):
                return
            if self._wake_r in r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            for m in r:
                if m == self._wake_r:
                    continue
                try:
                    data = os.read(m, 4096)
                except (BlockingIOError, OSError):
                    continue
                with self._lock:
                    if self._cut:
                        self.dropped += len(data)
                    else:
                        if self._faults is not None:
                            data = self._damage(data)
                        self._pend[other[m]].extend(data)
                        if m == self._fw_m:
                            self.fw_to_ctl += len(data)
                        else:
                            self.ctl_to_fw += len(data)
            for m in w:
                with self._lock:
                    buf = self._pend[m]
                    try:
                        n = os.write(m, buf)
                    except (BlockingIOError, OSError):
                        continue
                    del buf[:n]


class SimPanelPty:
    """The pty pair of the sim-hardware channel (JSON lines, see docs/firmware.md)."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        _raw(self._slave)
        self.path = os.ttyname(self._slave)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
