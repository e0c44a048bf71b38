"""Independent protocol peers for the peripheral relay, written from the protocol specs
(Modbus RTU, OCPP 1.6J) with pymodbus, the `ocpp` package and websockets, not from the
pole's simulators: a charger that implements the spec differently from our simulators is
exactly what these are for.

- `PtyCable`: a serial cable of two pseudo-terminals joined by an asyncio relay;
- `ModbusSlave`: a pymodbus RTU slave serving a register image on one end of a cable;
- `ChargePoint16`: an `ocpp` 1.6J charge point over a websockets client;
- `CentralSystem16`: an `ocpp` 1.6J central system behind a websockets server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import termios
import tty
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- serial ----------------------------------------------------------------------------


def _raw(fd: int) -> None:
    tty.setraw(fd, termios.TCSANOW)


class PtyCable:
    """Two pty pairs whose masters an asyncio relay joins: `a` and `b` are the two ends.

    The slave fds stay open here so that an end closing and reopening its port (as the
    adapter does after a failed exchange) does not make the master read EIO."""

    def __init__(self) -> None:
        self._ma, self._sa = os.openpty()
        self._mb, self._sb = os.openpty()
        for fd in (self._sa, self._sb):
            _raw(fd)
        for fd in (self._ma, self._mb):
            os.set_blocking(fd, False)
        self.a = os.ttyname(self._sa)
        self.b = os.ttyname(self._sb)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._ma, self._copy, self._ma, self._mb)
        loop.add_reader(self._mb, self._copy, self._mb, self._ma)
        self._loop = loop

    @staticmethod
    def _copy(src: int, dst: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(src, 4096)
            if data:
                os.write(dst, data)

    def close(self) -> None:
        for fd in (self._ma, self._mb):
            self._loop.remove_reader(fd)
        for fd in (self._ma, self._mb, self._sa, self._sb):
            with contextlib.suppress(OSError):
                os.close(fd)


def float32_words(value: float, low_word_first: bool) -> list[int]:
    raw = struct.pack(">f", value)
    words = [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]
    return words[::-1] if low_word_first else words


def int16_word(value: int) -> int:
    return value & 0xFFFF


@dataclass
class ModbusSlave:
    """A Modbus RTU slave (pymodbus server) on `port`, serving `regs` (address -> word) for
    every read of unit `unit_id`, from holding or input registers alike."""

    port: str
    unit_id: int = 1
    regs: dict[int, int] = field(default_factory=dict)
    size: int = 0x1100
    reads: int = 0
    _server: ModbusSerialServer | None = None

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> None:
        self.reads += 1
        for i in range(len(registers)):
            registers[i] = self.regs.get(start_address + i, 0)

    async def start(self) -> ModbusSlave:
        dev = SimDevice(id=self.unit_id, simdata=[SimData(0, count=self.size, values=0,
                                                          datatype=DataType.REGISTERS)],
                        action=self._action)
        self._server = ModbusSerialServer([dev], framer=FramerType.RTU, port=self.port,
                                          baudrate=9600)
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None


# ---- OCPP 1.6J ---------------------------------------------------------------------------


class ChargePoint16(ChargePoint):  # type: ignore[misc]
    """A charge point: the `ocpp` package's ChargePoint on a websockets client connection.

    `connect()` opens it (offering subprotocol ocpp1.6 unless told otherwise) and starts
    the ocpp message loop; the call helpers return the central system's answers."""

    def __init__(self, url: str, cp_id: str, subprotocols: list[str] | None = None) -> None:
        self.url = f"{url}/{cp_id}"
        self._subprotocols = ["ocpp1.6"] if subprotocols is None else subprotocols
        self.ws: ClientConnection | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.cp_id = cp_id

    async def connect(self, **ws: Any) -> ChargePoint16:
        self.ws = await connect(self.url, subprotocols=[Subprotocol(s) for s in
                                                        self._subprotocols],
                                compression=None, **ws)
        super().__init__(self.cp_id, self.ws)
        self._loop_task = asyncio.create_task(self.start())
        return self

    async def boot(self) -> str:
        r = await self.call(call.BootNotification(charge_point_model="IndiePeer-22",
                                                  charge_point_vendor="Independent"))
        return str(r.status)

    async def status(self, state: str, connector_id: int = 1,
                     error_code: str = "NoError") -> None:
        await self.call(call.StatusNotification(connector_id=connector_id,
                                                error_code=error_code, status=state))

    async def start_tx(self, id_tag: str, meter_start: int, connector_id: int = 1) -> Any:
        return await self.call(call.StartTransaction(connector_id=connector_id, id_tag=id_tag,
                                                     meter_start=meter_start,
                                                     timestamp=now_iso()))

    async def stop_tx(self, transaction_id: int, meter_stop: int) -> Any:
        return await self.call(call.StopTransaction(meter_stop=meter_stop,
                                                    timestamp=now_iso(),
                                                    transaction_id=transaction_id))

    async def meter(self, wh: float, transaction_id: int | None, connector_id: int = 1) -> None:
        await self.call(call.MeterValues(
            connector_id=connector_id, transaction_id=transaction_id,
            meter_value=[{"timestamp": now_iso(), "sampledValue": [
                {"value": f"{wh:.0f}", "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh"}]}]))

    def go_silent(self) -> None:
        """Stop reading the socket and stop the message loop, leaving the socket open: a
        charger that hung. Pings are neither read nor answered."""
        assert self.ws is not None
        self.ws.transport.pause_reading()
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(BaseException):
                await self._loop_task
        if self.ws is not None:
            self.ws.transport.abort()


class _CsHandler(ChargePoint):  # type: ignore[misc]
    """The central system's side of one charge point's connection."""

    def __init__(self, cp_id: str, ws: ServerConnection, owner: CentralSystem16) -> None:
        super().__init__(cp_id, ws)
        self._owner = owner

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return call_result.BootNotification(current_time=now_iso(), interval=300,
                                            status="Accepted")

    @on("StatusNotification")
    def on_status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on("StartTransaction")
    def on_start(self, id_tag: str, **_: Any) -> Any:
        self._owner.next_tx += 1
        ok = id_tag in self._owner.accept
        return call_result.StartTransaction(transaction_id=self._owner.next_tx,
                                            id_tag_info={"status": "Accepted" if ok
                                                         else "Invalid"})

    @on("StopTransaction")
    def on_stop(self, **_: Any) -> Any:
        return call_result.StopTransaction()


@dataclass
class CentralSystem16:
    """A central system: the `ocpp` package's ChargePoint (central side) per connection,
    behind a websockets server on `port`. Accepts the id tags in `accept`."""

    port: int = 0
    accept: tuple[str, ...] = ("TAG-OK",)
    next_tx: int = 500
    connections: int = 0
    _server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        cp_id = (ws.request.path if ws.request else "").rsplit("/", 1)[-1]
        with contextlib.suppress(Exception):
            await _CsHandler(cp_id, ws, self).start()

    async def start(self) -> CentralSystem16:
        self._server = await serve(self._handle, "127.0.0.1", self.port,
                                   subprotocols=[Subprotocol("ocpp1.6")], compression=None)
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
