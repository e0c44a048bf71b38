"""The smartpole-ascii-v1 screen profile (sans-I/O) and the profile registry."""

from __future__ import annotations

import pytest
from polesim.peripherals.screen import ScreenSim

from edge_controller.peripherals.led_screen import (
    PROFILES,
    AsciiV1,
    ScreenReject,
    describe_profiles,
    xor_checksum,
)

P = AsciiV1()


def test_frames_carry_an_xor_checksum() -> None:
    assert P.status_request() == b"STATUS?*%02X\r\n" % xor_checksum(b"STATUS?")
    assert AsciiV1.unframe(AsciiV1.frame("OK")) == "OK"
    assert P.text_request("Red light - wait", 9.6) == AsciiV1.frame("TEXT 10 Red light - wait")


def test_status_parses() -> None:
    s = P.parse_status(AsciiV1.frame("STATUS on=1 bri=80 content=ad-0012 temp=41.5 fault=0"))
    assert (s.on, s.brightness, s.content_id, s.temperature_c, s.fault) == (
        True, 80, "ad-0012", 41.5, None)
    s = P.parse_status(AsciiV1.frame("STATUS on=0 bri=0 content=- temp=- fault=PSU"))
    assert (s.on, s.content_id, s.temperature_c, s.fault) == (False, None, None, "PSU")


@pytest.mark.parametrize("frame, reason", [
    (b"STATUS on=1 bri=80 content=a temp=1 fault=0\r\n", "malformed_reply"),  # no checksum
    (b"STATUS on=1 bri=80 content=a temp=1 fault=0*00\r\n", "malformed_reply"),
    (b"STATUS on=1*ZZ\r\n", "malformed_reply"),
    (AsciiV1.frame("HELLO"), "malformed_reply"),
    (AsciiV1.frame("STATUS on=1 bri=80"), "malformed_reply"),
    (AsciiV1.frame("STATUS on=1 bri=80 content temp=1 fault=0"), "malformed_reply"),
    (AsciiV1.frame("STATUS on=2 bri=80 content=a temp=1 fault=0"), "bad_value"),
    (AsciiV1.frame("STATUS on=1 bri=180 content=a temp=1 fault=0"), "bad_value"),
    (AsciiV1.frame("STATUS on=1 bri=80 content=a temp=hot fault=0"), "bad_value"),
    (AsciiV1.frame("STATUS on=1 bri=80 content=a temp=nan fault=0"), "bad_value"),
    (b"\xff\xfe*01\r\n", "malformed_reply"),
])
def test_bad_status_replies_are_rejected(frame: bytes, reason: str) -> None:
    with pytest.raises(ScreenReject) as e:
        P.parse_status(frame)
    assert e.value.reason == reason


def test_acks() -> None:
    assert P.parse_ack(AsciiV1.frame("OK")) is None
    assert P.parse_ack(AsciiV1.frame("ERR busy")) == "busy"
    with pytest.raises(ScreenReject):
        P.parse_ack(AsciiV1.frame("MAYBE"))


def test_text_may_contain_the_checksum_delimiter() -> None:
    sim = ScreenSim()
    assert P.parse_ack(sim.answer(P.text_request("5 * 3 = 15", 3)) or b"") is None
    assert sim.texts == [("5 * 3 = 15", 3)]


def test_registry() -> None:
    assert "smartpole-ascii-v1" in PROFILES and PROFILES["smartpole-ascii-v1"] is AsciiV1
    assert describe_profiles()["smartpole-ascii-v1"].startswith("`smartpole-ascii-v1`")
