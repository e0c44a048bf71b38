"""LinkSession, sans-I/O: a fake firmware built on the real codec drives it; `now` is explicit."""

from __future__ import annotations

import pytest

from edge_controller.link import codec
from tests.controller.fake_firmware import (
    BOARD_ID,
    CTL_VERSION,
    FW_VERSION,
    FakeFirmware,
    kinds,
    make_session,
    outcomes,
    up_session,
)

# ---- hello handshake ---------------------------------------------------------


def test_start_sends_hello_req_and_a_heartbeat() -> None:
    s = make_session()
    fw = FakeFirmware(s)
    s.start(5.0)
    frames = fw.read()
    names = [f.name for f in frames]
    assert names.count("hello_req") == 1
    assert names.count("heartbeat") == 1
    hello = next(f for f in frames if f.name == "hello_req")
    assert hello.fields() == {"proto_minor": codec.PROTO_MINOR, "ctl_version": CTL_VERSION}
    assert hello.major == codec.PROTO_MAJOR
    assert not hello.flags & codec.F_ACK_REQ  # a request: the hello itself is the answer
    assert not s.up
    assert "up" not in kinds(s.take_events())


def test_hello_and_board_id_bring_the_link_up_with_firmware_info() -> None:
    s = make_session()
    fw = FakeFirmware(s)
    s.start(0.0)
    (req,) = fw.read_named("hello_req")
    caps = codec.CAP_LAMP | codec.CAP_TEMP | codec.CAP_TILT | codec.CAP_FAILSAFE
    fw.send("hello", req.seq, (codec.PROTO_MINOR, FW_VERSION, caps), now=0.05)
    ev = s.take_events()
    assert "hello" in kinds(ev) and kinds(ev).count("up") == 1
    (out,) = outcomes(ev)
    assert out.ok and out.reason == "done"
    assert s.up
    fw.send("board_id", req.seq, (BOARD_ID,), now=0.06)
    info = s.firmware
    assert info.version == FW_VERSION
    assert info.board_id == BOARD_ID
    assert (info.proto_major, info.proto_minor) == (codec.PROTO_MAJOR, codec.PROTO_MINOR)
    assert info.protocol == f"{codec.PROTO_MAJOR}.{codec.PROTO_MINOR}"
    assert info.caps == caps
    assert info.capabilities() == ["lamp", "temp", "tilt", "failsafe"]


def test_unsolicited_hello_from_a_booting_board_brings_the_link_up() -> None:
    s = make_session()
    fw = FakeFirmware(s)
    s.start(0.0)
    s.take_outgoing()
    fw.send("hello", 77, (0, FW_VERSION, codec.CAP_LAMP), now=0.1)
    assert s.up
    assert kinds(s.take_events()).count("up") == 1
    # A second hello (board rebooted) refreshes the info but is not a second "up".
    fw.send("hello", 78, (0, "fw 2", codec.CAP_LAMP | codec.CAP_LUX), now=0.2)
    ev = s.take_events()
    assert "up" not in kinds(ev) and "hello" in kinds(ev)
    assert s.firmware.version == "fw 2"
    assert s.firmware.capabilities() == ["lamp", "lux"]


def test_hello_req_is_repeated_every_hello_timeout_while_unanswered() -> None:
    s = make_session(hello_timeout_s=2.0, heartbeat_s=100.0)
    fw = FakeFirmware(s)
    s.start(0.0)
    sent_at = [0.0] if fw.read_named("hello_req") else []
    for i in range(1, 13):  # 0.5 .. 6.0 s
        now = i / 2
        s.tick(now)
        if fw.read_named("hello_req"):
            sent_at.append(now)
    # "Time to wait for the firmware's hello after a request": then ask again.
    assert sent_at == [0.0, 2.0, 4.0, 6.0]
    assert not s.up


# ---- commands and requests -----------------------------------------------------


def test_acked_command_gives_ok_outcome_with_rtt() -> None:
    s, fw = up_session(0.0)
    tok = s.command("lamp_set", (40, 1500), 10.0)
    (f,) = fw.read_named("lamp_set")
    assert f.flags & codec.F_ACK_REQ and not f.flags & codec.F_RETRY
    assert f.fields() == {"level": 40, "fade_ms": 1500}
    assert outcomes(s.take_events()) == []  # nothing until the ack
    fw.ack(f, now=10.04)
    (out,) = outcomes(s.take_events())
    assert (out.token, out.ok, out.reason) == (tok, True, "done")
    assert out.rtt_s == pytest.approx(0.04)
    assert s.last_rtt_s == pytest.approx(0.04)


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_unacked_command_is_retransmitted_then_times_out(retries: int) -> None:
    s, fw = up_session(0.0, ack_timeout_s=0.25, retries=retries, heartbeat_s=100.0)
    tok = s.command("lamp_set", (10, 0), 1.0)
    (first,) = fw.read_named("lamp_set")
    resent = []
    now = 1.0
    for k in range(1, retries + 1):
        s.tick(1.0 + 0.25 * k - 0.001)  # just before the deadline: nothing
        assert fw.read_named("lamp_set") == []
        now = 1.0 + 0.25 * k
        s.tick(now)
        resent += fw.read_named("lamp_set")
        assert outcomes(s.take_events()) == []
    assert len(resent) == retries
    for f in resent:
        assert f.seq == first.seq
        assert f.body == first.body
        assert f.flags == codec.F_ACK_REQ | codec.F_RETRY
    s.tick(now + 0.25)
    assert fw.read_named("lamp_set") == []
    (out,) = outcomes(s.take_events())
    assert (out.token, out.ok, out.reason) == (tok, False, "timeout")
    c = s.link_counters()
    assert c["retries"] == retries and c["timeouts"] == 1
    # A late ack for the dead command produces no second outcome.
    fw.ack(first, now + 0.3)
    assert outcomes(s.take_events()) == []


def test_ack_of_a_retransmission_still_completes_the_command() -> None:
    s, fw = up_session(0.0, ack_timeout_s=0.25, retries=3, heartbeat_s=100.0)
    tok = s.command("amp_enable", (1,), 1.0)
    assert len(fw.read_named("amp_enable")) == 1
    s.tick(1.25)
    (retry,) = fw.read_named("amp_enable")
    assert retry.flags & codec.F_RETRY
    fw.ack(retry, 1.3)
    (out,) = outcomes(s.take_events())
    assert (out.token, out.ok, out.reason) == (tok, True, "done")
    s.tick(2.0)
    assert fw.read_named("amp_enable") == []  # no more retries once acked


@pytest.mark.parametrize(
    ("reason", "name"),
    [
        (codec.NAK_UNSUPPORTED, "unsupported"),
        (codec.NAK_MALFORMED, "malformed"),
        (codec.NAK_BAD_VALUE, "bad_value"),
        (codec.NAK_BUSY, "busy"),
        (codec.NAK_VERSION, "version"),
        (codec.NAK_STATE, "state"),
        (42, "nak_42"),
    ],
)
def test_nak_gives_failed_outcome_named_by_reason(reason: int, name: str) -> None:
    s, fw = up_session(0.0)
    tok = s.command("lamp_set", (100, 0), 1.0)
    (f,) = fw.read_named("lamp_set")
    fw.nak(f, reason, 1.01)
    (out,) = outcomes(s.take_events())
    assert (out.token, out.ok, out.reason) == (tok, False, name)
    assert s.link_counters()["naks_received"] == 1
    s.tick(5.0)  # closed: never retried
    assert fw.read_named("lamp_set") == []


def test_request_is_answered_by_its_reply_with_the_same_seq() -> None:
    s, fw = up_session(0.0)
    tok = s.request("lamp_get", (), 2.0)
    (req,) = fw.read_named("lamp_get")
    assert not req.flags & codec.F_ACK_REQ
    # An unsolicited lamp_state with another seq does not close the request.
    other = (req.seq + 1) & 0xFF
    fw.send("lamp_state", other, (1, 1, 100, 1, 0), now=2.01)
    # Nor does a frame of another type that happens to carry the request's seq.
    fw.send("heartbeat", req.seq, (1234,), now=2.01)
    assert outcomes(s.take_events()) == []
    fw.send("lamp_state", req.seq, (35, 60, 22937, 1, 0), now=2.02)
    ev = s.take_events()
    (out,) = outcomes(ev)
    assert (out.token, out.ok, out.reason) == (tok, True, "done")
    assert out.reply == {"level": 35, "target": 60, "duty": 22937, "on": 1, "failsafe": 0}
    assert out.rtt_s == pytest.approx(0.02)
    # The reply is also a frame event, for the pole state.
    frames = [e for e in ev if e.kind == "frame"]
    assert frames and frames[-1].frame is not None and frames[-1].frame.name == "lamp_state"


def test_commands_and_requests_while_link_down_fail_at_once() -> None:
    s = make_session()
    fw = FakeFirmware(s)
    s.start(0.0)
    fw.read()
    s.take_events()
    t1 = s.command("lamp_set", (50, 0), 0.1)
    t2 = s.request("lamp_get", (), 0.1)
    outs = outcomes(s.take_events())
    assert [(o.token, o.ok, o.reason) for o in outs] == [
        (t1, False, "link_down"), (t2, False, "link_down")]
    assert [f.name for f in fw.read()] == []  # nothing went on the wire


# ---- link loss -------------------------------------------------------------------


def test_silence_longer_than_lost_after_loses_the_link_and_fails_pending() -> None:
    s, fw = up_session(0.0, lost_after_s=3.5, ack_timeout_s=2.0, retries=10, heartbeat_s=100.0)
    fw.heartbeat(1.0)  # last word from the board at t=1.0
    tok = s.command("lamp_set", (20, 0), 3.0)
    s.tick(4.5)  # exactly lost_after_s of silence: still up
    assert s.up
    assert "lost" not in kinds(s.take_events())
    s.take_outgoing()
    s.tick(4.6)
    ev = s.take_events()
    assert kinds(ev).count("lost") == 1
    assert not s.up
    assert [(o.token, o.ok, o.reason) for o in outcomes(ev)] == [(tok, False, "link_down")]
    # The session greets the board again, and new commands fail at once.
    assert fw.read_named("hello_req")
    t2 = s.command("lamp_set", (20, 0), 4.7)
    assert [(o.token, o.reason) for o in outcomes(s.take_events())] == [(t2, "link_down")]
    s.tick(20.0)
    assert "lost" not in kinds(s.take_events())  # reported once


def test_board_heartbeats_keep_the_link_up() -> None:
    s, fw = up_session(0.0, lost_after_s=3.5)
    for i in range(1, 21):
        now = float(i)
        fw.heartbeat(now)
        s.tick(now + 0.5)
    assert s.up
    assert "lost" not in kinds(s.take_events())


def test_link_lost_then_restored_by_a_new_hello() -> None:
    s, fw = up_session(0.0, lost_after_s=1.0)
    s.tick(1.5)
    assert kinds(s.take_events()) == ["lost"]
    s.take_outgoing()
    # The session asks who is there again within one hello_timeout_s (2.0 s by default).
    now = 1.5
    while not s.up and now < 3.6:
        now = round(now + 0.1, 1)
        s.tick(now)
        for f in fw.read_named("hello_req"):
            fw.send("hello", f.seq, (codec.PROTO_MINOR, FW_VERSION, 1), now)
    assert s.up, "no hello_req answered within hello_timeout_s after the loss"
    assert "up" in kinds(s.take_events())


def test_next_deadline_covers_link_loss() -> None:
    s, _fw = up_session(0.0, lost_after_s=2.0, heartbeat_s=100.0)
    d = s.next_deadline()
    assert 2.0 < d <= 2.01
    s.tick(d)
    assert "lost" in kinds(s.take_events())


def test_tick_before_next_deadline_does_nothing() -> None:
    s, fw = up_session(0.0, ack_timeout_s=0.3, heartbeat_s=1.0)
    s.command("lamp_set", (1, 0), 0.5)
    fw.read()
    d = s.next_deadline()
    assert d == pytest.approx(0.8)
    s.tick(d - 1e-6)
    assert fw.read() == [] and s.take_events() == []
    s.tick(d)
    assert [f.name for f in fw.read()] == ["lamp_set"]  # the retry


# ---- protocol versions and unknown traffic ---------------------------------------


def _hello_v2(seq: int) -> bytes:
    body = codec._pack_fields("BsI", ("proto_minor", "fw_version", "caps"), (0, "fw 9", 1))
    return codec.encode_frame(codec.msg_id("hello"), seq, 0, body, ver=0x20)


def test_protocol_major_2_makes_the_link_incompatible() -> None:
    s = make_session()
    fw = FakeFirmware(s)
    s.start(0.0)
    (req,) = fw.read_named("hello_req")
    s.receive(_hello_v2(req.seq), 0.1)
    ev = s.take_events()
    (inc,) = [e for e in ev if e.kind == "incompatible"]
    assert "2.0" in inc.detail
    assert "up" not in kinds(ev)
    assert not s.up and s.incompatible
    tok = s.command("lamp_set", (10, 0), 0.2)
    assert [(o.token, o.ok, o.reason) for o in outcomes(s.take_events())] == [
        (tok, False, "incompatible")]
    assert fw.read_named("lamp_set") == []
    # The session stops greeting a board it cannot talk to.
    for i in range(1, 20):
        s.tick(i * 0.5)
    assert fw.read_named("hello_req") == []
    assert set(kinds(s.take_events())) <= {"outcome"}  # no second "incompatible", no "up"


def test_incompatible_board_while_up_fails_pending_commands() -> None:
    s, fw = up_session(0.0, ack_timeout_s=0.25, retries=3, heartbeat_s=100.0)
    tok = s.command("lamp_set", (10, 0), 1.0)
    fw.read()
    s.receive(_hello_v2(5), 1.05)  # the board was swapped for a v2 one
    assert not s.up
    for i in range(1, 9):
        s.tick(1.05 + 0.25 * i)
    # No point retransmitting to a board that speaks another major version.
    assert fw.read_named("lamp_set") == []
    assert [(o.token, o.reason) for o in outcomes(s.take_events())] == [(tok, "incompatible")]


def test_unknown_message_type_is_nakked_unsupported() -> None:
    s, fw = up_session(0.0)
    s.receive(codec.encode_frame(0x7E, 33, 0, b"\x01\x02"), 1.0)
    (nak,) = fw.read_named("nak")
    assert nak.fields() == {"nak_seq": 33, "nak_type": 0x7E, "reason": codec.NAK_UNSUPPORTED}
    assert s.up  # still talking


def test_malformed_body_is_nakked_malformed() -> None:
    s, fw = up_session(0.0)
    s.receive(codec.encode_frame(codec.msg_id("lamp_state"), 9, 0, b"\x01\x02"), 1.0)
    (nak,) = fw.read_named("nak")
    assert nak.fields() == {
        "nak_seq": 9, "nak_type": codec.msg_id("lamp_state"), "reason": codec.NAK_MALFORMED}


# ---- heartbeats, sequence numbers, counters ----------------------------------------


def test_heartbeats_are_sent_every_heartbeat_s() -> None:
    s = make_session(heartbeat_s=1.0)
    fw = FakeFirmware(s)
    s.start(0.0)
    beats: list[tuple[float, object]] = []
    for i in range(0, 51):  # 0.0 .. 5.0 s in 0.1 s steps
        now = i / 10
        if i:
            s.tick(now)
        beats += [(now, f.fields()["uptime_ms"]) for f in fw.read_named("heartbeat")]
    assert [t for t, _ in beats] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [u for _, u in beats] == [0, 1000, 2000, 3000, 4000, 5000]


def test_heartbeat_interval_is_honoured_with_a_slower_setting() -> None:
    s, fw = up_session(0.0, heartbeat_s=2.5)
    times = []
    for i in range(1, 101):  # 0.1 .. 10 s
        now = i / 10
        fw.heartbeat(now)  # keep the link up
        s.tick(now)
        if fw.read_named("heartbeat"):
            times.append(now)
    assert times == [2.5, 5.0, 7.5, 10.0]


def test_seq_numbers_in_flight_are_never_reused() -> None:
    s, fw = up_session(0.0, ack_timeout_s=1000.0, retries=0, heartbeat_s=1000.0,
                       lost_after_s=1000.0)
    in_flight: dict[int, int] = {}  # seq -> token
    now = 1.0
    for i in range(700):  # wraps the 8-bit seq space several times
        tok = s.command("lamp_set", (i % 101, 0), now)
        (f,) = fw.read_named("lamp_set")
        assert f.seq not in in_flight, f"seq {f.seq} reused while in flight"
        in_flight[f.seq] = tok
        if i % 4:  # ack three of four at once; the rest stay in flight
            fw.ack(f, now)
            (out,) = outcomes(s.take_events())
            assert out.token == in_flight.pop(f.seq)
        if i % 40 == 39 and len(in_flight) > 120:  # let the oldest quarter finish late
            for seq in sorted(in_flight)[:60]:
                fw.send("ack", seq, (seq, codec.msg_id("lamp_set")), now)
                (out,) = outcomes(s.take_events())
                assert out.token == in_flight.pop(seq)
    # Late acks close exactly the command that was sent with that seq.
    for seq, tok in list(in_flight.items()):
        fw.send("ack", seq, (seq, codec.msg_id("lamp_set")), now)
        (out,) = outcomes(s.take_events())
        assert (out.token, out.ok) == (tok, True)


def test_garbage_bytes_raise_decoder_counters_and_the_stream_resyncs() -> None:
    s, fw = up_session(0.0)
    before = s.link_counters()
    # CRC error: a well-formed COBS block whose checksum is wrong.
    raw = bytes([codec.VERSION, codec.msg_id("heartbeat"), 7, 0]) + b"\x01\x02\x03\x04"
    crc = codec.crc16(raw) ^ 0x5A5A
    bad_crc = b"\x00" + codec.cobs_encode(raw + bytes([crc >> 8, crc & 0xFF])) + b"\x00"
    # Framing error: a COBS code that runs past the block.
    bad_cobs = b"\x00\x09abc\x00"
    # Oversize: a run longer than any frame.
    too_long = b"\x00" + b"\x55" * (codec.MAX_ENCODED + 10) + b"\x00"
    s.receive(bad_crc + bad_cobs + too_long, 1.0)
    c = s.link_counters()
    assert c["crc_errors"] == before["crc_errors"] + 1
    assert c["framing_errors"] == before["framing_errors"] + 1
    assert c["oversize"] == before["oversize"] + 1
    assert c["resyncs"] >= before["resyncs"] + 3
    assert c["rx_frames"] == before["rx_frames"]
    # A good frame right after the noise still gets through.
    tok = s.request("lamp_get", (), 1.1)
    (req,) = fw.read_named("lamp_get")
    s.receive(b"\xff\xfe" + codec.pack("lamp_state", req.seq, (1, 1, 1, 1, 0)), 1.2)
    assert [o.token for o in outcomes(s.take_events()) if o.ok] == [tok]
    assert s.link_counters()["rx_frames"] == before["rx_frames"] + 1


def test_link_counters_count_frames_both_ways() -> None:
    s, fw = up_session(0.0)
    c0 = s.link_counters()
    s.command("lamp_set", (5, 0), 1.0)
    (f,) = fw.read_named("lamp_set")
    fw.ack(f, 1.01)
    c1 = s.link_counters()
    assert c1["tx_frames"] == c0["tx_frames"] + 1
    assert c1["rx_frames"] == c0["rx_frames"] + 1
