"""`polectl fleet-sim` and `polectl ingest`: a simulated city against a broker, and the
reference backend consumer that reads it.

`fleet-sim` runs N poles in one asyncio process. Each pole is a small MQTT 5
client written here on asyncio streams (a paho/aiomqtt client per pole costs
too much at thousands of poles): it connects with a last will (retained
`offline/connection_lost`), a session expiry interval (the broker keeps its
`cmd` subscription and queued commands across a short outage), publishes the
retained `state` and `birth` (discovery), telemetry every interval and
scripted events, and answers commands on `cmd` exactly as the controller does
(the controller's own sans-I/O validation, `expires_at` included). No camera.

`ingest` is what a backend worker looks like: a shared subscription
`$share/<group>/<root>/+/{telemetry,events,cmd/result}` (start several
workers with the same group and the broker spreads the load), an ordinary
subscription to the retained `state` and `birth` for discovery, a persistent
session (session expiry) so a restarted worker loses nothing queued for it,
per-pole summaries and publish-to-consume latency (receive time minus the
message's `ts`). With `--command-rate` it also sends commands to discovered
poles with an MQTT 5 message expiry interval, so a stale command never
reaches a pole that comes back late, and matches their results.

Both print JSON with `--json` and write a report file with `--report`, which
`bench/fleet_bench.py` compares for loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import signal
import socket
import ssl
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge_controller.clock import utc_iso
from edge_controller.config import POLE_ID_RE
from edge_controller.uplink import commands as cmdparse

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DEFAULT_ROOT = "smartpole/v1"
PUBACK_TIMEOUT_S = 30.0

# ---------------------------------------------------------------------------------------
# A minimal MQTT 5 client on asyncio streams (QoS 0/1, retain, will, session expiry,
# message expiry, subscribe, keepalive). Just what a simulated pole needs.
# ---------------------------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
PROP_MESSAGE_EXPIRY = 0x02
PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21

# Property id -> encoding, for the properties we parse from the broker.
_PROP_KIND = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


class MqttProtocolError(Exception):
    """The broker refused us or spoke something we do not understand."""


def _varint(n: int) -> bytes:
    out_b = bytearray()
    while True:
        b, n = n % 128, n // 128
        out_b.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out_b)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _bin(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _props(p: dict[int, int]) -> bytes:
    body = bytearray()
    for pid, v in p.items():
        body.append(pid)
        body += struct.pack("!H", v) if pid == PROP_RECEIVE_MAXIMUM else struct.pack("!I", v)
    return _varint(len(body)) + bytes(body)


def _packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + _varint(len(body)) + body


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    mult, val = 1, 0
    while True:
        b = buf[i]
        i += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, i
        mult *= 128
        if mult > 128**3:
            raise MqttProtocolError("malformed variable byte integer")


def _parse_props(buf: bytes, i: int) -> tuple[dict[int, Any], int]:
    n, i = _read_varint(buf, i)
    end = i + n
    props: dict[int, Any] = {}
    while i < end:
        pid = buf[i]
        i += 1
        kind = _PROP_KIND.get(pid)
        if kind == "byte":
            props[pid], i = buf[i], i + 1
        elif kind == "u16":
            props[pid], i = struct.unpack_from("!H", buf, i)[0], i + 2
        elif kind == "u32":
            props[pid], i = struct.unpack_from("!I", buf, i)[0], i + 4
        elif kind == "varint":
            props[pid], i = _read_varint(buf, i)
        elif kind in ("str", "bin"):
            ln = struct.unpack_from("!H", buf, i)[0]
            props[pid], i = buf[i + 2:i + 2 + ln], i + 2 + ln
        elif kind == "pair":
            for _ in range(2):
                ln = struct.unpack_from("!H", buf, i)[0]
                i += 2 + ln
        else:
            raise MqttProtocolError(f"unknown property 0x{pid:02x}")
    return props, end


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


OnMessage = Callable[[str, bytes, dict[int, Any]], None]


class LiteMqtt:
    """One MQTT 5 connection. `connect()`, then `publish()` / `subscribe()`; the reader
    task answers PUBACKs, SUBACKs and delivers PUBLISHes to `on_message` (acked at once)."""

    def __init__(self, host: str, port: int, client_id: str, *, keepalive: int = 60,
                 session_expiry_s: int = 0, clean_start: bool = True, will: Will | None = None,
                 username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, on_message: OnMessage | None = None,
                 receive_maximum: int = 32) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.keepalive = keepalive
        self.session_expiry_s = session_expiry_s
        self.clean_start = clean_start
        self.will = will
        self.username, self.password = username, password
        self.tls = tls
        self.on_message = on_message
        self.receive_maximum = receive_maximum
        self.session_present = False
        self.last_sent = time.monotonic()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pid = 0
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._connack: asyncio.Future[tuple[int, bool]] | None = None
        self.closed = asyncio.Event()
        self.close_reason = ""

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self.closed.is_set()

    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _send(self, data: bytes) -> None:
        if self._writer is None or self.closed.is_set():
            raise ConnectionError(f"{self.client_id}: not connected ({self.close_reason})")
        self._writer.write(data)
        self.last_sent = time.monotonic()

    async def _drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    async def connect(self, within_s: float = 10.0) -> bool:
        self.closed.clear()
        self.close_reason = ""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.tls), within_s)
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02 if self.clean_start else 0
        payload = _str(self.client_id)
        if self.will is not None:
            flags |= 0x04 | (self.will.qos << 3) | (0x20 if self.will.retain else 0)
            payload += _varint(0) + _str(self.will.topic) + _bin(self.will.payload)
        if self.username is not None:
            flags |= 0x80
            payload += _str(self.username)
        if self.password is not None:
            flags |= 0x40
            payload += _bin(self.password.encode())
        props: dict[int, int] = {PROP_RECEIVE_MAXIMUM: self.receive_maximum}
        if self.session_expiry_s:
            props[PROP_SESSION_EXPIRY] = self.session_expiry_s
        body = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", self.keepalive)
        body += _props(props) + payload
        self._connack = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read_loop(), name=f"mqtt-{self.client_id}")
        self._send(_packet(CONNECT, 0, body))
        await self._drain()
        try:
            code, present = await asyncio.wait_for(self._connack, within_s)
        except BaseException:
            self.abort("no CONNACK")
            raise
        if code >= 0x80:
            self.abort(f"CONNACK reason 0x{code:02x}")
            raise MqttProtocolError(f"{self.client_id}: broker refused the connection "
                                    f"(reason 0x{code:02x})")
        self.session_present = present
        return present

    async def _read_loop(self) -> None:
        assert self._reader is not None
        r = self._reader
        try:
            while True:
                h = await r.readexactly(1)
                mult, length = 1, 0
                while True:
                    b = (await r.readexactly(1))[0]
                    length += (b & 0x7F) * mult
                    if not b & 0x80:
                        break
                    mult *= 128
                body = await r.readexactly(length) if length else b""
                self._dispatch(h[0] >> 4, h[0] & 0x0F, body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            self._closed(f"connection lost: {e.__class__.__name__}")
        except MqttProtocolError as e:
            self._closed(str(e))
        except asyncio.CancelledError:
            self._closed("closed")
            raise

    def _dispatch(self, ptype: int, flags: int, body: bytes) -> None:
        if ptype == CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result((body[1], bool(body[0] & 1)))
        elif ptype in (PUBACK, SUBACK):
            pid = struct.unpack_from("!H", body, 0)[0]
            if ptype == PUBACK:
                code = body[2] if len(body) > 2 else 0
            else:
                _, i = _parse_props(body, 2)
                code = body[i] if i < len(body) else 0
            fut = self._pending.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(code)
        elif ptype == PUBLISH:
            qos = (flags >> 1) & 3
            tlen = struct.unpack_from("!H", body, 0)[0]
            topic = body[2:2 + tlen].decode()
            i = 2 + tlen
            pid = 0
            if qos:
                pid = struct.unpack_from("!H", body, i)[0]
                i += 2
            props, i = _parse_props(body, i)
            if qos == 1:
                self._send(_packet(PUBACK, 0, struct.pack("!H", pid)))
            if self.on_message is not None:
                self.on_message(topic, body[i:], props)
        elif ptype == DISCONNECT:
            code = body[0] if body else 0
            raise MqttProtocolError(f"broker disconnected us (reason 0x{code:02x})")
        # PINGRESP and anything else: nothing to do.

    def _closed(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.client_id}: {reason}"))
        self._pending.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(f"{self.client_id}: {reason}"))
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      message_expiry_s: int | None = None,
                      within_s: float = PUBACK_TIMEOUT_S) -> int:
        """Publish; with QoS 1 wait for the PUBACK and return its reason code."""
        props = {PROP_MESSAGE_EXPIRY: message_expiry_s} if message_expiry_s else {}
        if qos == 0:
            self._send(_packet(PUBLISH, retain, _str(topic) + _props(props) + payload))
            await self._drain()
            return 0
        pid = self._next_pid()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[pid] = fut
        self._send(_packet(PUBLISH, 0x02 | retain,
                           _str(topic) + struct.pack("!H", pid) + _props(props) + payload))
        await self._drain()
        return await asyncio.wait_for(fut, within_s)

    async def subscribe(self, filters: list[tuple[str, int]], within_s: float = 10.0) -> int:
        pid = self._next_pid()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[pid] = fut
        body = struct.pack("!H", pid) + _varint(0)
        for topic, qos in filters:
            body += _str(topic) + bytes([qos])
        self._send(_packet(SUBSCRIBE, 0x02, body))
        await self._drain()
        code = await asyncio.wait_for(fut, within_s)
        if code >= 0x80:
            raise MqttProtocolError(f"{self.client_id}: subscribe refused (0x{code:02x})")
        return code

    def ping(self) -> None:
        self._send(bytes([PINGREQ << 4, 0]))

    async def disconnect(self) -> None:
        """Clean DISCONNECT: the broker discards the will; the session lives on for
        session_expiry_s."""
        with contextlib.suppress(Exception):
            self._send(bytes([DISCONNECT << 4, 0]))
            await asyncio.wait_for(self._drain(), 5)
        await self._stop()

    def abort(self, reason: str = "aborted") -> None:
        """Drop the connection without DISCONNECT (the broker publishes the will)."""
        if self._writer is not None:
            transport = self._writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self._closed(reason)
        if self._task is not None:
            self._task.cancel()

    async def _stop(self) -> None:
        self._closed("disconnected")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2)


# ---------------------------------------------------------------------------------------
# Broker address
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerAddr:
    host: str
    port: int
    tls: bool = False

    @staticmethod
    def parse(s: str) -> BrokerAddr:
        """host:port, mqtt://host:port or mqtts://host:port."""
        if "://" in s:
            u = urlsplit(s)
            if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
                raise ValueError(f"broker {s!r}: use host:port, mqtt://host:port or "
                                 "mqtts://host:port")
            return BrokerAddr(u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883),
                              u.scheme == "mqtts")
        host, _, port = s.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"broker {s!r}: use host:port, e.g. 127.0.0.1:1883")
        return BrokerAddr(host or "127.0.0.1", int(port))


def tls_context(addr: BrokerAddr, ca_file: Path | None = None, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext | None:
    if not addr.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


# ---------------------------------------------------------------------------------------
# Simulated poles
# ---------------------------------------------------------------------------------------

EVENT_PAIRS = [("door_opened", "door_closed"), ("tilt_alarm", "tilt_cleared"),
               ("mains_lost", "mains_restored"), ("fault_raised", "fault_cleared")]
CAPABILITIES = ["lamp", "lux", "temp", "door", "tilt", "power", "din", "amp", "wdt",
                "failsafe", "mqtt5"]


def _dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":")).encode()


@dataclass
class Step:
    """One scripted step: at `at` seconds, on poles `poles` ("*", "3", "0-9")."""

    at: float
    poles: str
    do: str  # event | outage | lamp | sensors
    args: dict[str, Any] = field(default_factory=dict)

    def matches(self, index: int) -> bool:
        if self.poles in ("*", "all"):
            return True
        for part in self.poles.split(","):
            lo, _, hi = part.strip().partition("-")
            if hi:
                if int(lo) <= index <= int(hi):
                    return True
            elif int(lo) == index:
                return True
        return False


def load_script(path: Path) -> list[Step]:
    """A JSON list of steps: {"at": s, "poles": "*"|"3"|"0-9,12", "do": "event"|"outage"|
    "lamp"|"sensors", ...}: event takes "event" and "detail"; outage "for_s"; lamp
    "level"; sensors any of lux, temp_c, tilt_deg, door_open, mains."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the script: {e}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: the script must be a JSON list of steps")
    steps = []
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or "at" not in s or "do" not in s:
            raise ValueError(f"{path}: step {i}: needs at least \"at\" and \"do\"")
        if s["do"] not in ("event", "outage", "lamp", "sensors"):
            raise ValueError(f"{path}: step {i}: do={s['do']!r}: use event, outage, lamp "
                             "or sensors")
        args = {k: v for k, v in s.items() if k not in ("at", "poles", "do")}
        steps.append(Step(float(s["at"]), str(s.get("poles", "*")), s["do"], args))
    return sorted(steps, key=lambda st: st.at)


@dataclass
class FleetConfig:
    broker: BrokerAddr
    poles: int = 10
    prefix: str = "sim"
    root: str = DEFAULT_ROOT
    interval_s: float = 10.0
    duration_s: float = 60.0
    events_per_hour: float = 1.0
    script: list[Step] = field(default_factory=list)
    session_expiry_s: int = 600
    keepalive_s: int = 60
    connect_concurrency: int = 200
    seed: int = 1
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None


@dataclass
class PoleCounts:
    sent: Counter[str] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    refused: int = 0
    commands: int = 0
    commands_rejected: int = 0
    outages: int = 0
    reconnects: int = 0


class SimFleetPole:
    """One simulated pole: its state, its reports, its answers to commands."""

    def __init__(self, index: int, cfg: FleetConfig, rng: random.Random) -> None:
        self.index = index
        self.cfg = cfg
        self.pole_id = f"{cfg.prefix}-{index:05d}"
        self.base = f"{cfg.root}/{self.pole_id}"
        self.rng = rng
        self.counts = PoleCounts()
        self.level = 0
        self.lux = round(rng.uniform(5, 800), 1)
        self.temp_c = round(rng.uniform(-5, 30), 2)
        self.tilt_deg = round(rng.uniform(0, 1.5), 2)
        self.door_open = False
        self.mains = True
        self.energy_wh = round(rng.uniform(0, 50_000), 1)
        self.active: set[str] = set()
        self._last_ts_ms = 0
        self.started = time.monotonic()
        self.outage_until = 0.0
        self._reply: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.seq = 0  # API 1.2: per-pole record sequence on telemetry, events, results
        self.client: LiteMqtt | None = None
        self._boot()

    def _boot(self) -> None:
        self.boot_id = uuid.uuid4().hex
        self.started_at = utc_iso()
        self.started = time.monotonic()

    # ---- payloads ----------------------------------------------------------------

    def _ts(self) -> str:
        # Unique per pole: (pole_id, ts) identifies a message for the loss count.
        ms = max(int(time.time() * 1000), self._last_ts_ms + 1)
        self._last_ts_ms = ms
        return utc_iso(ms / 1000)

    def _stamp(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"v": 1, "pole_id": self.pole_id, "ts": self._ts(), **payload}

    def state(self, state: str, reason: str, ts: bool = True) -> bytes:
        return _dumps({"v": 1, "pole_id": self.pole_id, "state": state,
                       "ts": self._ts() if ts else None, "reason": reason})

    def birth(self) -> dict[str, Any]:
        return self._stamp({
            "boot_id": self.boot_id, "started_at": self.started_at,
            "controller_version": "0.1.0",
            "firmware": {"version": "0.1.0", "board_id": f"fleet-{self.index:08x}",
                         "protocol": "1.0"},
            "config_version": f"{self.index:016x}"[-16:], "models": {},
            "capabilities": CAPABILITIES,
        })

    def telemetry(self) -> dict[str, Any]:
        up = time.monotonic() - self.started
        ticks = int(up * 2)
        return self._stamp({
            "clock": {"synced": True, "source": "adjtimex"},
            "lamp": {"level": self.level, "target": self.level,
                     "duty": round(self.level * 655.35), "on": self.level > 0,
                     "failsafe": False},
            "sensors": {"lux": self.lux, "temp_c": self.temp_c, "door_open": self.door_open,
                        "tilt_deg": self.tilt_deg, "power_w": round(self.level * 0.9, 1),
                        "energy_wh": self.energy_wh, "mains": self.mains},
            "digital_inputs": 0,
            "link": {"up": True, "port": "/dev/ttyUSB0", "rtt_ms": 3.2, "tx_frames": ticks,
                     "rx_frames": ticks, "crc_errors": 0, "framing_errors": 0, "oversize": 0,
                     "resyncs": 0, "naks_received": 0, "retries": 0, "timeouts": 0,
                     "firmware_stats": None},
            "process": {"uptime_s": round(up, 3), "cpu_percent": 1.5, "rss_mb": 80.0,
                        "tasks": {t: {"healthy": True, "restarts": 0, "state": "running"}
                                  for t in ("link", "uplink", "telemetry", "lamp_poll")}},
            "camera": None,
            "crossing": None,
            "dimming": None,
            "visibility": None,
            "mqtt": {"protocol": "5", "reconnects": self.counts.reconnects,
                     "commands_received": self.counts.commands,
                     "commands_rejected": self.counts.commands_rejected,
                     "queued": 0, "dropped": 0, "refused": self.counts.refused},
        })

    # ---- commands -----------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, _props: dict[int, Any]) -> None:
        if topic != f"{self.base}/cmd":
            return
        self.counts.commands += 1
        cmd = cmdparse.parse(payload, time.time())
        if isinstance(cmd, cmdparse.Rejection):
            self.counts.commands_rejected += 1
            res = {"id": cmd.id, "status": "rejected", "reason": cmd.reason,
                   "detail": cmd.detail}
        elif isinstance(cmd.body, cmdparse.LampSet):
            self.level = cmd.body.level
            res = {"id": cmd.id, "status": "ok", "reason": "done",
                   "detail": f"lamp to {cmd.body.level} % over {cmd.body.fade_ms} ms"}
        elif isinstance(cmd.body, cmdparse.Reboot):
            res = {"id": cmd.id, "status": "ok", "reason": "done",
                   "detail": f"{cmd.body.target} reboot (simulated)"}
        else:
            res = {"id": cmd.id, "status": "ok", "reason": "done", "detail": "pong"}
        self._reply.put_nowait(("cmd/result", self._stamp(res)))

    # ---- the pole's life ------------------------------------------------------------

    def _client(self, clean_start: bool) -> LiteMqtt:
        c = self.cfg
        return LiteMqtt(
            c.broker.host, c.broker.port, f"smartpole-{self.pole_id}",
            keepalive=c.keepalive_s, session_expiry_s=c.session_expiry_s,
            clean_start=clean_start,
            will=Will(f"{self.base}/state", self.state("offline", "connection_lost", ts=False)),
            username=c.username, password=c.password, tls=c.tls, on_message=self.on_message)

    async def connect(self, clean_start: bool) -> None:
        cl = self._client(clean_start)
        await cl.connect()
        self.client = cl
        # Subscribe first (a persistent session already has it): once a backend sees
        # `online`, commands reach us.
        if not cl.session_present:
            await cl.subscribe([(f"{self.base}/cmd", 1)])
        await cl.publish(f"{self.base}/state", self.state("online", "connected"), retain=True)
        await cl.publish(f"{self.base}/birth", _dumps(self.birth()), retain=True)

    async def send(self, kind: str, record: dict[str, Any]) -> None:
        cl = self.client
        if cl is None or not cl.connected:
            return  # in an outage: the real pole would queue; the sim does not count it
        self.seq += 1
        record["seq"] = self.seq
        self.counts.sent[kind] += 1
        try:
            code = await cl.publish(f"{self.base}/{kind}", _dumps(record))
        except (ConnectionError, TimeoutError, OSError):
            self.counts.failed += 1
            return
        if code < 0x80:
            self.counts.acked[kind] += 1
        else:
            self.counts.failed += 1
            self.counts.refused += 1

    def event(self, name: str, detail: dict[str, Any]) -> dict[str, Any]:
        if name in ("door_opened", "door_closed"):
            self.door_open = name == "door_opened"
        elif name in ("mains_lost", "mains_restored"):
            self.mains = name == "mains_restored"
        return self._stamp({"event": name, "detail": detail})

    def random_event(self) -> dict[str, Any]:
        pair = self.rng.choice(EVENT_PAIRS)
        name = pair[1] if pair[0] in self.active else pair[0]
        self.active.symmetric_difference_update({pair[0]})
        detail: dict[str, Any] = {}
        if name == "tilt_alarm":
            detail = {"tilt_deg": round(self.rng.uniform(6, 12), 1)}
        elif name == "fault_raised":
            detail = {"fault": "lamp_driver"}
        return self.event(name, detail)

    async def outage(self, for_s: float) -> None:
        """Drop the connection without DISCONNECT (the broker publishes our will), stay
        away `for_s`, come back resuming the session (queued commands arrive, expired ones
        do not)."""
        if self.client is not None:
            self.client.abort("simulated outage")
        self.counts.outages += 1
        await asyncio.sleep(for_s)
        await self.reconnect()

    async def reconnect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.connect(clean_start=False)
                self.counts.reconnects += 1
                return
            except (ConnectionError, OSError, TimeoutError, MqttProtocolError):
                await asyncio.sleep(delay * self.rng.uniform(0.5, 1.0))
                delay = min(delay * 2, 30)

    async def run(self, t0: float, stop: asyncio.Event, t_script: float | None = None) -> None:
        """Telemetry every interval from a random phase after `t0`, events, scripted steps
        (their `at` counts from `t_script`, default `t0`), replies to commands."""
        ts0 = t0 if t_script is None else t_script
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        next_tel = t0 + self.rng.uniform(0, cfg.interval_s)
        rate = cfg.events_per_hour / 3600.0
        next_ev = t0 + (self.rng.expovariate(rate) if rate > 0 else math.inf)
        steps = [s for s in cfg.script if s.matches(self.index)]
        stop_task = asyncio.ensure_future(stop.wait())
        reply_task: asyncio.Task[tuple[str, dict[str, Any]]] | None = None
        try:
            while not stop.is_set():
                now = loop.time()
                cl = self.client
                if cl is not None and cl.closed.is_set():
                    await self.reconnect()  # an unplanned drop: come back like a pole does
                    continue
                if now >= next_tel:
                    next_tel += cfg.interval_s
                    await self.send("telemetry", self.telemetry())
                    continue
                if now >= next_ev:
                    next_ev = now + self.rng.expovariate(rate)
                    await self.send("events", self.random_event())
                    continue
                if steps and now >= ts0 + steps[0].at:
                    await self._step(steps.pop(0))
                    continue
                if cl is not None and time.monotonic() - cl.last_sent > cfg.keepalive_s / 2:
                    with contextlib.suppress(ConnectionError):
                        cl.ping()
                wake = min(next_tel, next_ev, ts0 + steps[0].at if steps else math.inf,
                           now + cfg.keepalive_s / 2)
                if reply_task is None:
                    reply_task = asyncio.ensure_future(self._reply.get())
                done, _ = await asyncio.wait({reply_task, stop_task},
                                             timeout=max(0.0, wake - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if reply_task in done:
                    kind, payload = reply_task.result()
                    reply_task = None
                    await self.send(kind, payload)
        finally:
            stop_task.cancel()
            if reply_task is not None:
                reply_task.cancel()
        # Results still queued go out before we leave.
        while not self._reply.empty():
            kind, payload = self._reply.get_nowait()
            await self.send(kind, payload)

    async def _step(self, st: Step) -> None:
        if st.do == "event":
            await self.send("events", self.event(str(st.args.get("event", "door_opened")),
                                                 dict(st.args.get("detail", {}))))
        elif st.do == "outage":
            await self.outage(float(st.args.get("for_s", 5.0)))
        elif st.do == "lamp":
            self.level = int(st.args.get("level", 0))
        elif st.do == "sensors":
            for k in ("lux", "temp_c", "tilt_deg", "door_open", "mains"):
                if k in st.args:
                    setattr(self, k, st.args[k])

    async def shutdown(self) -> None:
        cl = self.client
        if cl is None or not cl.connected:
            return
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            await cl.publish(f"{self.base}/state", self.state("offline", "shutdown"),
                             retain=True)
        await cl.disconnect()


@dataclass
class FleetReport:
    poles: int
    connected: int
    seconds: float
    per_pole: dict[str, dict[str, Any]]
    connect_s: float
    connect_errors: list[str]
    total_s: float = 0.0  # from the first connect on (seconds: from the last one)

    def totals(self) -> dict[str, Any]:
        sent: Counter[str] = Counter()
        acked: Counter[str] = Counter()
        failed = 0
        for p in self.per_pole.values():
            sent.update(p["sent"])
            acked.update(p["acked"])
            failed += p["failed"]
        n = sum(sent.values())
        return {"sent": dict(sent), "acked": dict(acked), "failed": failed,
                "messages": n, "msgs_per_s": round(n / (self.total_s or self.seconds), 1)
                if (self.total_s or self.seconds) else 0}

    def as_dict(self) -> dict[str, Any]:
        return {"poles": self.poles, "connected": self.connected,
                "seconds": round(self.seconds, 2), "connect_s": round(self.connect_s, 2),
                "connect_errors": self.connect_errors[:20], **self.totals(),
                "per_pole": self.per_pole}


async def run_fleet(cfg: FleetConfig, stop: asyncio.Event | None = None,
                    on_progress: Callable[[str, float, float], None] | None = None,
                    ready: Callable[[list[SimFleetPole]], None] | None = None) -> FleetReport:
    """Connect the fleet, run it for `duration_s` (0: until `stop`), shut down cleanly."""
    stop = stop or asyncio.Event()
    rng = random.Random(cfg.seed)
    poles = [SimFleetPole(i, cfg, random.Random(rng.getrandbits(64))) for i in range(cfg.poles)]
    sem = asyncio.Semaphore(cfg.connect_concurrency)
    errors: list[str] = []
    done = 0
    t_conn = time.monotonic()
    loop = asyncio.get_running_loop()
    t_start = loop.time()  # scripted steps count from here, for every pole
    tasks: list[asyncio.Task[None]] = []

    async def up(p: SimFleetPole) -> None:
        nonlocal done
        async with sem:
            for attempt in range(5):
                try:
                    await p.connect(clean_start=True)
                    break
                except (ConnectionError, OSError, TimeoutError, MqttProtocolError) as e:
                    if attempt == 4:
                        errors.append(f"{p.pole_id}: {e}")
                    await asyncio.sleep(0.2 * (attempt + 1))
        if p.client is not None:
            # Live at once: a pole that is connected reports and answers commands while
            # the rest of the fleet is still connecting.
            tasks.append(asyncio.create_task(p.run(loop.time(), stop, t_start)))
        done += 1
        if on_progress is not None:
            on_progress("connect", done, cfg.poles)

    await asyncio.gather(*(up(p) for p in poles))
    connect_s = time.monotonic() - t_conn
    live = [p for p in poles if p.client is not None]
    if ready is not None:
        ready(live)
    t0 = loop.time()
    if cfg.duration_s > 0:
        loop.call_later(cfg.duration_s, stop.set)
    if on_progress is not None:
        async def tick() -> None:
            while not stop.is_set():
                on_progress("run", min(loop.time() - t0, cfg.duration_s or math.inf),
                            cfg.duration_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        ticker = asyncio.create_task(tick())
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    seconds = loop.time() - t0
    total_s = loop.time() - t_start
    if on_progress is not None:
        ticker.cancel()
    await asyncio.gather(*(p.shutdown() for p in live), return_exceptions=True)
    per_pole = {p.pole_id: {"sent": dict(p.counts.sent), "acked": dict(p.counts.acked),
                            "failed": p.counts.failed, "commands": p.counts.commands,
                            "commands_rejected": p.counts.commands_rejected,
                            "outages": p.counts.outages, "reconnects": p.counts.reconnects}
                for p in poles}
    return FleetReport(cfg.poles, len(live), seconds, per_pole, connect_s, errors, total_s)


# ---------------------------------------------------------------------------------------
# The reference backend consumer
# ---------------------------------------------------------------------------------------


@dataclass
class PoleSummary:
    pole_id: str
    state: str = "?"
    reason: str = ""
    boot_id: str = ""
    controller_version: str = ""
    firmware_version: str = ""
    telemetry: int = 0
    events: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    lamp: int | None = None
    lux: float | None = None
    door_open: bool | None = None
    clock_synced: bool | None = None
    last_ts: str = ""
    max_latency_ms: float = 0.0
    max_seq: int = 0
    seq_count: int = 0

    @property
    def seq_gaps(self) -> int:
        """Records never seen below the highest seq (a loss, if this consumer sees them
        all: one worker, or all workers of the group in one process)."""
        return max(0, self.max_seq - self.seq_count)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "boot_id": self.boot_id,
                "controller_version": self.controller_version,
                "firmware_version": self.firmware_version, "telemetry": self.telemetry,
                "events": dict(self.events), "results": dict(self.results),
                "lamp": self.lamp, "lux": self.lux, "door_open": self.door_open,
                "clock_synced": self.clock_synced, "last_ts": self.last_ts,
                "max_latency_ms": round(self.max_latency_ms, 1), "max_seq": self.max_seq,
                "seq_gaps": self.seq_gaps}


def _ts_epoch(ts: str) -> float | None:
    try:
        return datetime.fromisoformat(ts).timestamp()  # 3.11 reads the "Z" suffix
    except (ValueError, TypeError):
        return None


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, math.ceil(q / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


@dataclass
class Ingest:
    """Fleet state as one worker of a consumer group sees it."""

    root: str = DEFAULT_ROOT
    poles: dict[str, PoleSummary] = field(default_factory=dict)
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    messages: int = 0
    duplicates: int = 0
    malformed: int = 0
    unique: Counter[str] = field(default_factory=Counter)
    commands_sent: dict[str, float] = field(default_factory=dict)
    command_rtts_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    last_message: float = 0.0

    def pole(self, pid: str) -> PoleSummary:
        p = self.poles.get(pid)
        if p is None:
            p = self.poles[pid] = PoleSummary(pid)
        return p

    def apply(self, topic: str, payload: bytes, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.messages += 1
        self.last_message = time.monotonic()
        rest = topic[len(self.root) + 1:] if topic.startswith(self.root + "/") else ""
        pid, _, kind = rest.partition("/")
        if not pid or not kind:
            self.malformed += 1
            return
        if not payload:  # a retained message being cleared (decommissioned pole)
            if kind == "state":
                self.poles.pop(pid, None)
            return
        try:
            msg = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.malformed += 1
            return
        if not isinstance(msg, dict):
            self.malformed += 1
            return
        p = self.pole(pid)
        if kind == "state":
            p.state, p.reason = str(msg.get("state", "?")), str(msg.get("reason", ""))
            return
        if kind == "birth":
            p.boot_id = str(msg.get("boot_id", ""))
            p.controller_version = str(msg.get("controller_version", ""))
            p.firmware_version = str((msg.get("firmware") or {}).get("version", ""))
            return
        if kind not in ("telemetry", "events", "cmd/result"):
            return  # tolerant reader: a topic from a later minor version
        ts = str(msg.get("ts", ""))
        seq = msg.get("seq")
        # API 1.2: (pole, seq) identifies a record; before it, (pole, kind, ts, event/id).
        key = ((pid, "seq", str(seq)) if isinstance(seq, int) else
               (pid, kind, ts + str(msg.get("event", msg.get("id", "")))))
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        self.unique[kind] += 1
        if isinstance(seq, int):
            p.seq_count += 1
            p.max_seq = max(p.max_seq, seq)
        sent = _ts_epoch(ts)
        if sent is not None:
            lat = max(0.0, (now - sent) * 1000)
            self.latencies_ms.append(lat)
            p.max_latency_ms = max(p.max_latency_ms, lat)
        p.last_ts = ts
        if kind == "telemetry":
            p.telemetry += 1
            lamp = msg.get("lamp") or {}
            sens = msg.get("sensors") or {}
            p.lamp = lamp.get("level")
            p.lux = sens.get("lux")
            p.door_open = sens.get("door_open")
            p.clock_synced = (msg.get("clock") or {}).get("synced")
        elif kind == "events":
            p.events[str(msg.get("event"))] += 1
        else:
            p.results[str(msg.get("status"))] += 1
            t_sent = self.commands_sent.pop(str(msg.get("id")), None)
            if t_sent is not None:
                self.command_rtts_ms.append((time.monotonic() - t_sent) * 1000)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        rtt = sorted(self.command_rtts_ms)
        secs = time.monotonic() - self.started
        states = Counter(p.state for p in self.poles.values())
        return {
            "poles": len(self.poles), "states": dict(states), "messages": self.messages,
            "unique": dict(self.unique), "duplicates": self.duplicates,
            "seq_gaps": sum(p.seq_gaps for p in self.poles.values()),
            "malformed": self.malformed, "seconds": round(secs, 2),
            "msgs_per_s": round(self.messages / secs, 1) if secs else 0.0,
            "latency_ms": {"count": len(lat), "p50": round(percentile(lat, 50), 1),
                           "p90": round(percentile(lat, 90), 1),
                           "p99": round(percentile(lat, 99), 1),
                           "max": round(lat[-1], 1) if lat else 0.0},
            "commands": {"sent": len(rtt) + len(self.commands_sent),
                         "answered": len(rtt), "unanswered": len(self.commands_sent),
                         "p99_ms": round(percentile(rtt, 99), 1)},
        }

    def table(self, limit: int = 30) -> Table:
        t = Table(title=f"{len(self.poles)} pole(s), {self.messages} messages")
        for col in ("pole", "state", "controller", "firmware", "telemetry", "events",
                    "results", "lamp %", "lux", "door", "clock", "max lat ms"):
            t.add_column(col)
        for p in sorted(self.poles.values(), key=lambda p: p.pole_id)[:limit]:
            t.add_row(p.pole_id, p.state, p.controller_version or "-",
                      p.firmware_version or "-", str(p.telemetry),
                      ", ".join(f"{k} {v}" for k, v in sorted(p.events.items())) or "-",
                      ", ".join(f"{k} {v}" for k, v in sorted(p.results.items())) or "-",
                      "-" if p.lamp is None else str(p.lamp),
                      "-" if p.lux is None else f"{p.lux:.0f}",
                      "-" if p.door_open is None else ("open" if p.door_open else "shut"),
                      "-" if p.clock_synced is None else ("ok" if p.clock_synced else "UNSYNC"),
                      f"{p.max_latency_ms:.0f}")
        if len(self.poles) > limit:
            t.caption = f"first {limit} of {len(self.poles)} poles (--limit, or --json)"
        return t


@dataclass
class IngestConfig:
    broker: BrokerAddr
    group: str = "ingest"
    root: str = DEFAULT_ROOT
    workers: int = 1
    client_id: str = "smartpole-ingest"
    session_expiry_s: int = 300
    command_rate: float = 0.0  # commands per second to discovered online poles
    command_expiry_s: int = 30
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None


def command_payload(cid: str, body: dict[str, Any], expires_in_s: float | None) -> bytes:
    env: dict[str, Any] = {"id": cid, "issued_at": utc_iso()}
    if expires_in_s is not None:
        env["expires_at"] = utc_iso(time.time() + expires_in_s)
    env["body"] = body
    return _dumps(env)


async def run_ingest(cfg: IngestConfig, stop: asyncio.Event,
                     ready: Callable[[], None] | None = None) -> Ingest:
    """Consume the fleet until `stop`: `workers` members of the shared group (each its own
    connection and persistent session); worker 0 also follows state and birth."""
    state = Ingest(cfg.root)
    clients: list[LiteMqtt] = []
    shared = [(f"$share/{cfg.group}/{cfg.root}/+/{k}", 1)
              for k in ("telemetry", "events", "cmd/result")]
    for w in range(cfg.workers):
        cl = LiteMqtt(cfg.broker.host, cfg.broker.port, f"{cfg.client_id}-{w}",
                      keepalive=60, session_expiry_s=cfg.session_expiry_s, clean_start=False,
                      username=cfg.username, password=cfg.password, tls=cfg.tls,
                      on_message=lambda t, p, _pr: state.apply(t, p), receive_maximum=1000)
        await cl.connect()
        filters = list(shared)
        if w == 0:
            # Retained discovery: never through a shared subscription (brokers do not
            # send retained messages to shared subscribers).
            filters += [(f"{cfg.root}/+/state", 1), (f"{cfg.root}/+/birth", 1)]
        await cl.subscribe(filters)
        clients.append(cl)
    if ready is not None:
        ready()
    rng = random.Random(7)
    n = 0
    try:
        while not stop.is_set():
            wait = 1.0 / cfg.command_rate if cfg.command_rate > 0 else 15.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                break
            for cl in clients:
                if time.monotonic() - cl.last_sent > 20:
                    with contextlib.suppress(ConnectionError):
                        cl.ping()
            online = [p for p, s in state.poles.items() if s.state == "online"]
            if cfg.command_rate > 0 and online:
                n += 1
                pid = rng.choice(online)
                cid = f"ingest-{n}"
                body: dict[str, Any] = ({"type": "ping"} if n % 2 else
                                        {"type": "lamp.set", "level": rng.randrange(0, 101),
                                         "fade_ms": 1000})
                state.commands_sent[cid] = time.monotonic()
                # MQTT 5 message expiry: a pole that is away longer never gets it late.
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await clients[0].publish(f"{cfg.root}/{pid}/cmd",
                                             command_payload(cid, body, cfg.command_expiry_s),
                                             message_expiry_s=cfg.command_expiry_s)
    finally:
        for cl in clients:
            await cl.disconnect()
    return state


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _broker_or_exit(s: str) -> BrokerAddr:
    try:
        return BrokerAddr.parse(s)
    except ValueError as e:
        err.print(f"[red]--broker[/]: {e}")
        raise typer.Exit(2) from None


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


BrokerOpt = Annotated[str, typer.Option(
    help="Broker: host:port, mqtt://host:port or mqtts://host:port.")]
RootOpt = Annotated[str, typer.Option(help="Topic root (mqtt.topic_root of the poles).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
ReportOpt = Annotated[Path | None, typer.Option(
    help="Also write the full report (per pole) as JSON to this file.")]
UserOpt = Annotated[str | None, typer.Option(help="Broker user name.")]
PassOpt = Annotated[str | None, typer.Option(help="Broker password.")]
CaOpt = Annotated[Path | None, typer.Option(help="CA bundle for mqtts://.")]


def fleet_sim_command(
    poles: Annotated[int, typer.Option("--poles", "-n", min=1, max=100_000,
                                       help="How many poles to simulate.")] = 10,
    broker: BrokerOpt = "127.0.0.1:1883",
    duration: Annotated[float, typer.Option(help="Run this long in seconds (0: until "
                                            "Ctrl-C).")] = 60.0,
    interval: Annotated[float, typer.Option(min=0.2, help="Telemetry interval per pole, "
                                            "seconds (a pole's default is 10).")] = 10.0,
    events_per_hour: Annotated[float, typer.Option(min=0, help="Random events (door, tilt, "
                                                   "mains, faults) per pole per hour.")] = 1.0,
    script: Annotated[Path | None, typer.Option(help="JSON list of scripted steps: "
                                                "{\"at\": 5, \"poles\": \"0-9\", \"do\": "
                                                "\"event\"|\"outage\"|\"lamp\"|\"sensors\", "
                                                "...}.")] = None,
    prefix: Annotated[str, typer.Option(help="Pole ids are PREFIX-00000, PREFIX-00001, ...")]
        = "sim",
    root: RootOpt = DEFAULT_ROOT,
    session_expiry: Annotated[int, typer.Option(help="MQTT 5 session expiry per pole, "
                                                "seconds: the broker keeps its cmd "
                                                "subscription and queued commands that "
                                                "long.")] = 600,
    seed: Annotated[int, typer.Option(help="Random seed (phases, sensors, events).")] = 1,
    username: UserOpt = None,
    password: PassOpt = None,
    ca_file: CaOpt = None,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate N poles (no cameras) against a broker: retained state and birth, telemetry,
    scripted events, answers to commands; for load tests."""
    addr = _broker_or_exit(broker)
    if len(prefix) > 50 or not re.fullmatch(POLE_ID_RE, f"{prefix}-00000"):
        err.print(f"[red]--prefix[/] {prefix!r}: use lowercase letters, digits and '-' "
                  "(it becomes part of the pole id)")
        raise typer.Exit(2)
    try:
        steps = load_script(script) if script else []
    except ValueError as e:
        err.print(f"[red]--script[/]: {e}")
        raise typer.Exit(2) from None
    cfg = FleetConfig(addr, poles, prefix, root, interval, duration, events_per_hour, steps,
                      session_expiry, seed=seed, username=username, password=password,
                      tls=tls_context(addr, ca_file))

    def ready(_live: list[SimFleetPole]) -> None:
        if report is not None:  # for benchmarks: the fleet is connected, steady state begins
            report.with_suffix(".running").write_text("running\n")

    async def go() -> FleetReport:
        stop = asyncio.Event()
        _install_stop(stop)
        if as_json:
            return await run_fleet(cfg, stop, ready=ready)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                      TimeElapsedColumn(), console=err, transient=False) as prog:
            conn = prog.add_task("connecting poles", total=poles)
            run = prog.add_task("running (s)", total=duration or None, start=False)

            def on_progress(phase: str, done: float, total: float) -> None:
                if phase == "connect":
                    prog.update(conn, completed=done)
                else:
                    prog.start_task(run)
                    prog.update(run, completed=done)

            return await run_fleet(cfg, stop, on_progress, ready)

    try:
        rep = asyncio.run(go())
    except OSError as e:
        err.print(f"[red]cannot reach the broker at {addr.host}:{addr.port}[/]: {e}. "
                  "Start one (mosquitto -p PORT) or pass --broker.")
        raise typer.Exit(1) from None
    data = rep.as_dict()
    if report is not None:
        report.write_text(json.dumps(data, indent=1))
    summary = {k: v for k, v in data.items() if k != "per_pole"}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"{rep.connected}/{rep.poles} poles connected in {rep.connect_s:.1f} s; "
                  f"{summary['messages']} messages in {rep.seconds:.1f} s "
                  f"({summary['msgs_per_s']}/s), {summary['failed']} unacknowledged")
        for line in rep.connect_errors[:5]:
            err.print(f"[red]{line}[/]")
    if rep.connected < rep.poles or summary["failed"]:
        if rep.connect_errors:
            err.print("Some poles could not connect: check the broker's connection limit "
                      "(max_connections) and the open-file limit (ulimit -n).")
        raise typer.Exit(1)


def ingest_command(
    broker: BrokerOpt = "127.0.0.1:1883",
    group: Annotated[str, typer.Option(help="Shared-subscription group: workers with the "
                                       "same group split the fleet's messages.")] = "ingest",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Group members to run in this "
                                         "process (each its own connection).")] = 1,
    root: RootOpt = DEFAULT_ROOT,
    duration: Annotated[float, typer.Option(help="Stop after this long in seconds (0: until "
                                            "Ctrl-C).")] = 0.0,
    client_id: Annotated[str, typer.Option(help="Client id prefix; keep it stable so a "
                                           "restarted worker resumes its session.")]
        = "smartpole-ingest",
    session_expiry: Annotated[int, typer.Option(help="MQTT 5 session expiry, seconds: the "
                                                "broker queues for a stopped worker that "
                                                "long.")] = 300,
    command_rate: Annotated[float, typer.Option(min=0, help="Also send this many commands "
                                                "per second (ping, lamp.set) to online poles "
                                                "and match their results.")] = 0.0,
    command_expiry: Annotated[int, typer.Option(min=1, help="expires_at and MQTT 5 message "
                                                "expiry of those commands, seconds.")] = 30,
    limit: Annotated[int, typer.Option(help="Poles shown in the table.")] = 30,
    username: UserOpt = None,
    password: PassOpt = None,
    ca_file: CaOpt = None,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reference backend consumer: read a fleet through a shared subscription
    ($share/GROUP/ROOT/+/telemetry|events|cmd/result), follow retained state and birth,
    print per-pole summaries and publish-to-consume latency."""
    addr = _broker_or_exit(broker)
    if "/" in group or "+" in group or "#" in group or not group:
        err.print(f"[red]--group[/] {group!r}: a plain name without / + #")
        raise typer.Exit(2)
    cfg = IngestConfig(addr, group, root, workers, client_id, session_expiry, command_rate,
                       command_expiry, username, password, tls_context(addr, ca_file))

    async def go() -> Ingest:
        stop = asyncio.Event()
        _install_stop(stop)
        if duration > 0:
            asyncio.get_running_loop().call_later(duration, stop.set)

        def ready() -> None:
            if not as_json:
                err.print(f"ingest: subscribed as group {group!r} ({workers} worker(s)); "
                          "Ctrl-C to stop")
            if report is not None:
                report.with_suffix(".ready").write_text("ready\n")

        return await run_ingest(cfg, stop, ready)

    try:
        st = asyncio.run(go())
    except (OSError, MqttProtocolError) as e:
        err.print(f"[red]cannot consume from {addr.host}:{addr.port}[/]: {e}. Check --broker "
                  "and that the broker speaks MQTT 5 (shared subscriptions need it).")
        raise typer.Exit(1) from None
    summ = st.summary()
    if report is not None:
        report.write_text(json.dumps({**summ, "per_pole": {k: v.as_dict() for k, v in
                                                           st.poles.items()}}, indent=1))
    if as_json:
        out.print_json(json.dumps(summ))
    else:
        out.print(st.table(limit))
        lat = summ["latency_ms"]
        out.print(f"{summ['messages']} messages ({summ['msgs_per_s']}/s), "
                  f"{summ['duplicates']} duplicates; publish-to-consume p50 {lat['p50']} ms, "
                  f"p99 {lat['p99']} ms, max {lat['max']} ms")


app = typer.Typer(help="Fleet simulation and the reference consumer.", no_args_is_help=True)
app.command("fleet-sim")(fleet_sim_command)
app.command("ingest")(ingest_command)

if __name__ == "__main__":
    app()
