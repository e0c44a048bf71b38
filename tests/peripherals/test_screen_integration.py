"""LED screen end to end: the screen simulator over TCP (and a pty serial line) <-> adapter."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from polesim.peripherals.screen import ScreenSim

from edge_controller.peripherals.adapter import REGISTERED
from edge_controller.peripherals.led_screen import LedScreenAdapter

from .conftest import running_hub


@pytest.fixture(autouse=True)
def _real_screen_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    # test_hub.py's fake adapter registers itself for kind led_screen when its module is
    # imported; these tests are about the real one.
    monkeypatch.setitem(REGISTERED, "led_screen", LedScreenAdapter)

POLL_S = 0.1
LOST_AFTER_S = 1.0
# The hub's tick and scheduling on a loaded 2-core CI machine (0.4 s was not enough).
SLACK_S = 1.0
LATE_POLL_S = 0.3  # a poll that came late leaves the last contact earlier than it seems


def cfg(address: str, poll_s: float = POLL_S, lost_after_s: float = LOST_AFTER_S,
        **screen: Any) -> dict[str, Any]:
    return {"devices": [{"id": "screen-1", "kind": "led_screen", "poll_s": poll_s,
                         "lost_after_s": lost_after_s,
                         "screen": {"address": address, "timeout_s": 0.2, **screen}}],
            "degraded_hold_s": 0.5}


@pytest.fixture
async def sim() -> AsyncIterator[ScreenSim]:
    s = await ScreenSim().start()
    yield s
    await s.stop()


def shows(**want: Any) -> Any:
    return lambda p: p["screen"] is not None and p["health"] == "ok" and all(
        p["screen"][k] == v for k, v in want.items())


async def test_status_changes_and_a_fault_event(sim: ScreenSim) -> None:
    async with running_hub(cfg(sim.address)) as (_hub, cap):
        _, p = await cap.wait_status("screen-1", shows(on=True, content_id="welcome"))
        assert p["screen"] == {"on": True, "brightness": 80, "content_id": "welcome",
                               "temperature_c": 35.0, "fault": None}
        assert p["charger"] is None
        sim.set(brightness=40, content_id="bus-times")
        await cap.wait_status("screen-1", shows(brightness=40, content_id="bus-times"))
        sim.set(fault="PSU", on=False)
        await cap.wait_status("screen-1", shows(fault="PSU", on=False))
        _, ev = await cap.wait_event("periph_fault_raised", "screen-1")
        assert ev["fault"] == "PSU"
        sim.set(fault=None, on=True)
        await cap.wait_event("periph_fault_cleared", "screen-1")


async def test_show_text(sim: ScreenSim) -> None:
    # A 5 s poll period, so that "polled at once" is told from "at the next period" with
    # seconds of slack (with 0.1 s polls the check was 0.1 s wide).
    async with running_hub(cfg(sim.address, poll_s=5.0, lost_after_s=30.0)) as (hub, cap):
        await cap.wait_status("screen-1", shows())
        t0 = time.monotonic()
        out = await hub.show_text(None, "Red light - please wait", 3)
        assert (out.status, out.reason) == ("ok", "done")
        assert sim.texts == [("Red light - please wait", 3)]
        t, _ = await cap.wait_status("screen-1", shows(content_id="text"), after=t0)
        assert t - t0 < 2.5  # polled at once, not at the next period (5 s)
        sim.refuse_text()
        out = await hub.show_text("screen-1", "again", 3)
        assert (out.status, out.reason) == ("failed", "device_nak") and "busy" in out.detail
        for text, secs in (("", 3), ("x" * 65, 3), ("bell\x07", 3), ("ok", 0), ("ok", 601)):
            out = await hub.show_text("screen-1", text, secs)
            assert (out.status, out.reason) == ("rejected", "schema"), (text, secs)
        assert (await hub.show_text("nope", "x", 1)).reason == "unsupported"
        sim.silent()
        out = await hub.show_text("screen-1", "anyone?", 3)
        assert (out.status, out.reason) == ("failed", "timeout")


async def test_text_disabled_and_no_screen() -> None:
    async with running_hub(cfg("tcp:127.0.0.1:9", text_enabled=False)) as (hub, _cap):
        out = await hub.show_text(None, "hello", 5)
        assert (out.status, out.reason) == ("rejected", "unsupported")
    async with running_hub({"devices": []}) as (hub, _cap):
        out = await hub.show_text(None, "hello", 5)
        assert (out.status, out.reason) == ("rejected", "unsupported")
        assert hub.healthy


async def test_a_silent_screen_is_lost_in_time_and_restored(sim: ScreenSim) -> None:
    async with running_hub(cfg(sim.address)) as (_hub, cap):
        await cap.wait_status("screen-1", shows())
        t0 = time.monotonic()
        sim.silent()
        t_lost, ev = await cap.wait_event("periph_lost", "screen-1", within_s=4)
        assert LOST_AFTER_S - POLL_S - LATE_POLL_S <= t_lost - t0 <= LOST_AFTER_S + SLACK_S, \
            t_lost - t0
        assert ev["reasons"] == ["no_answer"]
        t1 = time.monotonic()
        sim.silent(False)
        t_rest, _ = await cap.wait_event("periph_restored", "screen-1", within_s=4)
        assert t_rest - t1 <= POLL_S + 0.2 + SLACK_S


async def test_a_closed_screen_port_is_a_port_error() -> None:
    sim = await ScreenSim().start()
    address = sim.address
    async with running_hub(cfg(address)) as (_hub, cap):
        await cap.wait_status("screen-1", shows())
        await sim.stop()
        _, ev = await cap.wait_event("periph_lost", "screen-1", within_s=4)
        assert ev["reasons"] in (["port_error"], ["no_answer"])


async def test_bad_checksums_are_rejected_and_logged(sim: ScreenSim,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    async with running_hub(cfg(sim.address)) as (_hub, cap):
        await cap.wait_status("screen-1", shows())
        with caplog.at_level(logging.WARNING, logger="edge_controller.peripherals"):
            sim.corrupt(2)
            t, p = await cap.wait_status("screen-1", lambda p: p["health"] == "degraded")
        assert p["reasons"] == ["malformed_reply"]
        assert any("checksum mismatch" in r.getMessage() for r in caplog.records)
        sim.set(content_id="after")
        await cap.wait_status("screen-1", shows(content_id="after"), within_s=3, after=t)


async def test_over_a_serial_line() -> None:
    sim = await ScreenSim().start_serial()
    try:
        assert sim.address.startswith("serial:/dev/")
        async with running_hub(cfg(sim.address)) as (hub, cap):
            await cap.wait_status("screen-1", shows(content_id="welcome"))
            out = await hub.show_text("screen-1", "Fog ahead", 10)
            assert out.status == "ok" and sim.texts == [("Fog ahead", 10)]
            await cap.wait_status("screen-1", shows(content_id="text"))
    finally:
        await sim.stop()
