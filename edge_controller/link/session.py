"""Controller side of the link, sans-I/O: bytes and time in, bytes and events out.

The adapter (`client.py`) owns the serial port and the clock; this state
machine owns sequence numbers, retries, the hello/version handshake,
heartbeats and link-lost detection. Every method takes `now` (monotonic
seconds) so tests drive it without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_controller.link import codec

# Replies that close a request, by request type.
_REPLY_TO = {
    codec.msg_id("hello_req"): codec.msg_id("hello"),
    codec.msg_id("lamp_get"): codec.msg_id("lamp_state"),
    codec.msg_id("sensor_get"): codec.msg_id("sensor_report"),
    codec.msg_id("config_get"): codec.msg_id("config_value"),
}
_ACK = codec.msg_id("ack")
_NAK = codec.msg_id("nak")
_HELLO = codec.msg_id("hello")
_HELLO_REQ = codec.msg_id("hello_req")
_BOARD_ID = codec.msg_id("board_id")


def as_int(v: object) -> int:
    """A decoded integer field (the codec guarantees the type; this tells mypy)."""
    if not isinstance(v, int):
        raise TypeError(f"expected an integer field, got {v!r}")
    return v


@dataclass
class Outcome:
    """How a command or request ended."""

    token: int
    ok: bool
    reason: str  # "done", a NAK reason name, "timeout", "link_down", "incompatible"
    reply: dict[str, object] | None = None
    rtt_s: float | None = None


@dataclass
class FirmwareInfo:
    version: str = ""
    board_id: str = ""
    proto_major: int = 0
    proto_minor: int = 0
    caps: int = 0

    @property
    def protocol(self) -> str:
        return f"{self.proto_major}.{self.proto_minor}"

    def capabilities(self) -> list[str]:
        return [n for i, n in enumerate(codec.CAP_NAMES) if self.caps & (1 << i)]


@dataclass
class _Pending:
    token: int
    mtype: int
    seq: int
    body: bytes
    flags: int
    first_sent: float
    deadline: float
    tries: int = 1
    expect: int | None = None  # reply type for requests; None means "ack"


@dataclass
class Counters:
    tx_frames: int = 0
    rx_frames: int = 0
    naks_received: int = 0
    naks_sent: int = 0
    retries: int = 0
    timeouts: int = 0
    unsolicited: int = 0


@dataclass
class LinkEvent:
    kind: str  # "up", "lost", "incompatible", "hello", "frame", "outcome"
    frame: codec.Frame | None = None
    fields: dict[str, object] = field(default_factory=dict)
    outcome: Outcome | None = None
    detail: str = ""


class LinkSession:
    def __init__(
        self,
        *,
        ctl_version: str,
        ack_timeout_s: float = 0.25,
        retries: int = 3,
        heartbeat_s: float = 1.0,
        hello_timeout_s: float = 2.0,
        lost_after_s: float = 3.5,
    ) -> None:
        self.ctl_version = ctl_version
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.heartbeat_s = heartbeat_s
        self.hello_timeout_s = hello_timeout_s
        self.lost_after_s = lost_after_s
        self.decoder = codec.Decoder()
        self.counters = Counters()
        self.firmware = FirmwareInfo()
        self.up = False
        self.incompatible = ""
        self.last_rtt_s: float | None = None
        self._seq = 0
        self._token = 0
        self._out = bytearray()
        self._events: list[LinkEvent] = []
        self._pending: dict[int, _Pending] = {}
        self._last_rx: float | None = None
        self._next_heartbeat = 0.0
        self._next_hello = 0.0
        self._started = 0.0

    # ---- inputs -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Port just opened: announce ourselves and ask the firmware who it is."""
        self._started = now
        self._next_hello = now
        self.tick(now)

    def receive(self, data: bytes, now: float) -> None:
        for f in self.decoder.feed(data):
            self.counters.rx_frames += 1
            self._on_frame(f, now)

    def tick(self, now: float) -> None:
        if self.up and self._last_rx is not None and now - self._last_rx > self.lost_after_s:
            self.up = False
            self._events.append(LinkEvent("lost", detail=f"silent for {self.lost_after_s:g} s"))
            self._fail_all("link_down", now)
        if not self.up and not self.incompatible and now >= self._next_hello:
            self._next_hello = now + self.hello_timeout_s
            if not any(p.mtype == _HELLO_REQ and now < p.deadline
                       for p in self._pending.values()):
                self.request("hello_req", (codec.PROTO_MINOR, self.ctl_version), now,
                             retry=False)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_s
            uptime_ms = int((now - self._started) * 1000) & 0xFFFFFFFF
            self._send(codec.msg_id("heartbeat"), codec.pack("heartbeat", 0, (uptime_ms,)))
        for p in list(self._pending.values()):
            if now < p.deadline:
                continue
            retry_allowed = p.mtype != _HELLO_REQ
            if retry_allowed and p.tries <= self.retries:
                p.tries += 1
                p.deadline = now + self.ack_timeout_s
                self.counters.retries += 1
                self._emit_raw(p.mtype, p.seq, p.flags | codec.F_RETRY, p.body)
            else:
                del self._pending[p.seq]
                self.counters.timeouts += 1
                self._events.append(LinkEvent(
                    "outcome", outcome=Outcome(p.token, False, "timeout")))

    def command(self, name: str, values: tuple[object, ...], now: float) -> int:
        """Send a command that the firmware must ack; returns a token for its Outcome."""
        return self._start(name, values, now, expect=None, flags=codec.F_ACK_REQ)

    def request(
        self, name: str, values: tuple[object, ...], now: float, retry: bool = True
    ) -> int:
        """Send a request answered by a reply frame with the same seq."""
        mtype = codec.msg_id(name)
        token = self._start(name, values, now, expect=_REPLY_TO[mtype], flags=0)
        if not retry:
            for p in self._pending.values():
                if p.token == token:
                    p.deadline = now + self.hello_timeout_s
        return token

    # ---- outputs ------------------------------------------------------------

    def take_outgoing(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def take_events(self) -> list[LinkEvent]:
        ev = self._events
        self._events = []
        return ev

    def next_deadline(self) -> float:
        """Earliest time tick() has something to do."""
        t = min([self._next_heartbeat] + [p.deadline for p in self._pending.values()])
        if not self.up and not self.incompatible:
            t = min(t, self._next_hello)
        if self.up and self._last_rx is not None:
            t = min(t, self._last_rx + self.lost_after_s + 1e-3)
        return t

    def link_counters(self) -> dict[str, int]:
        c = self.decoder.counters()
        return {
            "tx_frames": self.counters.tx_frames,
            "rx_frames": self.counters.rx_frames,
            "crc_errors": c["crc_errors"],
            "framing_errors": c["framing_errors"],
            "oversize": c["oversize"],
            "resyncs": c["resyncs"],
            "naks_received": self.counters.naks_received,
            "retries": self.counters.retries,
            "timeouts": self.counters.timeouts,
        }

    # ---- internals ----------------------------------------------------------

    def _start(
        self, name: str, values: tuple[object, ...], now: float, expect: int | None, flags: int
    ) -> int:
        mtype = codec.msg_id(name)
        self._token += 1
        token = self._token
        if self.incompatible:
            self._events.append(LinkEvent("outcome", outcome=Outcome(token, False,
                                                                     "incompatible")))
            return token
        if not self.up and mtype != _HELLO_REQ:
            self._events.append(LinkEvent("outcome", outcome=Outcome(token, False, "link_down")))
            return token
        seq = self._next_seq()
        wire = codec.pack(mtype, seq, values, flags)
        body = codec.Decoder().feed(wire)[0].body
        self._pending[seq] = _Pending(token, mtype, seq, body, flags, now,
                                      now + self.ack_timeout_s, expect=expect)
        self._send(mtype, wire)
        return token

    def _next_seq(self) -> int:
        # Skip seqs still in flight so a late ack can never close the wrong command.
        for _ in range(256):
            self._seq = (self._seq + 1) & 0xFF
            if self._seq not in self._pending:
                return self._seq
        raise RuntimeError("256 commands in flight")

    def _send(self, mtype: int, wire: bytes) -> None:
        self.counters.tx_frames += 1
        self._out += wire

    def _emit_raw(self, mtype: int, seq: int, flags: int, body: bytes) -> None:
        self._send(mtype, codec.encode_frame(mtype, seq, flags, body))

    def _fail_all(self, reason: str, now: float) -> None:
        for p in list(self._pending.values()):
            if p.mtype == _HELLO_REQ:
                continue
            del self._pending[p.seq]
            self._events.append(LinkEvent("outcome", outcome=Outcome(p.token, False, reason)))

    def _finish(self, p: _Pending, ok: bool, reason: str, now: float,
                reply: dict[str, object] | None = None) -> None:
        self._pending.pop(p.seq, None)
        rtt = now - p.first_sent if p.tries == 1 else None
        if rtt is not None:
            self.last_rtt_s = rtt
        self._events.append(LinkEvent("outcome", outcome=Outcome(p.token, ok, reason, reply, rtt)))

    def _nak(self, f: codec.Frame, reason: int) -> None:
        self.counters.naks_sent += 1
        self._send(_NAK, codec.pack("nak", self._next_seq(), (f.seq, f.mtype, reason)))

    def _on_frame(self, f: codec.Frame, now: float) -> None:
        self._last_rx = now
        if f.major != codec.PROTO_MAJOR:
            self._incompatible(f"firmware speaks link protocol {f.major}.{f.ver & 0xF}, "
                               f"this controller speaks {codec.PROTO_MAJOR}.{codec.PROTO_MINOR}")
            return
        try:
            fields = f.fields()
        except codec.UnknownType:
            self._nak(f, codec.NAK_UNSUPPORTED)
            return
        except codec.MalformedBody as e:
            self._nak(f, codec.NAK_MALFORMED)
            self._events.append(LinkEvent("frame", f, {}, detail=f"malformed: {e}"))
            return
        if f.mtype == _HELLO:
            self._on_hello(f, fields, now)
        elif f.mtype == _BOARD_ID:
            self.firmware.board_id = str(fields["board_id"])
        if not self.up and not self.incompatible and f.mtype != _HELLO:
            # Traffic from a firmware we have not greeted yet: ask who it is.
            self._next_hello = min(self._next_hello, now)
        if f.mtype in (_ACK, _NAK):
            key = "ack_seq" if f.mtype == _ACK else "nak_seq"
            p = self._pending.get(int(fields[key]))  # type: ignore[call-overload]
            if f.mtype == _NAK:
                self.counters.naks_received += 1
            acked_type = as_int(fields["ack_type" if f.mtype == _ACK else "nak_type"])
            if p is None or acked_type != p.mtype:
                self.counters.unsolicited += 1
                return
            if f.mtype == _ACK:
                self._finish(p, True, "done", now)
            else:
                r = as_int(fields["reason"])
                name = codec.NAK_REASONS[r] if r < len(codec.NAK_REASONS) else f"nak_{r}"
                self._finish(p, False, name, now)
            return
        p = self._pending.get(f.seq)
        if p is not None and p.expect == f.mtype:
            self._finish(p, True, "done", now, fields)
        self._events.append(LinkEvent("frame", f, fields))

    def _on_hello(self, f: codec.Frame, fields: dict[str, object], now: float) -> None:
        fw = self.firmware
        fw.version = str(fields["fw_version"])
        fw.caps = as_int(fields["caps"])
        fw.proto_major = f.major
        fw.proto_minor = as_int(fields["proto_minor"])
        self._events.append(LinkEvent("hello", f, fields))
        if not self.up:
            self.up = True
            self._events.append(LinkEvent("up", detail=f"firmware {fw.version}"))

    def _incompatible(self, why: str) -> None:
        if not self.incompatible:
            self.incompatible = why
            self.up = False
            self._events.append(LinkEvent("incompatible", detail=why))
            self._fail_all("incompatible", 0.0)
