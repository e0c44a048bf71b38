"""An OCPP 1.6J charge point and an upstream central system, both on the `ocpp` package.

`SimChargePoint` connects to a URL (the pole's proxy, in tests and `make run`)
and plays a charger: boot, status, authorize, transactions with meter values,
faults, malformed frames, closing. `SimCentralSystem` is the operator's backend
the proxy forwards to; it answers the core profile and records every frame it
receives and sends, so tests can check the proxy changed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from edge_controller.clock import utc_iso
from edge_controller.peripherals.ocpp_compat import SUBPROTOCOL, ChargePoint, call, call_result, on

log = logging.getLogger(__name__)


class Recorder:
    """A connection as the ocpp ChargePoint sees it, recording raw frames both ways."""

    def __init__(self, ws: ClientConnection | ServerConnection) -> None:
        self.ws = ws
        self.sent: list[str | bytes] = []
        self.received: list[str | bytes] = []

    async def recv(self) -> str | bytes:
        msg = await self.ws.recv()
        self.received.append(msg)
        return msg

    async def send(self, msg: str | bytes) -> None:
        self.sent.append(msg)
        await self.ws.send(msg)


class _ChargerSide(ChargePoint):
    def __init__(self, cp_id: str, conn: Recorder, on_trigger: Callable[[str], None]) -> None:
        super().__init__(cp_id, conn, response_timeout=5)
        self._on_trigger = on_trigger

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        self._on_trigger(requested_message)
        return call_result.TriggerMessage(status="Accepted")


class SimChargePoint:
    """A scriptable OCPP 1.6J charger (one connector)."""

    def __init__(self, url: str, cp_id: str = "cp-1", connector_id: int = 1,
                 meter_wh: float = 2_000_000.0, voltage_v: float = 230.0,
                 auth: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.cp_id = cp_id
        self.connector_id = connector_id
        self.meter_wh = meter_wh
        self.voltage_v = voltage_v
        self.auth = auth
        self.state = "Available"
        self.transaction_id: int | None = None
        self.sent: list[str | bytes] = []  # every frame sent, over all connections
        self.received: list[str | bytes] = []
        self._rec: Recorder | None = None
        self._cp: _ChargerSide | None = None
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    async def connect(self, timeout_s: float = 5.0) -> SimChargePoint:
        headers = {"Authorization": self.auth} if self.auth else None
        ws = await connect(f"{self.url}/{self.cp_id}", subprotocols=[Subprotocol(SUBPROTOCOL)],
                           additional_headers=headers, open_timeout=timeout_s,
                           compression=None)
        self._rec = Recorder(ws)
        self._rec.sent = self.sent
        self._rec.received = self.received
        self._cp = _ChargerSide(self.cp_id, self._rec, self._triggered)
        self._task = asyncio.create_task(self._serve(self._cp), name=f"sim-cp.{self.cp_id}")
        return self

    async def connect_retrying(self, within_s: float = 30.0, every_s: float = 0.2) -> None:
        """Keep trying to connect, as a charger does while its backend is not there."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within_s
        while True:
            try:
                await self.connect()
                return
            except (OSError, TimeoutError, Exception):
                if loop.time() > end:
                    raise
                await asyncio.sleep(every_s)

    @staticmethod
    async def _serve(cp: ChargePoint) -> None:
        with contextlib.suppress(ConnectionClosed):
            await cp.start()

    async def close(self, code: int = 1000) -> None:
        if self._rec is not None:
            with contextlib.suppress(Exception):
                await self._rec.ws.close(code)
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 2)
        self._task = None

    async def _call(self, payload: Any) -> Any:
        if self._cp is None:
            raise ConnectionError("not connected")
        return await self._cp.call(payload, suppress=False)

    def _triggered(self, what: str) -> None:
        if what == "StatusNotification":
            t = asyncio.create_task(self.status(self.state))
            self._bg.add(t)
            t.add_done_callback(self._bg.discard)

    # ---- messages ---------------------------------------------------------------------

    async def boot(self) -> str:
        res = await self._call(call.BootNotification(
            charge_point_model="AC22-SIM", charge_point_vendor="Smartpole Sim",
            firmware_version="1.0.0"))
        return str(res.status)

    async def heartbeat(self) -> str:
        res = await self._call(call.Heartbeat())
        return str(res.current_time)

    async def status(self, state: str, error_code: str = "NoError",
                     vendor_error_code: str | None = None, connector_id: int | None = None) -> None:
        cid = self.connector_id if connector_id is None else connector_id
        if cid == self.connector_id:
            self.state = state
        await self._call(call.StatusNotification(
            connector_id=cid, error_code=error_code, status=state, timestamp=utc_iso(),
            vendor_error_code=vendor_error_code))

    async def authorize(self, id_tag: str = "TAG-0001") -> str:
        res = await self._call(call.Authorize(id_tag=id_tag))
        return str(res.id_tag_info["status"])

    async def start_transaction(self, id_tag: str = "TAG-0001") -> int:
        res = await self._call(call.StartTransaction(
            connector_id=self.connector_id, id_tag=id_tag, meter_start=round(self.meter_wh),
            timestamp=utc_iso()))
        self.transaction_id = int(res.transaction_id)
        return self.transaction_id

    async def meter_values(self, power_w: float) -> None:
        current = power_w / self.voltage_v if self.voltage_v else 0.0
        sv = [
            {"value": f"{self.meter_wh:.0f}", "measurand": "Energy.Active.Import.Register",
             "unit": "Wh"},
            {"value": f"{power_w / 1000:.3f}", "measurand": "Power.Active.Import", "unit": "kW"},
            {"value": f"{self.voltage_v:.1f}", "measurand": "Voltage", "unit": "V"},
            {"value": f"{current:.2f}", "measurand": "Current.Import", "unit": "A"},
        ]
        await self._call(call.MeterValues(
            connector_id=self.connector_id, transaction_id=self.transaction_id,
            meter_value=[{"timestamp": utc_iso(), "sampledValue": sv}]))

    async def charge(self, power_w: float, hours: float, steps: int = 3) -> None:
        """Advance the meter by power x hours (simulated time), sending MeterValues."""
        for _ in range(steps):
            self.meter_wh += power_w * hours / steps
            await self.meter_values(power_w)

    async def stop_transaction(self, reason: str = "EVDisconnected") -> None:
        assert self.transaction_id is not None, "no transaction"
        await self._call(call.StopTransaction(
            meter_stop=round(self.meter_wh), timestamp=utc_iso(),
            transaction_id=self.transaction_id, reason=reason))
        self.transaction_id = None

    async def send_raw(self, frame: str | bytes) -> None:
        """Put any frame on the wire (malformed-message tests); no answer awaited."""
        assert self._rec is not None, "not connected"
        await self._rec.send(frame)

    async def session(self, power_w: float = 7400.0, hours: float = 0.5,
                      pause_s: float = 0.0) -> float:
        """Available -> Preparing -> Charging -> Finishing -> Available; returns Wh charged."""
        start = self.meter_wh
        await self.status("Preparing")
        await asyncio.sleep(pause_s)
        await self.authorize()
        await self.start_transaction()
        await self.status("Charging")
        await asyncio.sleep(pause_s)
        await self.charge(power_w, hours)
        await asyncio.sleep(pause_s)
        await self.stop_transaction()
        await self.status("Finishing")
        await asyncio.sleep(pause_s)
        await self.status("Available")
        return self.meter_wh - start


class _CentralSide(ChargePoint):
    def __init__(self, cp_id: str, conn: Recorder, owner: SimCentralSystem) -> None:
        super().__init__(cp_id, conn, response_timeout=5)
        self._owner = owner

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return call_result.BootNotification(current_time=utc_iso(),
                                            interval=self._owner.heartbeat_s,
                                            status=self._owner.boot_status)

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=utc_iso())

    @on("StatusNotification")
    def on_status(self, status: str, **_: Any) -> Any:
        self._owner.statuses.append(status)
        return call_result.StatusNotification()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return call_result.Authorize(id_tag_info={"status": "Accepted"})

    @on("StartTransaction")
    def on_start(self, **_: Any) -> Any:
        return call_result.StartTransaction(transaction_id=next(self._owner.tx_ids),
                                            id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    def on_stop(self, **_: Any) -> Any:
        return call_result.StopTransaction(id_tag_info={"status": "Accepted"})


class SimCentralSystem:
    """The operator's OCPP 1.6J central system, recording every frame."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, heartbeat_s: int = 300,
                 first_tx: int = 1000) -> None:
        self.host = host
        self.port = port
        self.heartbeat_s = heartbeat_s
        self.boot_status = "Accepted"
        self.tx_ids = itertools.count(first_tx)
        self.received: list[str | bytes] = []  # every frame from every charger, in order
        self.sent: list[str | bytes] = []
        self.statuses: list[str] = []
        self.paths: list[str] = []
        self.auth_headers: list[str | None] = []
        self.connections = 0
        self._server: Server | None = None
        self._peers: dict[str, _CentralSide] = {}
        self._conns: set[ServerConnection] = set()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ocpp"

    async def start(self) -> SimCentralSystem:
        self._server = await serve(self._handle, self.host, self.port,
                                   subprotocols=[Subprotocol(SUBPROTOCOL)], compression=None)
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3)
            self._server = None

    async def drop_connections(self, code: int = 1001) -> None:
        for c in list(self._conns):
            with contextlib.suppress(Exception):
                await c.close(code)

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        cp_id = path.rstrip("/").rsplit("/", 1)[-1]
        self.paths.append(path)
        self.auth_headers.append(ws.request.headers.get("Authorization") if ws.request else None)
        self.connections += 1
        rec = Recorder(ws)
        rec.sent, rec.received = self.sent, self.received
        side = _CentralSide(cp_id, rec, self)
        self._peers[cp_id] = side
        self._conns.add(ws)
        try:
            with contextlib.suppress(ConnectionClosed):
                await side.start()
        finally:
            self._conns.discard(ws)
            if self._peers.get(cp_id) is side:
                del self._peers[cp_id]

    async def trigger_status(self, cp_id: str) -> str:
        """A CALL from the central system (TriggerMessage StatusNotification)."""
        res = await self._peers[cp_id].call(call.TriggerMessage(
            requested_message="StatusNotification"), suppress=False)
        return str(res.status)
