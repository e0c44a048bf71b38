"""A minimal controller end of the link for firmware tests: send frames over
the controller side of a PtyWire, collect and match what comes back."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

from edge_controller.link import codec as lc

Pred = Callable[[lc.Frame], bool]


class Ctl:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.dec = lc.Decoder()
        self.backlog: list[lc.Frame] = []
        self._seq = 0x40  # far from the firmware's own counter, for readable logs

    def close(self) -> None:
        os.close(self.fd)

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            view = view[n:]

    def send(self, name: str, values: tuple[object, ...] | dict[str, object] = (),
             flags: int = 0, seq: int | None = None) -> int:
        seq = self.next_seq() if seq is None else seq
        self.write(lc.pack(name, seq, values, flags))
        return seq

    def read(self, timeout: float) -> list[lc.Frame]:
        """Frames that arrive within `timeout` (returns as soon as some do)."""
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not r:
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        return list(self.dec.feed(data))

    def pump(self, duration: float) -> None:
        """Read into the backlog for `duration` seconds."""
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0:
            self.backlog.extend(self.read(left))

    def clear(self) -> None:
        self.pump(0.02)
        self.backlog.clear()

    def expect(self, name: str, timeout: float = 2.0, pred: Pred | None = None) -> lc.Frame:
        """First frame named `name` (matching `pred`), from the backlog or the wire."""
        end = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.backlog):
                if f.name == name and (pred is None or pred(f)):
                    del self.backlog[i]
                    return f
            left = end - time.monotonic()
            if left <= 0:
                seen = ", ".join(f"{f.name}#{f.seq}" for f in self.backlog[-20:])
                raise AssertionError(f"no {name} within {timeout} s; last seen: {seen}")
            self.backlog.extend(self.read(left))

    def expect_none(self, name: str, within: float, pred: Pred | None = None) -> None:
        self.pump(within)
        hits = [f for f in self.backlog if f.name == name and (pred is None or pred(f))]
        assert not hits, f"unexpected {hits}"

    def reply(self, name: str, seq: int, timeout: float = 2.0) -> lc.Frame:
        return self.expect(name, timeout, lambda f: f.seq == seq)

    def command(self, name: str, values: tuple[object, ...] | dict[str, object] = (),
                timeout: float = 2.0) -> lc.Frame:
        """Send with F_ACK_REQ; return the ack or nak carrying this seq."""
        seq = self.send(name, values, lc.F_ACK_REQ)
        return self.expect_answer(seq, timeout)

    def expect_answer(self, seq: int, timeout: float = 2.0) -> lc.Frame:
        def match(f: lc.Frame) -> bool:
            return f.name in ("ack", "nak") and f.fields()[
                "ack_seq" if f.name == "ack" else "nak_seq"] == seq

        end = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.backlog):
                if match(f):
                    del self.backlog[i]
                    return f
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no ack/nak for seq {seq} within {timeout} s")
            self.backlog.extend(self.read(left))

    def config_set(self, key: str, value: object) -> None:
        ans = self.command("config_set", (key, str(value)))
        assert ans.name == "ack", f"config_set {key}={value}: {ans.fields()}"
