"""The screen service end to end: arbiter -> adapter -> the screen simulator over TCP, in
both profiles. What the screen shows is read from the simulator (the real peer), what
the pole reports from the hub's published status and events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from polesim.peripherals.screen import ScreenSim

from edge_controller.api.messages import EVENTS
from edge_controller.peripherals import PeripheralHub, PeripheralsConfig
from edge_controller.peripherals.adapter import REGISTERED
from edge_controller.peripherals.led_screen import LedScreenAdapter, Utf8V1
from edge_controller.peripherals.screen_arbiter import ScreenWarningsConfig
from edge_controller.peripherals.screen_service import EVENT, ScreenService

from .conftest import Captured

EN, ZH = "Red light: please wait", "红灯 请勿通行"


@pytest.fixture(autouse=True)
def _real_screen_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTERED, "led_screen", LedScreenAdapter)  # see test_screen_integration


class Vis:
    """The visibility the service reads every tick (what DimmingService would say)."""

    def __init__(self) -> None:
        self.now: tuple[str, float] | None = None

    def __call__(self) -> tuple[str, float] | None:
        return self.now


@contextlib.asynccontextmanager
async def served(sim: ScreenSim, vis: Vis | None = None, **warn: Any
                 ) -> AsyncIterator[tuple[ScreenService, Captured]]:
    cap = Captured()
    cfg = PeripheralsConfig.model_validate({"devices": [{
        "id": "screen-1", "kind": "led_screen", "poll_s": 0.2, "lost_after_s": 3.0,
        "screen": {"address": sim.address, "timeout_s": 0.5,
                   "profile": sim.profile, "max_text_len": 120}}]})
    hub = PeripheralHub(cfg, cap.publish, cap.event, tick_s=0.02)
    w = {"crossing_s": 1.5, "crossing_cooldown_s": 0.0, "fog_on_s": 0.0, "fog_off_s": 0.5,
         "page_s": 1.0, "hold_s": 6.0, "refresh_margin_s": 1.0, **warn}
    svc = ScreenService.create(ScreenWarningsConfig(**w), hub, "UTC", cap.event,
                               visibility=vis, tick_s=0.05)
    assert svc is not None
    task = asyncio.create_task(hub.run())
    try:
        yield svc, cap
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(pred: Any, within_s: float = 5.0, what: str = "") -> float:
    end = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what or pred}"
        await asyncio.sleep(0.01)
    return time.monotonic()


def changes(cap: Captured) -> list[dict[str, Any]]:
    return [d for _, n, d in cap.events if n == EVENT]


def last_shown(cap: Captured) -> dict[str, Any] | None:
    return cap.of("screen-1")[-1].get("shown") if cap.of("screen-1") else None


async def test_a_violation_shows_the_warning_and_the_backend_text_comes_back() -> None:
    sim = await ScreenSim(profile=Utf8V1.name, cols=24, rows=2).start()
    try:
        async with served(sim) as (svc, cap):
            await until(lambda: svc.adapter.info_from_device, what="INFO")
            out = await svc.backend_text("Market on Sunday", 30)
            assert (out.status, out.reason) == ("ok", "done")
            assert sim.showing() == "Market on Sunday"
            t0 = time.monotonic()
            svc.on_event("violation", {"zone": "mid-road", "track_id": 7})
            await until(lambda: sim.showing() == f"{EN}\n{ZH}", 2, "the warning")
            assert time.monotonic() - t0 < 0.5  # woken at once, not at the next tick
            w = sim.shown[-1]
            assert w.seconds in (1, 2) and w.colour == "red"  # ~1.5 s remaining, whole s
            # A backend text during the warning is held, and the result says so.
            out = await svc.backend_text("Road works ahead", 30)
            assert out.status == "ok" and "held" in out.detail and "crossing" in out.detail
            assert sim.showing() == f"{EN}\n{ZH}"
            await until(lambda: sim.showing() == "Road works ahead", 3, "the backend text")
            assert 26 <= sim.shown[-1].seconds <= 30  # what remains of its 30 s
            srcs = [c["source"] for c in changes(cap)]
            assert srcs[-3:] == ["backend", "crossing", "backend"], srcs
            crossing = next(c for c in changes(cap) if c["source"] == "crossing")
            assert crossing["reason"] == "violation in zone mid-road"
            assert crossing["previous"] == "backend" and crossing["applied"]
            assert "track" not in str(crossing)  # no identity on the screen or in its report
            await until(lambda: (last_shown(cap) or {}).get("source") == "backend", 2)
            assert svc.latency_ms and max(svc.latency_ms) < 500
            assert EVENT in EVENTS
    finally:
        await sim.stop()


async def test_an_ascii_screen_gets_the_ascii_lines_and_no_clear() -> None:
    sim = await ScreenSim(cols=32, rows=2).start()  # smartpole-ascii-v1
    try:
        async with served(sim) as (svc, cap):
            await until(lambda: last_shown(cap) is not None, what="first status with shown")
            svc.on_event("violation", {"zone": "z"})
            await until(lambda: sim.showing() == EN, 2, "the ASCII line")
            assert all(t.isascii() for t, _ in sim.texts)
            # The warning runs out on the screen's own timer (v1 cannot clear): display
            # time was what remained, so it ends with the warning.
            await until(lambda: sim.showing() is None, 3, "the end of the warning")
            await until(lambda: (last_shown(cap) or {}).get("source") == "idle", 2)
            assert sim.shown[-1].text == EN  # no CLEAR in v1
    finally:
        await sim.stop()


async def test_fog_warning_on_refreshed_paged_and_off() -> None:
    vis = Vis()
    # 12 columns, 1 row: the fog template needs pages; CJK without glyphs is left out.
    sim = await ScreenSim(profile=Utf8V1.name, cols=12, rows=1, cjk=False).start()
    try:
        async with served(sim, vis, hold_s=6.0) as (svc, cap):
            await until(lambda: svc.adapter.info_from_device, what="INFO")
            vis.now = ("unknown", 0.0)
            await asyncio.sleep(0.3)
            assert not [c for c in changes(cap) if c["source"] == "fog"]  # unknown never warns
            vis.now = ("50-200", 0.9)
            await until(lambda: (sim.showing() or "").startswith("Fog"), 2, "the fog warning")
            t_on = time.monotonic()
            await until(lambda: len([s for s in sim.shown if s.text]) >= 5, 7, "pages, again")
            pages = [s.text for s in sim.shown if s.text]
            assert pages[:5] == ["Fog:", "visibility <", "200 m, slow", "down", "Fog:"], pages
            assert all(len(p) <= 12 and "大" not in p for p in pages)
            assert all(s.seconds <= 1 for s in sim.shown if s.text)  # page_s each
            fog = next(c for c in changes(cap) if c["source"] == "fog")
            assert fog["reason"] == "visibility 50-200 m" and fog["pages"] == 4
            vis.now = ("200-1000", 0.9)
            await until(lambda: (last_shown(cap) or {}).get("source") == "idle", 3, "clear")
            assert time.monotonic() - t_on >= 0.5  # fog_off_s of hysteresis
            assert sim.shown[-1].text == "" and sim.showing() is None  # CLEAR sent
    finally:
        await sim.stop()


async def test_a_long_lived_warning_is_sent_again_before_it_runs_out() -> None:
    vis = Vis()
    sim = await ScreenSim(profile=Utf8V1.name, cols=40, rows=2).start()
    try:
        async with served(sim, vis, hold_s=6.0, refresh_margin_s=4.5) as (_svc, cap):
            vis.now = ("<50", 0.9)
            await until(lambda: (sim.showing() or "").startswith("Fog: visibility < 50 m"),
                        3, "fog")
            n = len(sim.shown)
            assert sim.shown[-1].seconds == 6
            # Sent again 1.5 s later (hold 6 s - margin 4.5 s), never blank in between.
            await until(lambda: len(sim.shown) > n, 3, "the refresh")
            gap = sim.shown[-1].t - sim.shown[n - 1].t
            assert 1.3 <= gap <= 2.5, gap
            assert sim.showing() is not None
            assert len([c for c in changes(cap) if c["source"] == "fog"]) == 1  # no new change
    finally:
        await sim.stop()


async def test_a_refusing_screen_is_reported_and_tried_again() -> None:
    sim = await ScreenSim(profile=Utf8V1.name).start()
    try:
        async with served(sim) as (svc, cap):
            await until(lambda: svc.adapter.info_from_device, what="INFO")
            sim.refuse_text()
            svc.on_event("violation", {"zone": "z"})
            await until(lambda: (last_shown(cap) or {}).get("source") == "crossing", 2)
            assert last_shown(cap)["applied"] is False  # type: ignore[index]
            sim.refuse_text(False)
            # crossing_s is 1.5 s and retries come every 2 s: extend it so a retry lands.
            svc.arbiter.violation("z", time.time())
            await until(lambda: sim.showing() is not None, 3, "the retry")
    finally:
        await sim.stop()


async def test_an_extension_resends_the_display_time_without_a_new_event() -> None:
    sim = await ScreenSim(profile=Utf8V1.name).start()
    try:
        async with served(sim, crossing_s=2.0) as (svc, cap):
            await until(lambda: svc.adapter.info_from_device, what="INFO")
            svc.on_event("violation", {"zone": "z"})
            await until(lambda: sim.showing() == f"{EN}\n{ZH}", 2, "the warning")
            first = (last_shown(cap) or {}).get("until")
            n = len(sim.shown)
            await asyncio.sleep(1.0)
            svc.on_event("violation", {"zone": "z"})  # still up: extended
            await until(lambda: len(sim.shown) > n, 2, "the new display time")
            await until(lambda: (last_shown(cap) or {}).get("until") != first, 2, "until")
            assert sim.shown[-1].seconds == 2
            assert [c["source"] for c in changes(cap)].count("crossing") == 1
    finally:
        await sim.stop()
