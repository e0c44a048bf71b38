"""The `peripherals` task: one adapter and one monitor per configured device.

`PeripheralHub` runs every enabled device's adapter (restarting a failed one
with backoff), feeds what it reports to the device's `DeviceMonitor` and
publishes the statuses and events that come out. `register_commands` gives the
command dispatcher `screen.text` (through the `ScreenService` of the screen it
arbitrates, straight to any other screen).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from edge_controller.api.commands import CommandOutcome, ScreenText
from edge_controller.backoff import exponential
from edge_controller.peripherals.adapter import Adapter, Sink
from edge_controller.peripherals.config import PeripheralsConfig
from edge_controller.peripherals.monitor import DeviceMonitor, RateLimitedLog
from edge_controller.peripherals.registry import AdapterFactory, default_factory
from edge_controller.peripherals.status import PeripheralStatus

if TYPE_CHECKING:
    from edge_controller.peripherals.screen_service import ScreenService
    from edge_controller.uplink.dispatcher import CommandDispatcher

log = logging.getLogger(__name__)

PublishStatus = Callable[[str, dict[str, Any], bool], None]
OnEvent = Callable[[str, dict[str, Any]], None]


class _HubSink(Sink):
    def __init__(self, hub: PeripheralHub, mon: DeviceMonitor) -> None:
        self._hub = hub
        self._mon = mon

    def reading(self, status: PeripheralStatus) -> None:
        self._mon.reading(status, self._hub.clock())
        self._hub.evaluate(self._mon)

    def contact(self) -> None:
        self._mon.contact(self._hub.clock())

    def error(self, reason: str, detail: str) -> None:
        self._hub.rlog.warning(f"periph {self._mon.device_id}", reason, detail)
        self._mon.error(reason, self._hub.clock())
        self._hub.evaluate(self._mon)

    def connection(self, up: bool, reason: str = "disconnected") -> None:
        log.info("periph %s: peer %s", self._mon.device_id,
                 "connected" if up else f"gone ({reason})")
        self._mon.set_connected(up, self._hub.clock(), reason)
        self._hub.evaluate(self._mon)

    def condition(self, name: str, active: bool, detail: str = "") -> None:
        if active and detail:
            self._hub.rlog.warning(f"periph {self._mon.device_id}", name, detail)
        elif (name in self._mon.conditions) != active:
            log.info("periph %s: %s %s", self._mon.device_id, name,
                     "set" if active else "cleared")
        self._mon.set_condition(name, active)
        self._hub.evaluate(self._mon)


class PeripheralHub:
    """Runs every enabled device's adapter; the body of the `peripherals` task.

    `publish_status(device_id, payload, retain)` receives each status body (the
    uplink stamps it and publishes it retained on periph/<device_id>/status);
    `on_event(name, detail)` receives periph_* events.
    """

    def __init__(
        self,
        cfg: PeripheralsConfig,
        publish_status: PublishStatus,
        on_event: OnEvent,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.1,
        factory: AdapterFactory = default_factory,
        restart_min_s: float = 0.5,
        restart_max_s: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.tick_s = tick_s
        self._publish = publish_status
        self._on_event = on_event
        self._restart = (restart_min_s, restart_max_s)
        self.rlog = RateLimitedLog(log, clock=clock)
        self.shared: dict[str, Any] = {}
        now = clock()
        self.monitors: dict[str, DeviceMonitor] = {}
        self.adapters: dict[str, Adapter] = {}
        for dev in cfg.devices:
            if not dev.enabled:
                continue
            mon = DeviceMonitor.for_device(dev, cfg, now)
            self.monitors[dev.id] = mon
            self.adapters[dev.id] = factory(dev, cfg, _HubSink(self, mon), self.shared)
        self.published = 0
        self.events = 0
        # More bodies to run inside the `peripherals` task (the screen service).
        self.companions: list[Callable[[], Coroutine[Any, Any, None]]] = []

    # ---- task body -------------------------------------------------------------

    async def run(self) -> None:
        if not self.adapters:
            await asyncio.Event().wait()  # nothing configured: idle, healthy
        try:
            async with asyncio.TaskGroup() as tg:
                for dev_id, ad in self.adapters.items():
                    tg.create_task(self._keep(ad), name=f"periph.{dev_id}")
                tg.create_task(self._ticker(), name="periph.tick")
                for i, body in enumerate(self.companions):
                    tg.create_task(body(), name=f"periph.companion{i}")
        finally:
            for ad in self.adapters.values():
                with contextlib.suppress(Exception):
                    await ad.close()

    async def _keep(self, ad: Adapter) -> None:
        failures = 0
        while True:
            t0 = self.clock()
            try:
                await ad.run()
                raise RuntimeError("adapter returned")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                ad.sink.error("adapter_error", f"{type(e).__name__}: {e}")
                log.debug("periph %s: adapter failed", ad.device.id, exc_info=True)
            with contextlib.suppress(Exception):
                await ad.close()
            if self.clock() - t0 > 60:
                failures = 0  # a long good run: the next failure is a new story
            await asyncio.sleep(exponential(*self._restart, failures))
            failures += 1

    async def _ticker(self) -> None:
        while True:
            for mon in self.monitors.values():
                self.evaluate(mon)
            await asyncio.sleep(self.tick_s)

    def evaluate(self, mon: DeviceMonitor) -> None:
        for o in mon.evaluate(self.clock()):
            try:
                if o.kind == "status":
                    self.published += 1
                    self._publish(o.name, o.body, True)
                else:
                    self.events += 1
                    log.info("periph %s: %s %s", mon.device_id, o.name, o.body)
                    self._on_event(o.name, o.body)
            except Exception:
                log.exception("periph %s: publishing %s failed", mon.device_id, o.name)

    # ---- queries and commands ------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Every adapter ok (the `peripherals` task's health probe)."""
        return all(m.health == "ok" for m in self.monitors.values())

    def screen_ids(self) -> list[str]:
        return [i for i, a in self.adapters.items() if a.kind == "led_screen"]

    def set_shown(self, device_id: str, shown: dict[str, Any] | None) -> None:
        """What the pole put on a screen: goes into its retained status at once."""
        mon = self.monitors.get(device_id)
        if mon is not None:
            mon.shown = shown
            self.evaluate(mon)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The current status body of every device (for telemetry or a debug view)."""
        return {i: m.payload() for i, m in self.monitors.items()}

    async def show_text(self, device_id: str | None, text: str, seconds: float) -> CommandOutcome:
        """Show `text` for `seconds` on a screen (`device_id` None: the only screen)."""
        if device_id is None:
            screens = self.screen_ids()
            if len(screens) != 1:
                return CommandOutcome("rejected", "unsupported",
                                      f"{len(screens)} screens configured; name device_id")
            device_id = screens[0]
        ad = self.adapters.get(device_id)
        if ad is None:
            return CommandOutcome("rejected", "unsupported", f"no device {device_id!r}")
        return await ad.show_text(text, seconds)


def register_commands(dispatcher: CommandDispatcher, hub: PeripheralHub | None,
                      screen: ScreenService | None = None) -> None:
    """`screen.text` goes through the screen service for the screen it arbitrates (a
    warning may be up), to the hub for any other (refused when no device is configured)."""
    if hub is None:
        dispatcher.refuse("screen.text", "no LED screen configured")
        return

    async def screen_text(body: ScreenText) -> CommandOutcome:
        if screen is not None and body.device_id in (None, screen.device_id):
            return await screen.backend_text(body.text, body.seconds)
        return await hub.show_text(body.device_id, body.text, body.seconds)

    dispatcher.register("screen.text", ScreenText, screen_text)
