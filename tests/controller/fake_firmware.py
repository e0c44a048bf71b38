"""A fake I/O board for driving `LinkSession` through the real codec, without a port or a clock."""

from __future__ import annotations

from edge_controller.link import codec
from edge_controller.link.session import LinkEvent, LinkSession, Outcome

CTL_VERSION = "ctl-test 1.0"
FW_VERSION = "fw-test 0.3.1"
BOARD_ID = "board-0042"
CAPS = codec.CAP_LAMP | codec.CAP_DOOR | codec.CAP_FAILSAFE


class FakeFirmware:
    """Reads what the session sends (decoded with `codec.Decoder`) and answers with `codec.pack`."""

    def __init__(self, session: LinkSession) -> None:
        self.session = session
        self.decoder = codec.Decoder()
        self.seq = 100  # the board's own sequence space

    def read(self) -> list[codec.Frame]:
        return self.decoder.feed(self.session.take_outgoing())

    def read_named(self, name: str) -> list[codec.Frame]:
        return [f for f in self.read() if f.name == name]

    def send(self, name: str, seq: int, values: object = (), now: float = 0.0,
             flags: int = 0) -> None:
        self.session.receive(codec.pack(name, seq, values, flags), now)  # type: ignore[arg-type]

    def own_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def heartbeat(self, now: float) -> None:
        self.send("heartbeat", self.own_seq(), (int(now * 1000),), now)

    def ack(self, frame: codec.Frame, now: float) -> None:
        self.send("ack", frame.seq, (frame.seq, frame.mtype), now)

    def nak(self, frame: codec.Frame, reason: int, now: float) -> None:
        self.send("nak", frame.seq, (frame.seq, frame.mtype, reason), now)

    def answer_hello(self, now: float, caps: int = CAPS) -> None:
        """Answer every pending hello_req in the outgoing bytes with hello + board_id."""
        hellos = self.read_named("hello_req")
        assert hellos, "the session sent no hello_req"
        for f in hellos:
            self.send("hello", f.seq, (codec.PROTO_MINOR, FW_VERSION, caps), now)
            self.send("board_id", f.seq, (BOARD_ID,), now)


def make_session(**kw: float) -> LinkSession:
    return LinkSession(ctl_version=CTL_VERSION, **kw)  # type: ignore[arg-type]


def up_session(now: float = 0.0, **kw: float) -> tuple[LinkSession, FakeFirmware]:
    """A session whose link is up (hello answered at `now`), with outputs and events drained."""
    s = make_session(**kw)
    fw = FakeFirmware(s)
    s.start(now)
    fw.answer_hello(now)
    assert s.up
    s.take_outgoing()
    s.take_events()
    return s, fw


def outcomes(events: list[LinkEvent]) -> list[Outcome]:
    return [e.outcome for e in events if e.kind == "outcome" and e.outcome is not None]


def kinds(events: list[LinkEvent]) -> list[str]:
    return [e.kind for e in events]
