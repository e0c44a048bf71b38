"""The smartpole-ascii-v1 screen profile (sans-I/O) and the profile registry."""

from __future__ import annotations

import pytest
from polesim.peripherals.screen import ScreenSim

from edge_controller.peripherals.led_screen import (
    PROFILES,
    AsciiV1,
    ScreenInfo,
    ScreenReject,
    Utf8V1,
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


U = Utf8V1()


def test_ascii_v1_sends_one_line_and_no_brightness() -> None:
    assert P.text_request("a\nb", 5, 90, "red") == AsciiV1.frame("TEXT 5 a b")
    assert P.info_request() is None and P.clear_request() is None


def test_utf8_v1_text_info_and_clear() -> None:
    req = U.text_request("Red light\n红灯 请勿通行 \\", 8, 80, "red")
    assert req == Utf8V1.frame("TEXT 8 80 red Red light\\n红灯 请勿通行 \\\\")
    assert Utf8V1.unescape("Red light\\n红灯 \\\\") == "Red light\n红灯 \\"
    assert U.text_request("x", 3) == Utf8V1.frame("TEXT 3 - - x")
    assert U.clear_request() == Utf8V1.frame("CLEAR")
    info = U.parse_info(Utf8V1.frame("INFO cols=24 rows=2 cjk=1 bri=1 colours=red,white "
                                     "scroll=0"))
    assert info == ScreenInfo(24, 2, True, True, ("red", "white"), False)
    assert U.parse_info(Utf8V1.frame("INFO cols=8 rows=1 cjk=0 bri=0 colours=- scroll=1")
                        ).colours == ()
    for bad in ("INFO cols=24 rows=2", "INFO cols=0 rows=2 cjk=1 bri=1 colours=- scroll=0",
                "INFO cols=a rows=2 cjk=1 bri=1 colours=- scroll=0", "STATUS on=1"):
        with pytest.raises(ScreenReject):
            U.parse_info(Utf8V1.frame(bad))


def test_layout_and_glyphs() -> None:
    i = ScreenInfo(8, 1, cjk=False)
    assert i.showable("Red", "utf-8") and not i.showable("红灯", "utf-8")
    assert ScreenInfo(8, 1, cjk=True).showable("红灯", "utf-8")
    assert not i.showable("红灯", "ascii") and not ScreenInfo(8, 1, cjk=True).showable("é", "ascii")
    assert i.layout("Red light: wait") == ["Red", "light:", "wait"]
    assert ScreenInfo(8, 1, scroll=True).layout("Red light: wait") == ["Red light: wait"]


def test_the_simulator_checks_fit_and_glyphs() -> None:
    sim = ScreenSim(profile=Utf8V1.name, cols=4, rows=1, cjk=False)
    assert U.parse_ack(sim.answer(U.text_request("红灯", 3)) or b"") == "charset"
    assert U.parse_ack(sim.answer(U.text_request("wait!", 3)) or b"") == "too_long"
    assert U.parse_ack(sim.answer(U.text_request("ab\ncd", 3)) or b"") == "too_long"
    assert U.parse_ack(sim.answer(U.text_request("wait", 3, 40)) or b"") is None
    assert sim.showing() == "wait" and sim.shown[-1].brightness == 40
    assert U.parse_ack(sim.answer(U.clear_request()) or b"") is None
    assert sim.showing() is None
    cjk = ScreenSim(profile=Utf8V1.name, cols=4, rows=2)
    assert U.parse_ack(cjk.answer(U.text_request("红灯\n请勿", 3)) or b"") is None
    assert U.parse_ack(cjk.answer(U.text_request("红灯请", 3)) or b"") == "too_long"


def test_registry_has_both() -> None:
    assert PROFILES["smartpole-utf8-v1"] is Utf8V1
    assert describe_profiles()["smartpole-utf8-v1"].startswith("`smartpole-utf8-v1`")
