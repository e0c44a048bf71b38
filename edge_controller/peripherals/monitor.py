"""Health of one device, sans-I/O: `DeviceMonitor` turns what an adapter reported into
health (`ok`, `degraded`, `lost` with reasons), change-of-value status publishing
with a periodic refresh, and lost/restored and fault events (driven by `now`).

Health rules (docs/peripherals.md):
- lost: nothing heard for `lost_after_s` (a listener's open connection counts as
  heard; a closed one does not);
- degraded: heard, but a rejected or failed exchange within `degraded_hold_s`,
  or a persistent condition (e.g. `upstream_unreachable`);
- ok: otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_controller.clock import utc_iso
from edge_controller.peripherals.config import DeviceConfig, DeviceKind, PeripheralsConfig
from edge_controller.peripherals.status import (
    Health,
    PeripheralStatus,
    payload,
    significant_change,
)

EVENT_LOST = "periph_lost"
EVENT_RESTORED = "periph_restored"
EVENT_FAULT_RAISED = "periph_fault_raised"
EVENT_FAULT_CLEARED = "periph_fault_cleared"
EVENTS = (EVENT_LOST, EVENT_RESTORED, EVENT_FAULT_RAISED, EVENT_FAULT_CLEARED)


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
    shown: dict[str, Any] | None = None  # a screen: what the pole put on it (ScreenService)
    _pub: tuple[Health, tuple[str, ...], PeripheralStatus | None] | None = None
    _pub_shown: dict[str, Any] | None = None
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
                or self.shown != self._pub_shown
                or now - self._pub_t >= self.refresh_s):
            self._pub = (health, tuple(reasons), self.status)
            self._pub_shown = self.shown
            self._pub_t = now
            out.append(Output("status", self.device_id, self.payload()))
        return out + events

    def _fault_detail(self) -> dict[str, Any]:
        d = self.status.as_dict() if self.status is not None else {}
        return {k: d[k] for k in ("connector_state", "error_code") if k in d}

    def payload(self) -> dict[str, Any]:
        return payload(self.device_id, self.kind, self.health or "lost", self.reasons,
                       self.seen_at, self.status, self.shown)


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
