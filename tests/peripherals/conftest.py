"""Helpers: a hub with a capturing publish callback, and the candidate status schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from edge_controller.clock import utc_iso
from edge_controller.peripherals import PeripheralHub, PeripheralsConfig

SCHEMA = json.loads((Path(__file__).parent / "periph_status.schema.json").read_text())
_VALIDATOR = Draft202012Validator(SCHEMA)


def validate_status(payload: dict[str, Any], pole_id: str = "pole-0042") -> None:
    """Stamp like the uplink does and check against the candidate periph status schema."""
    _VALIDATOR.validate({"v": 1, "pole_id": pole_id, "ts": utc_iso(), **payload})


def state(p: dict[str, Any]) -> str | None:
    """A status payload's connector state (None before the first reading or for a screen)."""
    return p["charger"]["connector_state"] if p["charger"] else None


@dataclass
class Captured:
    statuses: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, device_id: str, payload: dict[str, Any], retain: bool) -> None:
        assert retain, "status is always retained"
        assert payload["device_id"] == device_id
        validate_status(payload)
        self.statuses.append((time.monotonic(), device_id, payload))

    def event(self, name: str, detail: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), name, detail))

    def of(self, device_id: str) -> list[dict[str, Any]]:
        return [p for _, d, p in self.statuses if d == device_id]

    def states(self, device_id: str) -> list[str]:
        """Connector states in publish order, repeats collapsed."""
        out: list[str] = []
        for p in self.of(device_id):
            c = p["charger"]
            if c is not None and (not out or out[-1] != c["connector_state"]):
                out.append(c["connector_state"])
        return out

    async def wait_status(self, device_id: str, pred: Callable[[dict[str, Any]], bool],
                          within_s: float = 5.0,
                          after: float = 0.0) -> tuple[float, dict[str, Any]]:
        end = time.monotonic() + within_s
        while True:
            for t, d, p in self.statuses:
                if d == device_id and t >= after and pred(p):
                    return t, p
            if time.monotonic() > end:
                last = self.of(device_id)[-3:]
                raise TimeoutError(f"no matching status for {device_id} in {within_s} s; "
                                   f"last: {last}")
            await asyncio.sleep(0.01)

    async def wait_event(self, name: str, device_id: str, within_s: float = 5.0,
                         after: float = 0.0) -> tuple[float, dict[str, Any]]:
        end = time.monotonic() + within_s
        while True:
            for t, n, d in self.events:
                if n == name and d.get("device_id") == device_id and t >= after:
                    return t, d
            if time.monotonic() > end:
                raise TimeoutError(f"no {name} for {device_id} in {within_s} s; "
                                   f"events: {[n for _, n, _ in self.events]}")
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_hub(cfg: dict[str, Any], **kw: Any) -> AsyncIterator[tuple[PeripheralHub,
                                                                             Captured]]:
    cap = Captured()
    hub = PeripheralHub(PeripheralsConfig.model_validate(cfg), cap.publish, cap.event,
                        tick_s=kw.pop("tick_s", 0.02), **kw)
    task = asyncio.create_task(hub.run())
    try:
        yield hub, cap
    finally:
        await _cancel_hub(task)


async def _cancel_hub(task: asyncio.Task[None]) -> None:
    """Cancel the hub and wait for it. On Python 3.11 a library's `asyncio.wait_for`
    (pymodbus') can drop a cancellation, and the hub's TaskGroup cancels its adapters only
    once: a test whose wait timed out then hung here until pytest-timeout's 300 s instead
    of failing. Its adapters are cancelled again until it ends (as the supervisor does
    with its own tasks)."""
    task.cancel()
    for _ in range(100):
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            break
        for t in asyncio.all_tasks():
            if t.get_name().startswith("periph.") and not t.done():
                t.cancel()
    else:
        raise AssertionError("the hub did not stop within 10 s of its cancellation")
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture(autouse=True)
def _quiet_protocol_logs() -> Iterator[None]:
    """The ocpp package logs every frame at INFO; keep failure reports readable."""
    names = ("ocpp", "websockets", "pymodbus")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    yield
    for n, lvl in before.items():
        logging.getLogger(n).setLevel(lvl)
