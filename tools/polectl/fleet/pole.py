"""One simulated pole of `polectl fleet-sim`: what a controller publishes (retained state
and birth, telemetry, events, command results with `seq`) and its answers to commands,
with the controller's own sans-I/O command validation. No camera."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import ssl
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_controller.api import (
    API_VERSION,
    CAPABILITIES,
    TOPIC_ROOT,
    Birth,
    Event,
    Firmware,
    LampSet,
    Ping,
    Reboot,
    Result,
    State,
    Telemetry,
)
from edge_controller.api.commands import Rejection, command_type, parse
from edge_controller.api.messages import Clock, Lamp, Link, Mqtt, Process, Sensors, TaskHealth
from edge_controller.clock import utc_iso
from edge_controller.link.codec import PROTO_MAJOR, PROTO_MINOR
from edge_controller.uplink.trust import TrustPolicy
from edge_controller.version import __version__
from polectl.broker import BrokerAddr
from polectl.fleet.mqtt import MqttProtocolError, MqttSession, Will
from polectl.fleet.script import Step

DEFAULT_ROOT = TOPIC_ROOT

EVENT_PAIRS = [("door_opened", "door_closed"), ("tilt_alarm", "tilt_cleared"),
               ("mains_lost", "mains_restored"), ("fault_raised", "fault_cleared")]
# What a simulated pole has (no camera, no update slots, no peripherals), in the API's order.
SIM_CAPABILITIES = [c for c in CAPABILITIES if c in {"lamp", "lux", "temp", "door", "tilt",
                                                     "power", "din", "amp", "wdt", "failsafe",
                                                     "mqtt5"}]
# The commands a simulated pole carries out (others: rejected/unsupported).
SIM_COMMANDS = [command_type(b) for b in (LampSet, Reboot, Ping)]
# The controller's core tasks (edge_controller/app.py's always-on TaskSpecs and health;
# tests/tools/test_fleet.py keeps the two lists equal).
CORE_TASKS = ("link", "uplink", "telemetry", "lamp_poll", "health")
LINK_PROTOCOL = f"{PROTO_MAJOR}.{PROTO_MINOR}"


_RUNNING = TaskHealth(healthy=True, restarts=0, state="running")


def _dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":")).encode()


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
    # The city's public command key: with it, every pole requires signed commands and
    # verifies them as a provisioned pole does (TrustPolicy); without, they run unsigned.
    command_key: Ed25519PublicKey | None = None
    max_lifetime_s: float = 900.0


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
        self.client: MqttSession | None = None
        self.trust = TrustPolicy(cfg.command_key, cfg.command_key is not None,
                                 max_lifetime_s=cfg.max_lifetime_s, pole_id=self.pole_id)
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

    def _header(self) -> dict[str, Any]:
        return {"pole_id": self.pole_id, "ts": self._ts()}

    def state(self, state: str, reason: str, ts: bool = True) -> bytes:
        msg = State.model_validate({"pole_id": self.pole_id, "state": state,
                                    "ts": self._ts() if ts else None, "reason": reason})
        return _dumps(msg.payload())

    def birth(self) -> dict[str, Any]:
        return Birth(
            **self._header(), boot_id=self.boot_id, started_at=self.started_at,
            controller_version=__version__,
            firmware=Firmware(version=__version__, board_id=f"fleet-{self.index:08x}",
                              protocol=LINK_PROTOCOL),
            config_version=f"{self.index:016x}"[-16:], models={},
            capabilities=SIM_CAPABILITIES, api_version=API_VERSION, commands=SIM_COMMANDS,
            command_signatures=self.trust.mode,
        ).payload()

    def telemetry(self) -> dict[str, Any]:
        up = time.monotonic() - self.started
        ticks = int(up * 2)
        c = self.counts
        return Telemetry(
            **self._header(), clock=Clock(synced=True, source="adjtimex"),
            lamp=Lamp(level=self.level, target=self.level, duty=round(self.level * 655.35),
                      on=self.level > 0, failsafe=False),
            sensors=Sensors(lux=self.lux, temp_c=self.temp_c, door_open=self.door_open,
                            tilt_deg=self.tilt_deg, power_w=round(self.level * 0.9, 1),
                            energy_wh=self.energy_wh, mains=self.mains),
            digital_inputs=0,
            link=Link(up=True, port="/dev/ttyUSB0", rtt_ms=3.2, tx_frames=ticks,
                      rx_frames=ticks, crc_errors=0, framing_errors=0, oversize=0, resyncs=0,
                      naks_received=0, retries=0, timeouts=0, firmware_stats=None),
            process=Process(uptime_s=round(up, 3), cpu_percent=1.5, rss_mb=80.0,
                            tasks={t: _RUNNING for t in CORE_TASKS}),
            camera=None, crossing=None, dimming=None, visibility=None,
            mqtt=Mqtt(protocol="5", reconnects=c.reconnects, commands_received=c.commands,
                      commands_rejected=c.commands_rejected, queued=0, dropped=0,
                      refused=c.refused),
        ).payload()

    # ---- commands -----------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic != f"{self.base}/cmd":
            return
        self.counts.commands += 1
        now = time.time()
        cmd = parse(payload, now)
        if isinstance(cmd, Rejection):
            res = self._result(cmd.id, "rejected", cmd.reason, cmd.detail)
        elif (refused := self.trust.check(json.loads(payload), cmd, now)) is not None:
            res = self._result(cmd.id, "rejected", *refused)
        elif isinstance(cmd.body, LampSet):
            self.level = cmd.body.level
            res = self._result(cmd.id, "ok", "done",
                               f"lamp to {cmd.body.level} % over {cmd.body.fade_ms} ms")
        elif isinstance(cmd.body, Reboot):
            res = self._result(cmd.id, "ok", "done", f"{cmd.body.target} reboot (simulated)")
        elif isinstance(cmd.body, Ping):
            res = self._result(cmd.id, "ok", "done", "pong")
        else:
            res = self._result(cmd.id, "rejected", "unsupported",
                               f"{cmd.body.type}: not simulated by fleet-sim")
        self._reply.put_nowait(("cmd/result", res))

    def _result(self, cid: str | None, status: str, reason: str, detail: str
                ) -> dict[str, Any]:
        if status == "rejected":
            self.counts.commands_rejected += 1
        return Result.model_validate({**self._header(), "id": cid, "status": status,
                                      "reason": reason, "detail": detail}).payload()

    # ---- the pole's life ------------------------------------------------------------

    def _client(self, clean_start: bool) -> MqttSession:
        c = self.cfg
        return MqttSession(
            c.broker.host, c.broker.port, f"smartpole-{self.pole_id}",
            keepalive=c.keepalive_s, session_expiry_s=c.session_expiry_s,
            clean_start=clean_start,
            will=Will(f"{self.base}/state", self.state("offline", "connection_lost", ts=False)),
            username=c.username, password=c.password, tls=c.tls, on_message=self.on_message)

    async def connect(self, clean_start: bool) -> None:
        cl = self._client(clean_start)
        await cl.connect()
        self.client = cl
        # Subscribe first (a resumed session already has it): once a backend sees
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
        return Event(**self._header(), event=name, detail=detail).payload()

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

