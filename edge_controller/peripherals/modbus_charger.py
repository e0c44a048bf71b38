"""Charging pile over Modbus RTU on RS-485 (pymodbus client on a serial port).

The register map is a profile (`ModbusProfileConfig`; the built-in `default` is
documented in docs/peripherals.md). `read_plan()` merges the profile's registers
into as few read requests as possible; `decode()` (sans-I/O) turns the registers
into a `ChargerStatus` normalised to the OCPP 1.6 connector states, rejecting a
reply that does not fit the profile. Devices on the same port share one
`ModbusBus` (one client, one request at a time, as RS-485 requires).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import struct
import termios
import time
from types import TracebackType
from typing import Any

import serial  # pyserial: what pymodbus opens serial ports with
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from edge_controller.peripherals.adapter import Adapter, Sink
from edge_controller.peripherals.config import (
    DeviceConfig,
    ModbusProfileConfig,
    ModbusSettings,
    PeripheralsConfig,
    RegisterConfig,
)
from edge_controller.peripherals.status import ChargerStatus

log = logging.getLogger(__name__)

MAX_REGS_PER_READ = 125  # Modbus limit for function 0x03/0x04
MAX_GAP = 8  # read across a gap of up to this many unused registers rather than split

_EXC_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
              4: "device failure", 5: "acknowledge", 6: "device busy",
              8: "memory parity error", 10: "gateway path unavailable",
              11: "gateway target failed to respond"}


class _QuietTimeouts(logging.Filter):
    """pymodbus logs every unanswered request at ERROR and every failed open at WARNING; the
    adapter reports those itself (rate-limited, with the device id and the reason), so drop
    pymodbus's copy."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "No response received" not in msg and "Failed to connect" not in msg


logging.getLogger("pymodbus.logging").addFilter(_QuietTimeouts())


class ModbusReject(Exception):
    """A failed or rejected exchange: `reason` is a REASONS code, the message the detail;
    `heard`: a well-framed reply came back (the device is there, its answer was wrong)."""

    def __init__(self, reason: str, detail: str, heard: bool = False) -> None:
        super().__init__(detail)
        self.reason = reason
        self.heard = heard


def _width(r: RegisterConfig) -> int:
    return 0 if r.type == "none" else 2 if r.type in ("uint32", "int32", "float32") else 1


def read_plan(profile: ModbusProfileConfig) -> list[tuple[int, int]]:
    """(start, count) read requests covering every register of the profile."""
    spans = sorted((r.address, r.address + _width(r)) for r in profile.registers().values()
                   if r.type != "none")
    plan: list[list[int]] = []
    for a, b in spans:
        if plan and a - plan[-1][1] <= MAX_GAP and b - plan[-1][0] <= MAX_REGS_PER_READ:
            plan[-1][1] = max(plan[-1][1], b)
        else:
            plan.append([a, b])
    return [(a, b - a) for a, b in plan]


def decode_register(r: RegisterConfig, regs: dict[int, int]) -> float | int | None:
    """One quantity from the register image (address -> 16-bit value)."""
    if r.type == "none":
        return None
    words = [regs[r.address + i] for i in range(_width(r))]
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ModbusReject("malformed_reply", f"register value out of 16-bit range: {words}")
    if r.word_order == "little":
        words.reverse()
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    value: float | int
    if r.type == "uint16":
        value = struct.unpack(">H", raw)[0]
    elif r.type == "int16":
        value = struct.unpack(">h", raw)[0]
    elif r.type == "uint32":
        value = struct.unpack(">I", raw)[0]
    elif r.type == "int32":
        value = struct.unpack(">i", raw)[0]
    else:
        value = struct.unpack(">f", raw)[0]
        if value != value or value in (float("inf"), float("-inf")):
            raise ModbusReject("bad_value", f"float register {r.address} is not finite",
                               heard=True)
        value = float32_decimal(raw)
    return value


def float32_decimal(raw: bytes) -> float:
    """The shortest decimal that is stored as the same float32 (big-endian `raw`).

    A meter that writes 1255.12 kWh stores 1255.1199951171875; the digits beyond float32's
    precision (about 7 significant) are an artefact of the encoding, not the meter's
    resolution, and would survive scaling (1255119.995117 Wh)."""
    value: float = struct.unpack(">f", raw)[0]
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{value:.{digits}g}")
        with contextlib.suppress(OverflowError):
            if struct.pack(">f", candidate) == raw:
                return candidate
    return value


def _scaled(r: RegisterConfig, regs: dict[int, int]) -> float | None:
    v = decode_register(r, regs)
    return None if v is None else round(float(v) * r.scale, 6)


def decode(profile: ModbusProfileConfig, regs: dict[int, int]) -> ChargerStatus:
    """Normalise a register image; raises ModbusReject when it does not fit the profile."""
    missing = [addr for start, n in read_plan(profile)
               for addr in range(start, start + n) if addr not in regs]
    if missing:
        raise ModbusReject("malformed_reply", f"registers missing from the reply: {missing[:8]}")
    code = decode_register(profile.connector_state, regs)
    assert code is not None
    state = profile.state_map.get(int(code))
    if state is None:
        raise ModbusReject("bad_value", f"connector state code {code} is not in profile "
                           f"{profile.name!r}", heard=True)
    fault = decode_register(profile.fault_code, regs)
    error = None if fault is None or int(fault) == profile.no_fault_value else str(int(fault))
    session = _scaled(profile.session_energy, regs)
    if session is not None and session < 0:  # signed types are allowed; a negative session not
        raise ModbusReject("bad_value", f"session energy {session} Wh is negative", heard=True)
    return ChargerStatus(
        connector_state=state,
        error_code=error,
        voltage_v=_scaled(profile.voltage, regs),
        current_a=_scaled(profile.current, regs),
        power_w=_scaled(profile.power, regs),
        session_energy_wh=session,
        meter_total_wh=_scaled(profile.meter_total, regs),
    )


def _close_ports_in(tb: TracebackType | None) -> None:
    """Close serial ports that the frames of a failed open still hold."""
    while tb is not None:
        for obj in tb.tb_frame.f_locals.values():
            for port in (obj, getattr(obj, "sync_serial", None)):
                if isinstance(port, serial.SerialBase):
                    with contextlib.suppress(Exception):
                        port.close()
        tb = tb.tb_next


class ModbusBus:
    """One RS-485 port: one pymodbus client, one transaction at a time."""

    def __init__(self, settings: ModbusSettings) -> None:
        self.settings = settings
        self._client: AsyncModbusSerialClient | None = None
        self._lock = asyncio.Lock()
        self.requests = 0
        self.failures = 0
        self.busy_s = 0.0  # time spent in transactions
        self.tx_bytes = 0
        self.rx_bytes = 0
        self._rx_now = 0

    async def _connected(self) -> AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        s = self.settings
        self._client = AsyncModbusSerialClient(
            s.port, framer=FramerType.RTU, baudrate=s.baudrate, parity=s.parity,
            stopbits=s.stopbits, timeout=s.timeout_s, retries=0, reconnect_delay=0,
            name=f"rs485:{s.port}", trace_packet=self._trace)
        detail: str | None = None
        try:
            ok = await self._client.connect()
        except Exception as e:  # pyserial and termios raise their own errors for odd devices
            ok = False
            _close_ports_in(e.__traceback__)
            detail = self._describe(e)
        if not ok:
            self._client.close()
            self._client = None
            probed = self._release_and_probe()
            why = detail or probed or "could not open the port"
            raise ModbusReject("port_error", f"{s.port}: {why}")
        return self._client

    def _line(self) -> str:
        s = self.settings
        return f"{s.baudrate} baud 8{s.parity}{s.stopbits}"

    def _describe(self, e: BaseException) -> str:
        if isinstance(e, termios.error):
            code, msg = (*e.args, None, None)[:2]
            return (f"the device rejected the line settings ({self._line()}): "
                    f"[Errno {code}] {msg}")
        text = f"{e}"
        if "exclusively lock" in text:
            text += " (the port is held by another program)"
        return text

    def _release_and_probe(self) -> str | None:
        """Make sure a failed open left the port free, and say why it failed.

        pymodbus opens the port (with an exclusive lock) before it finishes configuring it;
        when configuring fails it drops the half-open port without closing it, and the
        reference cycle it sits in keeps the port locked until the garbage collector gets
        to it, which can be never. Every retry would then fail with "could not exclusively
        lock port". Open the port the same way here: the reason if that fails too, and a
        collection if the lock is what stops it."""
        for attempt in range(2):
            try:
                port = serial.serial_for_url(
                    self.settings.port, exclusive=True, baudrate=self.settings.baudrate,
                    parity=self.settings.parity, stopbits=self.settings.stopbits, bytesize=8,
                    timeout=0)
            except Exception as e:
                if attempt == 0 and "exclusively lock" in f"{e}":
                    gc.collect()
                    continue
                return self._describe(e)
            port.close()
            return None
        return None

    async def read(self, unit: int, table: str, address: int, count: int) -> list[int]:
        async with self._lock:
            t0 = time.monotonic()
            try:
                return await self._read(unit, table, address, count)
            except ModbusReject:
                self.failures += 1
                raise
            finally:
                self.requests += 1
                self.busy_s += time.monotonic() - t0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.tx_bytes += len(data)
        else:
            self.rx_bytes += len(data)
            self._rx_now += len(data)
        return data

    async def _read(self, unit: int, table: str, address: int, count: int) -> list[int]:
        client = await self._connected()
        fn = client.read_holding_registers if table == "holding" else client.read_input_registers
        self._rx_now = 0
        try:
            rr = await fn(address, count=count, device_id=unit)
        except ModbusIOException:
            self._reset()  # flush whatever half frame is left in the receive buffer
            what = (f"{self._rx_now} bytes that are no valid reply (CRC or framing)"
                    if self._rx_now else "nothing")
            raise ModbusReject("malformed_reply" if self._rx_now else "no_answer",
                               f"unit {unit}: read {address}+{count}: {what} within "
                               f"{self.settings.timeout_s} s") from None
        except ModbusException as e:
            self._reset()
            raise ModbusReject("malformed_reply", f"unit {unit}: {e}") from None
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise ModbusReject("exception_response", f"unit {unit}: exception {code} "
                               f"({_EXC_NAMES.get(code, 'unknown')}) reading {address}+{count}",
                               heard=True)
        regs = list(getattr(rr, "registers", []))
        if getattr(rr, "dev_id", unit) != unit:
            self._reset()
            raise ModbusReject("malformed_reply", f"reply from unit {rr.dev_id}, asked {unit}")
        if len(regs) != count:
            raise ModbusReject("malformed_reply", f"unit {unit}: {len(regs)} registers in the "
                               f"reply to a read of {count}", heard=True)
        return regs

    def _reset(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def close(self) -> None:
        self._reset()


class ModbusChargerAdapter(Adapter):
    kind = "modbus_charger"

    def __init__(self, device: DeviceConfig, sink: Sink, profile: ModbusProfileConfig,
                 shared: dict[str, Any]) -> None:
        super().__init__(device, sink)
        assert device.modbus is not None
        self.settings = device.modbus
        self.profile = profile
        self.plan = read_plan(profile)
        key = f"modbus:{self.settings.port}"
        bus = shared.get(key)
        if not isinstance(bus, ModbusBus):
            bus = shared[key] = ModbusBus(self.settings)
        self.bus = bus
        self.polls = 0

    @classmethod
    def create(cls, device: DeviceConfig, cfg: PeripheralsConfig, sink: Sink,
               shared: dict[str, Any]) -> Adapter:
        profile = cfg.profile(device.modbus.profile if device.modbus else "default")
        return cls(device, sink, profile, shared)

    async def poll_once(self) -> ChargerStatus | None:
        self.polls += 1
        regs: dict[int, int] = {}
        try:
            for start, count in self.plan:
                vals = await self.bus.read(self.settings.unit_id, self.profile.table, start, count)
                regs.update(zip(range(start, start + count), vals, strict=True))
            status = decode(self.profile, regs)
        except ModbusReject as e:
            if e.heard:
                self.sink.contact()  # it answers; the answer does not fit
            self.sink.error(e.reason, str(e))
            return None
        self.sink.reading(status)
        return status

    async def run(self) -> None:
        period = self.device.poll_s
        nxt = time.monotonic()
        while True:
            await self.poll_once()
            nxt += period
            now = time.monotonic()
            if nxt < now:  # fell behind (long timeouts): do not try to catch up
                nxt = now
            await asyncio.sleep(nxt - now)

    async def close(self) -> None:
        self.bus.close()
