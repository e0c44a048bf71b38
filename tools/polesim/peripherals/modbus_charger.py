"""A charging pile as a Modbus RTU slave: pymodbus's serial server on a pty "RS-485 bus".

The controller opens `port` (one end of a `PtyWire`); the slave serves the other
end. The register image follows a profile (the built-in `default` unless told
otherwise) and is rebuilt on every read from the scripted charger state, so
energy keeps counting while it charges.

Script: `plug_in()`, `start_charging()`, `suspend_ev()`, `finish()`, `unplug()`,
`fault(code)`, `clear_fault()`, `drop_off()` / `rejoin()` (cut the bus: the
slave falls silent) and `corrupt(n, mode)` (mangle the next n replies: bad CRC,
short reply, or garbage).
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Literal

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_controller.peripherals.config import (
    DEFAULT_PROFILE,
    ConnectorState,
    ModbusProfileConfig,
    RegisterConfig,
)
from polesim.wire import PtyWire

log = logging.getLogger(__name__)

CorruptMode = Literal["crc", "short", "garbage"]


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def encode_register(r: RegisterConfig, value: float) -> list[int]:
    """Inverse of the adapter's decode: engineering value -> register words."""
    if r.type == "none":
        return []
    raw = value / r.scale if r.scale else value
    if r.type == "float32":
        data = struct.pack(">f", raw)
    else:
        iv = round(raw)
        fmt = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i"}[r.type]
        lo, hi = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF),
                  "uint32": (0, 0xFFFFFFFF), "int32": (-0x80000000, 0x7FFFFFFF)}[r.type]
        data = struct.pack(fmt, min(max(iv, lo), hi))
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if r.word_order == "little":
        words.reverse()
    return words


class ChargerModel:
    """One charger's scripted state and its register image (one unit on the bus)."""

    def __init__(self, unit_id: int = 1, profile: ModbusProfileConfig | None = None,
                 voltage_v: float = 230.0, meter_total_wh: float = 1_250_000.0) -> None:
        self.unit_id = unit_id
        self.profile = profile or DEFAULT_PROFILE
        self._codes = {v: k for k, v in self.profile.state_map.items()}
        self.state: ConnectorState = "Available"
        self.fault_code = self.profile.no_fault_value
        self.voltage_v = voltage_v
        self.power_w = 0.0
        self.session_wh = 0.0
        self.meter_total_wh = meter_total_wh
        self._t = time.monotonic()
        self.reads = 0
        top = max(r.address + 2 for r in self.profile.registers().values())
        self.size = max(top, 16)

    # ---- the register image ------------------------------------------------------

    def _advance(self) -> None:
        now = time.monotonic()
        if self.state == "Charging" and self.power_w > 0:
            wh = self.power_w * (now - self._t) / 3600.0
            self.session_wh += wh
            self.meter_total_wh += wh
        self._t = now

    def image(self) -> list[int]:
        self._advance()
        p = self.profile
        regs = [0] * self.size
        current = self.power_w / self.voltage_v if self.voltage_v else 0.0
        values = {"connector_state": self._codes[self.state], "fault_code": self.fault_code,
                  "voltage": self.voltage_v, "current": current, "power": self.power_w,
                  "session_energy": self.session_wh, "meter_total": self.meter_total_wh}
        for name, r in p.registers().items():
            for i, w in enumerate(encode_register(r, float(values[name]))):
                regs[r.address + i] = w
        return regs

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], set_values: list[int] | list[bool] | None
                     ) -> None:
        """pymodbus SimDevice action: refresh the served registers from the model."""
        self.reads += 1
        img = self.image()
        for i in range(len(registers)):
            a = start_address + i
            registers[i] = img[a] if a < len(img) else 0
        return None

    # ---- script ----------------------------------------------------------------------

    def set_state(self, state: ConnectorState) -> None:
        self._advance()
        self.state = state

    def plug_in(self) -> None:
        self.set_state("Preparing")

    def start_charging(self, power_w: float = 7400.0) -> None:
        self._advance()
        if self.state != "SuspendedEV":
            self.session_wh = 0.0
        self.power_w = power_w
        self.state = "Charging"

    def suspend_ev(self) -> None:
        self._advance()
        self.power_w = 0.0
        self.state = "SuspendedEV"

    def finish(self) -> None:
        self._advance()
        self.power_w = 0.0
        self.state = "Finishing"

    def unplug(self) -> None:
        self._advance()
        self.power_w = 0.0
        self.state = "Available"

    def fault(self, code: int = 12) -> None:
        self._advance()
        self.power_w = 0.0
        self.fault_code = code
        self.state = "Faulted"

    def clear_fault(self) -> None:
        self._advance()
        self.fault_code = self.profile.no_fault_value
        self.state = "Available"


class ModbusChargerSim(ChargerModel):
    """A scriptable charger (unit `unit_id`, plus `more_units` on the same bus) on its own
    pty RS-485 bus; `port` is what the controller opens."""

    def __init__(self, unit_id: int = 1, profile: ModbusProfileConfig | None = None,
                 voltage_v: float = 230.0, meter_total_wh: float = 1_250_000.0,
                 more_units: tuple[int, ...] = ()) -> None:
        super().__init__(unit_id, profile, voltage_v, meter_total_wh)
        self.units: dict[int, ChargerModel] = {unit_id: self}
        for u in more_units:
            self.units[u] = ChargerModel(u, profile, voltage_v, meter_total_wh)
        self._corrupt: list[CorruptMode] = []
        self.wire: PtyWire | None = None
        self._server: ModbusSerialServer | None = None

    def unit(self, unit_id: int) -> ChargerModel:
        return self.units[unit_id]

    @property
    def port(self) -> str:
        assert self.wire is not None, "start() first"
        return self.wire.ctl_path

    async def start(self) -> ModbusChargerSim:
        self.wire = PtyWire()
        devices = [SimDevice(id=u, simdata=[SimData(0, count=m.size, values=0,
                                                    datatype=DataType.REGISTERS)],
                             action=m.action)
                   for u, m in self.units.items()]
        self._server = ModbusSerialServer(devices, framer=FramerType.RTU,
                                          port=self.wire.fw_path, baudrate=9600,
                                          trace_packet=self._trace)
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        if self.wire is not None:
            self.wire.close()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending or not self._corrupt:
            return data
        mode = self._corrupt.pop(0)
        if mode == "crc":
            return data[:-1] + bytes([data[-1] ^ 0x5A])
        if mode == "short" and len(data) > 7 and data[1] in (3, 4):
            regs = data[3:-2][:-2]  # one register fewer than asked, valid CRC
            return with_crc(bytes([data[0], data[1], len(regs)]) + regs)
        return b"\x07\xff\x00garbage"

    # ---- bus faults -------------------------------------------------------------------

    def drop_off(self) -> None:
        """Fall silent on the bus (cable cut, power lost)."""
        assert self.wire is not None
        self.wire.cut(True)

    def rejoin(self) -> None:
        assert self.wire is not None
        self.wire.cut(False)

    def corrupt(self, n: int = 1, mode: CorruptMode = "crc") -> None:
        """Mangle the next `n` replies."""
        self._corrupt.extend([mode] * n)
