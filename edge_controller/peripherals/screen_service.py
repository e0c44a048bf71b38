"""The pole's own use of its LED screen: the arbiter's decisions applied to one screen.

Inputs: `on_event` (the controller's event fan-out; a `violation` raises the
crossing warning), a `visibility()` callable (band and confidence, read every
tick), and `backend_text` (the `screen.text` command). The body `run()` runs in
the `peripherals` task: it asks the `ScreenArbiter` what the screen should
show and, on a change, sends it through the screen's adapter. Display time is
what remains of the content; content without an end (fog, idle text) is sent
for `hold_s` and sent again before that runs out; text too long for the screen
is paged every `page_s` (a screen that scrolls gets it whole). Every change
is reported in the screen's retained status (`shown`) and as a
`screen_changed` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edge_controller.api.commands import CommandOutcome
from edge_controller.clock import utc_iso
from edge_controller.peripherals.hub import OnEvent, PeripheralHub
from edge_controller.peripherals.led_screen import LedScreenAdapter
from edge_controller.peripherals.screen_arbiter import ScreenArbiter, ScreenWarningsConfig, Shown

log = logging.getLogger(__name__)

EVENT = "screen_changed"
TICK_S = 0.5  # visibility is read and expiries are checked this often
RETRY_S = 2.0  # a screen that refused or did not answer is tried again after this
Visibility = Callable[[], tuple[str, float] | None]


class ScreenService:
    def __init__(self, cfg: ScreenWarningsConfig, hub: PeripheralHub, adapter: LedScreenAdapter,
                 timezone: str, on_event: OnEvent, *, visibility: Visibility | None = None,
                 clock: Callable[[], float] = time.time, tick_s: float = TICK_S) -> None:
        self.cfg = cfg
        self.hub = hub
        self.adapter = adapter
        self.device_id = adapter.device.id
        self.arbiter = ScreenArbiter(cfg, timezone)
        self._on_event = on_event
        self._visibility = visibility
        self._clock = clock
        self._tick_s = tick_s
        self._lock = asyncio.Lock()  # one decision applied at a time
        self._wake = asyncio.Event()
        self.shown: Shown | None = None  # the content being applied
        self._pages: list[str] = []
        self._page = 0
        self._next_send = math.inf
        self.applied = False
        self._violation_at: float | None = None  # for the latency figure
        self.latency_ms: deque[float] = deque(maxlen=200)  # violation -> screen acked
        self.changes = 0

    @classmethod
    def create(cls, cfg: ScreenWarningsConfig, hub: PeripheralHub, timezone: str,
               on_event: OnEvent, **kw: Any) -> ScreenService | None:
        """The service for the configured (or only) screen; None when there is none."""
        ids = hub.screen_ids()
        want = cfg.device_id if cfg.device_id is not None else (ids[0] if len(ids) == 1
                                                                else None)
        ad = hub.adapters.get(want) if want is not None else None
        if not isinstance(ad, LedScreenAdapter):
            if ids:
                log.warning("screen_warnings: no screen to arbitrate (device_id %r; screens: "
                            "%s); the pole shows nothing by itself", cfg.device_id,
                            ", ".join(ids))
            return None
        svc = cls(cfg, hub, ad, timezone, on_event, **kw)
        hub.companions.append(svc.run)
        return svc

    # ---- inputs ---------------------------------------------------------------------

    def on_event(self, name: str, detail: dict[str, Any]) -> None:
        """Every event the pole publishes passes here; a violation raises the warning."""
        if name != "violation":
            return
        now = self._clock()
        if self.arbiter.violation(str(detail.get("zone", "")), now):
            self._violation_at = now
            self._wake.set()

    async def backend_text(self, text: str, seconds: float) -> CommandOutcome:
        """`screen.text` for this screen: shown now, or held under a warning."""
        refused = self.adapter.check_text(text, seconds)
        if refused is not None:
            return refused
        now = self._clock()
        self.arbiter.backend_text(text, seconds, now)
        cur = self.arbiter.current(now)
        if cur.source != "backend":
            until = "" if cur.until is None else f" (in {cur.until - now:.0f} s)"
            return CommandOutcome(
                "ok", "done", f"held: the {cur.source} warning is on {self.device_id}; this "
                f"text is shown when it ends{until}, for what then remains of its "
                f"{seconds:g} s")
        out = await self.step()
        return out if out is not None else CommandOutcome(
            "ok", "done", f"already showing this text on {self.device_id}")

    # ---- the task body --------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # a bad decision must not stop the screen for good
                log.exception("screen %s: applying the arbiter's decision failed",
                              self.device_id)
            wait = min(self._tick_s, max(0.0, self._next_send - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def step(self) -> CommandOutcome | None:
        """One decision: send a change, the next page, or a refresh when due. Returns what
        the screen answered when something was sent."""
        async with self._lock:
            now = self._clock()
            if self._visibility is not None:
                vis = self._visibility()
                if vis is not None:
                    self.arbiter.visibility(vis[0], vis[1], now)
            ch = self.arbiter.changed(now)
            if ch is not None:
                prev = self.shown
                # Same content, new end (a warning extended, a text sent again): the
                # screen gets the new display time and the status the new `until`, but
                # it is not a new change for the event stream.
                again = prev is not None and (prev.source, prev.text) == (ch.source, ch.text)
                self.shown = ch if not again or prev is None else \
                    dataclasses.replace(ch, since=prev.since)
                self._pages = self._layout(ch)
                self._page = 0
                out = await self._send(now)
                self._report(prev, out, event=not again)
                return out
            if self.shown is not None and now >= self._next_send:
                was = self.applied
                self._page = (self._page + 1) % max(1, len(self._pages))
                out = await self._send(now)
                if self.applied != was:
                    self._report(self.shown, out)
                return out
            return None

    # ---- applying -------------------------------------------------------------------

    def _layout(self, sh: Shown) -> list[str]:
        """The pages of this content for this screen ([] : nothing to send)."""
        text = sh.text
        if sh.source in ("crossing", "fog"):
            # The pole's own templates: only the languages the screen has glyphs for
            # (an ASCII screen gets the ASCII lines).
            info, cs = self.adapter.info, self.adapter.profile.charset
            text = "\n".join(ln for ln in text.splitlines() if info.showable(ln, cs))
        if not text.strip():
            return []
        return self.adapter.info.layout(text)

    async def _send(self, now: float) -> CommandOutcome | None:
        sh = self.shown
        assert sh is not None
        c = self.cfg
        remaining = None if sh.until is None else sh.until - now
        if not self._pages:
            self._next_send = math.inf
            if sh.source in ("crossing", "fog"):
                self.applied = False
                return CommandOutcome("failed", "device_error", "no line of the template "
                                      "has glyphs on this screen")
            # Nothing to show: the screen's own content (at once where the profile can).
            out = await self.adapter.clear()
            self.applied = out is None or out.status == "ok"
            if not self.applied:
                self._next_send = now + RETRY_S
            return out
        cap = self.adapter.settings.max_text_s
        if len(self._pages) > 1:
            secs = c.page_s if remaining is None else min(c.page_s, remaining)
            nxt = now + c.page_s
        elif remaining is None:
            secs = min(c.hold_s, cap)
            nxt = now + secs - c.refresh_margin_s
        else:
            secs = remaining
            nxt = math.inf  # it ends by itself; the arbiter says what comes next
        if secs <= 0:
            return None
        out = await self.adapter.put(self._pages[self._page], min(secs, cap), sh.brightness,
                                     sh.colour)
        self.applied = out.status == "ok"
        self._next_send = nxt if self.applied else now + RETRY_S
        if self.applied and sh.source == "crossing" and self._violation_at is not None:
            self.latency_ms.append((self._clock() - self._violation_at) * 1000)
            self._violation_at = None
        if not self.applied:
            log.warning("screen %s: %s not shown: %s", self.device_id, sh.source, out.detail)
        return out

    def _report(self, prev: Shown | None, out: CommandOutcome | None,
                event: bool = True) -> None:
        sh = self.shown
        assert sh is not None
        body = {"source": sh.source, "reason": sh.reason, "text": sh.text,
                "since": utc_iso(sh.since),
                "until": None if sh.until is None else utc_iso(sh.until),
                "applied": self.applied}
        self.hub.set_shown(self.device_id, body)  # status first, then the event
        if not event:
            return
        self.changes += 1
        detail: dict[str, Any] = {
            "device_id": self.device_id, "kind": "led_screen", **body,
            "previous": None if prev is None else prev.source, "pages": len(self._pages),
            "answer": "" if out is None else out.detail}
        log.info("screen %s: %s (%s)%s", self.device_id, sh.source, sh.reason,
                 "" if self.applied else " - not applied")
        self._on_event(EVENT, detail)
