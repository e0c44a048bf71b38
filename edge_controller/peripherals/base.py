"""The adapter interface and the hub that runs the adapters as the `peripherals` task.

An adapter talks to one device (polling it, or listening for it) and tells its
`Sink` what happened: a normalised reading, plain contact, a failed or rejected
exchange (with a reason code), a connection going up or down, a persistent
condition. `DeviceMonitor` (sans-I/O, driven by a `now` argument) turns that
into health (`ok`, `degraded`, `lost` with reasons), change-of-value status
publishing with a periodic refresh, and lost/restored and fault events.
`PeripheralHub` owns one adapter and one monitor per configured device.

Health rules (docs/peripherals.md):
- lost: nothing heard for `lost_after_s` (a listener's open connection counts as
  heard; a closed one does not);
- degraded: heard, but a rejected or failed exchange within `degraded_hold_s`,
  or a persistent condition (e.g. `upstream_unreachable`);
- ok: otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from edge_controller.clock import utc_iso
from edge_controller.peripherals.config import DeviceConfig, DeviceKind, PeripheralsConfig
from edge_controller.peripherals.status import (
    Health,
    PeripheralStatus,
    payload,
    significant_change,
)

log = logging.getLogger(__name__)

PublishStatus = Callable[[str, dict[str, Any], bool], None]
OnEvent = Callable[[str, dict[str, Any]], None]

EVENT_LOST = "periph_lost"
EVENT_RESTORED = "periph_restored"
EVENT_FAULT_RAISED = "periph_fault_raised"
EVENT_FAULT_CLEARED = "periph_fault_cleared"
EVENTS = (EVENT_LOST, EVENT_RESTORED, EVENT_FAULT_RAISED, EVENT_FAULT_CLEARED)

# Reason codes (snake_case) that appear in `reasons`.
REASONS = (
    "no_answer",            # the peer did not answer in time
    "exception_response",   # Modbus exception reply (illegal address, busy, ...)
    "malformed_reply",      # a reply that failed a check (length, checksum, syntax)
    "bad_value",            # a well-formed reply with a value outside the profile
    "malformed_message",    # an OCPP message that is not valid OCPP 1.6J
    "port_error",           # the serial port / TCP endpoint could not be opened
    "disconnected",         # a listener's peer closed its connection
    "never_connected",      # a listener's peer has not connected since start
    "upstream_unreachable",  # OCPP proxy: the central system cannot be reached
    "boot_rejected",        # OCPP: the central system rejected the charger's boot
    "adapter_error",        # the adapter itself failed and is being restarted
)


class Sink(ABC):
    """What an adapter reports; bound to one device and the hub's clock."""

    @abstractmethod
    def reading(self, status: PeripheralStatus) -> None:
        """A good, normalised reading (also counts as contact)."""

    @abstractmethod
    def contact(self) -> None:
        """Heard from the peer (e.g. an OCPP Heartbeat), nothing new to report."""

    @abstractmethod
    def error(self, reason: str, detail: str) -> None:
        """A failed or rejected exchange; `reason` is a code from REASONS, `detail` is logged."""

    @abstractmethod
    def connection(self, up: bool, reason: str = "disconnected") -> None:
        """A listener's peer connected (up) or went away."""

    @abstractmethod
    def condition(self, name: str, active: bool, detail: str = "") -> None:
        """A persistent degraded reason that holds until cleared; `detail` (why it is set)
        is logged like an error's, but nothing is held for degraded_hold_s after clearing."""


@dataclass(frozen=True)
class CommandOutcome:
    """The result of a command to a device, shaped like a cmd/result."""

    status: Literal["ok", "rejected", "failed"]
    reason: str
    detail: str


class Adapter(ABC):
    """One device. `run()` polls or listens until cancelled; raising restarts it (backoff)."""

    kind: ClassVar[DeviceKind]

    def __init__(self, device: DeviceConfig, sink: Sink) -> None:
        self.device = device
        self.sink = sink

    @abstractmethod
    async def run(self) -> None: ...

    async def show_text(self, text: str, seconds: float) -> CommandOutcome:
        return CommandOutcome("rejected", "unsupported",
                              f"{self.device.id} ({self.kind}) cannot show text")

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what run() left open (called after run() ends or is cancelled)."""


@dataclass
class Output:
    kind: Literal["status", "event"]
    name: str  # device id for a status, event name for an event
    body: dict[str, Any]


@dataclass
class DeviceMonitor:
    """Health, change-of-value and events for one device (sans-I/O)."""

    device_id: str
    kind: DeviceKind
    lost_after_s: float
    degraded_hold_s: float
    refresh_s: float
    deadband_pct: float
    started: float
    wall: Callable[[], str] = utc_iso
    listener: bool = False  # a listener's health follows its connection

    status: PeripheralStatus | None = None
    seen_at: str | None = None
    last_contact: float | None = None
    connected: bool = False
    conn_reason: str = "never_connected"
    errors: dict[str, float] = field(default_factory=dict)
    last_error: str | None = None
    conditions: set[str] = field(default_factory=set)
    health: Health | None = None  # None: pending (nothing known yet, not lost yet)
    reasons: list[str] = field(default_factory=list)
    fault: str | None = None
    lost_since: float | None = None
    lost_announced: bool = False
    rejected: int = 0
    readings: int = 0
    _pub: tuple[Health, tuple[str, ...], PeripheralStatus | None] | None = None
    _pub_t: float = 0.0

    @classmethod
    def for_device(cls, dev: DeviceConfig, cfg: PeripheralsConfig, now: float,
                   wall: Callable[[], str] = utc_iso) -> DeviceMonitor:
        return cls(dev.id, dev.kind, dev.lost_after_s, cfg.degraded_hold_s, cfg.refresh_s,
                   cfg.deadband_pct, now, wall, listener=dev.kind == "ocpp_charger")

    # ---- inputs --------------------------------------------------------------

    def reading(self, status: PeripheralStatus, now: float) -> None:
        self.status = status
        self.readings += 1
        self.contact(now)

    def contact(self, now: float) -> None:
        if self.health == "lost":
            self.errors.clear()  # the failures were the loss, reported as such
        self.last_contact = now
        self.seen_at = self.wall()

    def error(self, reason: str, now: float) -> None:
        self.errors[reason] = now
        self.last_error = reason
        self.rejected += 1

    def set_connected(self, up: bool, now: float, reason: str = "disconnected") -> None:
        if up:
            self.contact(now)
        elif self.connected:
            self.last_contact = now  # silence counts from the moment it went away
        self.connected = up
        if not up:
            self.conn_reason = reason

    def set_condition(self, name: str, active: bool) -> None:
        if active:
            self.conditions.add(name)
        else:
            self.conditions.discard(name)

    # ---- evaluation ----------------------------------------------------------

    def _assess(self, now: float) -> tuple[Health | None, list[str]]:
        if self.connected:
            self.last_contact = now
        ref = self.last_contact if self.last_contact is not None else self.started
        if now - ref >= self.lost_after_s:
            main = self.conn_reason if self.listener else (self.last_error or "no_answer")
            return "lost", sorted({main} | self.conditions)
        recent = {r for r, t in self.errors.items() if now - t < self.degraded_hold_s}
        if self.listener and not self.connected and self.last_contact is not None:
            recent.add(self.conn_reason)  # gone, but not for lost_after_s yet
        reasons = sorted(recent | self.conditions)
        if self.last_contact is None:
            return None, reasons  # pending: neither heard nor lost yet
        return ("degraded" if reasons else "ok"), reasons

    def evaluate(self, now: float) -> list[Output]:
        health, reasons = self._assess(now)
        out: list[Output] = []
        if health is None:
            return out
        prev = self.health
        self.health, self.reasons = health, reasons
        base = {"device_id": self.device_id, "kind": self.kind}
        events: list[Output] = []
        if health == "lost" and prev != "lost":
            self.lost_since = now
            self.lost_announced = True
            silent = now - (self.last_contact if self.last_contact is not None else self.started)
            events.append(Output("event", EVENT_LOST, {**base, "reasons": reasons,
                                                       "silent_s": round(silent, 3)}))
        elif health != "lost" and prev == "lost" and self.lost_announced:
            down = now - (self.lost_since if self.lost_since is not None else now)
            events.append(Output("event", EVENT_RESTORED, {**base, "health": health,
                                                           "lost_for_s": round(down, 3)}))
            self.lost_since = None
        if health != "lost":
            new_fault = self.status.fault if self.status is not None else None
            if new_fault != self.fault:
                if new_fault is not None:
                    events.append(Output("event", EVENT_FAULT_RAISED,
                                         {**base, "fault": new_fault,
                                          **self._fault_detail()}))
                else:
                    events.append(Output("event", EVENT_FAULT_CLEARED,
                                         {**base, "fault": self.fault}))
                self.fault = new_fault
        key = (health, tuple(reasons))
        if (self._pub is None or key != self._pub[:2]
                or significant_change(self._pub[2], self.status, self.deadband_pct)
                or now - self._pub_t >= self.refresh_s):
            self._pub = (health, tuple(reasons), self.status)
            self._pub_t = now
            out.append(Output("status", self.device_id, self.payload()))
        return out + events

    def _fault_detail(self) -> dict[str, Any]:
        d = self.status.as_dict() if self.status is not None else {}
        return {k: d[k] for k in ("connector_state", "error_code") if k in d}

    def payload(self) -> dict[str, Any]:
        return payload(self.device_id, self.kind, self.health or "lost", self.reasons,
                       self.seen_at, self.status)


class RateLimitedLog:
    """Log at most `burst` messages per (key, reason) per `every_s`, counting what was held
    back: a peer that keeps sending garbage cannot flood the log, and a burst of different
    problems is still logged in full."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._every = every_s
        self._burst = burst
        self._clock = clock
        # (key, reason) -> (window start, logged in window, held back since last logged)
        self._state: dict[tuple[str, str], tuple[float, int, int]] = {}

    def warning(self, key: str, reason: str, msg: str) -> bool:
        now = self._clock()
        start, logged, held = self._state.get((key, reason), (now, 0, 0))
        if now - start >= self._every:
            start, logged = now, 0
        if logged >= self._burst:
            self._state[(key, reason)] = (start, logged, held + 1)
            return False
        more = f" ({held} more since the last report)" if held else ""
        self._log.warning("%s: %s: %s%s", key, reason, msg, more)
        self._state[(key, reason)] = (start, logged + 1, 0)
        return True


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


AdapterFactory = Callable[[DeviceConfig, PeripheralsConfig, Sink, dict[str, Any]], Adapter]


def _default_factory(dev: DeviceConfig, cfg: PeripheralsConfig, sink: Sink,
                     shared: dict[str, Any]) -> Adapter:
    # Imported here so a pole without a kind never imports its protocol stack.
    if dev.kind == "modbus_charger":
        from edge_controller.peripherals.modbus_charger import ModbusChargerAdapter
        return ModbusChargerAdapter(dev, sink, cfg.profile(dev.modbus.profile if dev.modbus
                                                           else "default"), shared)
    if dev.kind == "ocpp_charger":
        from edge_controller.peripherals.ocpp_proxy import OcppProxyAdapter
        return OcppProxyAdapter(dev, sink)
    from edge_controller.peripherals.led_screen import LedScreenAdapter
    return LedScreenAdapter(dev, sink)


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
        factory: AdapterFactory = _default_factory,
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

    # ---- task body -------------------------------------------------------------

    async def run(self) -> None:
        if not self.adapters:
            await asyncio.Event().wait()  # nothing configured: idle, healthy
        try:
            async with asyncio.TaskGroup() as tg:
                for dev_id, ad in self.adapters.items():
                    tg.create_task(self._keep(ad), name=f"periph.{dev_id}")
                tg.create_task(self._ticker(), name="periph.tick")
        finally:
            for ad in self.adapters.values():
                with contextlib.suppress(Exception):
                    await ad.close()

    async def _keep(self, ad: Adapter) -> None:
        delay = self._restart[0]
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
                delay = self._restart[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._restart[1])

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

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The current status body of every device (for telemetry or a debug view)."""
        return {i: m.payload() for i, m in self.monitors.items()}

    async def show_text(self, device_id: str | None, text: str, seconds: float) -> CommandOutcome:
        """Show `text` for `seconds` on a screen (`device_id` None: the only screen)."""
        if device_id is None:
            screens = [i for i, a in self.adapters.items() if a.kind == "led_screen"]
            if len(screens) != 1:
                return CommandOutcome("rejected", "unsupported",
                                      f"{len(screens)} screens configured; name device_id")
            device_id = screens[0]
        ad = self.adapters.get(device_id)
        if ad is None:
            return CommandOutcome("rejected", "unsupported", f"no device {device_id!r}")
        return await ad.show_text(text, seconds)
