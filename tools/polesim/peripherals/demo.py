"""Demo peers for `make run`: a Modbus charger, an OCPP charger behind the pole's proxy
with an upstream central system, and an LED screen, each running a looping script.

    peers = await run_demo_peers()          # in a running event loop
    overrides = peers.overrides()           # SimPole(..., overrides=overrides)
    ...
    await peers.aclose()

or, from synchronous code (polectl sim), `start_demo_peers()` runs the same in a
thread and returns a handle with `.overrides()` and `.stop()`.
`python -m polesim.peripherals` runs them standalone and prints the
config to point a controller at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from polesim.peripherals.modbus_charger import ModbusChargerSim
from polesim.peripherals.ocpp import SimCentralSystem, SimChargePoint
from polesim.peripherals.screen import ScreenSim

log = logging.getLogger(__name__)
T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class DemoPeers:
    modbus: ModbusChargerSim
    central: SimCentralSystem | None
    charge_point: SimChargePoint
    screen: ScreenSim
    ocpp_port: int
    cp_id: str = "cp-demo"
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def devices(self) -> list[dict[str, Any]]:
        """The controller's [[peripherals.devices]] tables for these peers."""
        ocpp: dict[str, Any] = {"listen_host": "127.0.0.1", "listen_port": self.ocpp_port,
                                "charge_point_id": self.cp_id, "ping_s": 5.0}
        if self.central is not None:
            ocpp["upstream_url"] = self.central.url
        return [
            {"id": "charger-1", "kind": "modbus_charger", "poll_s": 1.0, "lost_after_s": 5.0,
             "modbus": {"port": self.modbus.port, "unit_id": self.modbus.unit_id,
                        "timeout_s": 0.3}},
            {"id": "charger-2", "kind": "ocpp_charger", "lost_after_s": 10.0, "ocpp": ocpp},
            {"id": "screen-1", "kind": "led_screen", "poll_s": 2.0, "lost_after_s": 6.0,
             "screen": {"address": self.screen.address}},
        ]

    def overrides(self, refresh_s: float = 30.0) -> dict[str, Any]:
        """Config overrides for SimPole / render_toml (`[peripherals]` + devices)."""
        return {"peripherals": {"refresh_s": refresh_s}, "peripherals.devices": self.devices()}

    async def aclose(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.charge_point.close()
        if self.central is not None:
            await self.central.stop()
        await self.screen.stop()
        await self.modbus.stop()


async def _modbus_script(sim: ModbusChargerSim) -> None:
    cycle = 0
    while True:
        cycle += 1
        await asyncio.sleep(4)
        sim.plug_in()
        await asyncio.sleep(3)
        sim.start_charging(random.choice([3700.0, 7400.0, 11000.0]))
        await asyncio.sleep(12)
        if cycle % 3 == 0:
            sim.fault(12)  # e.g. residual current detected
            await asyncio.sleep(5)
            sim.clear_fault()
            continue
        sim.finish()
        await asyncio.sleep(3)
        sim.unplug()


async def _ocpp_script(cp: SimChargePoint) -> None:
    while True:
        try:
            await cp.connect_retrying(within_s=3600, every_s=1.0)
            await cp.boot()
            await cp.status("Available")
            while cp.connected:
                await asyncio.sleep(5)
                await cp.session(power_w=7400.0, hours=0.25, pause_s=3.0)
                await cp.heartbeat()
        except (ConnectionError, TimeoutError, OSError, Exception) as e:
            log.info("demo charge point: %s; reconnecting", e)
            await cp.close()
            await asyncio.sleep(1.0)


async def _screen_script(screen: ScreenSim) -> None:
    ads = ["welcome", "bus-times", "air-quality", "city-news"]
    i = 0
    while True:
        await asyncio.sleep(6)
        i += 1
        screen.set(content_id=ads[i % len(ads)],
                   temperature_c=round(35 + 5 * random.random(), 1),
                   brightness=60 if i % 2 else 80)


async def run_demo_peers(*, ocpp_port: int | None = None, upstream: bool = True,
                         script: bool = True) -> DemoPeers:
    """Start the peers (and their scripts); returns what the controller config needs."""
    modbus = await ModbusChargerSim().start()
    central = await SimCentralSystem().start() if upstream else None
    screen = await ScreenSim().start()
    port = ocpp_port or free_port()
    cp = SimChargePoint(f"ws://127.0.0.1:{port}", cp_id="cp-demo")
    peers = DemoPeers(modbus, central, cp, screen, port)
    if script:
        peers.tasks = [asyncio.create_task(_modbus_script(modbus), name="demo.modbus"),
                       asyncio.create_task(_ocpp_script(cp), name="demo.ocpp"),
                       asyncio.create_task(_screen_script(screen), name="demo.screen")]
    return peers


class DemoPeersThread:
    """The demo peers on their own event loop in a daemon thread (for synchronous callers)."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.peers: DemoPeers | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(kwargs,), daemon=True,
                                        name="demo-peers")
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError("demo peers did not start")
        if self._error is not None:
            raise RuntimeError(f"demo peers failed: {self._error}") from self._error

    def _main(self, kwargs: dict[str, Any]) -> None:
        async def body() -> None:
            self._stop = asyncio.Event()
            try:
                self.peers = await run_demo_peers(**kwargs)
            except BaseException as e:
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await self.peers.aclose()

        self._loop.run_until_complete(body())
        self._loop.close()

    def overrides(self, refresh_s: float = 30.0) -> dict[str, Any]:
        assert self.peers is not None
        return self.peers.overrides(refresh_s)

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the peers' loop (e.g. `peers.charge_point.boot()`), wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def do(self, fn: Callable[[], Any]) -> None:
        """Run a plain script step (e.g. `peers.modbus.plug_in`) on the peers' loop."""
        async def step() -> None:
            fn()

        self.call(step())

    def stop(self) -> None:
        if self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def start_demo_peers(**kwargs: Any) -> DemoPeersThread:
    return DemoPeersThread(**kwargs)
