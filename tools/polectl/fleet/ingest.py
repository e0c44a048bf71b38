"""The reference backend consumer (`polectl ingest`): workers of a shared-subscription
group, retained discovery, per-pole summaries, publish-to-consume latency, and commands
sent with an MQTT 5 message expiry whose results it matches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.table import Table

from edge_controller.api import Birth, Event, LampSet, Ping, Result, State, Telemetry
from polectl.apiread import model_for, read
from polectl.broker import BrokerAddr
from polectl.commands import Signer, command
from polectl.fleet.mqtt import MqttSession
from polectl.fleet.pole import DEFAULT_ROOT


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
        """One message as the API's model (a tolerant reader: unknown keys and topics
        ignored; not JSON, or not a v1 message of its kind, counts as malformed)."""
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
        model = model_for(kind)
        if model is None:
            return  # tolerant reader: a topic from a later minor version
        try:
            msg = read(model, json.loads(payload))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            msg = None
        if msg is None:
            self.malformed += 1
            return
        self._apply(self.pole(pid), kind, msg, now)

    def _apply(self, p: PoleSummary, kind: str, msg: BaseModel, now: float) -> None:
        if isinstance(msg, State):
            p.state, p.reason = msg.state, msg.reason
        elif isinstance(msg, Birth):
            p.boot_id, p.controller_version = msg.boot_id, msg.controller_version
            p.firmware_version = msg.firmware.version if msg.firmware else ""
        elif isinstance(msg, Telemetry | Event | Result) and self._first(p, kind, msg, now):
            self._record(p, msg)

    def _first(self, p: PoleSummary, kind: str, msg: Telemetry | Event | Result,
               now: float) -> bool:
        """Count a record once (QoS 1 may repeat it) with its publish-to-consume latency."""
        # API 1.2: (pole, seq) identifies a record; before it, (pole, kind, ts, event/id).
        tail = msg.event if isinstance(msg, Event) else (
            str(msg.id) if isinstance(msg, Result) else "")
        key = ((p.pole_id, "seq", str(msg.seq)) if msg.seq is not None else
               (p.pole_id, kind, msg.ts + tail))
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        self.unique[kind] += 1
        if msg.seq is not None:
            p.seq_count += 1
            p.max_seq = max(p.max_seq, msg.seq)
        sent = _ts_epoch(msg.ts)
        if sent is not None:
            lat = max(0.0, (now - sent) * 1000)
            self.latencies_ms.append(lat)
            p.max_latency_ms = max(p.max_latency_ms, lat)
        p.last_ts = msg.ts
        return True

    def _record(self, p: PoleSummary, msg: Telemetry | Event | Result) -> None:
        if isinstance(msg, Telemetry):
            p.telemetry += 1
            p.lamp = msg.lamp.level if msg.lamp else None
            p.lux = float(msg.sensors.lux) if msg.sensors and msg.sensors.lux is not None \
                else None
            p.door_open = msg.sensors.door_open if msg.sensors else None
            p.clock_synced = msg.clock.synced
        elif isinstance(msg, Event):
            p.events[msg.event] += 1
        else:
            p.results[msg.status] += 1
            t_sent = self.commands_sent.pop(str(msg.id), None)
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
    # The city's command key: commands are signed with it (and bound to their pole), as a
    # backend does for provisioned poles; None sends them unsigned.
    signer: Signer | None = None


async def run_ingest(cfg: IngestConfig, stop: asyncio.Event,
                     ready: Callable[[], None] | None = None) -> Ingest:
    """Consume the fleet until `stop`: `workers` members of the shared group (each its own
    connection and persistent session); worker 0 also follows state and birth."""
    state = Ingest(cfg.root)
    clients: list[MqttSession] = []
    shared = [(f"$share/{cfg.group}/{cfg.root}/+/{k}", 1)
              for k in ("telemetry", "events", "cmd/result")]
    for w in range(cfg.workers):
        cl = MqttSession(cfg.broker.host, cfg.broker.port, f"{cfg.client_id}-{w}",
                      keepalive=60, session_expiry_s=cfg.session_expiry_s, clean_start=False,
                      username=cfg.username, password=cfg.password, tls=cfg.tls,
                      on_message=lambda t, p: state.apply(t, p), receive_maximum=1000)
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
            online = [p for p, s in state.poles.items() if s.state == "online"]
            if cfg.command_rate > 0 and online:
                n += 1
                pid = rng.choice(online)
                cid = f"ingest-{n}"
                body: Ping | LampSet = (Ping(type="ping") if n % 2 else
                                        LampSet(type="lamp.set", level=rng.randrange(0, 101),
                                                fade_ms=1000))
                msg = command(cid, body, pid, cfg.command_expiry_s, cfg.signer)
                state.commands_sent[cid] = time.monotonic()
                # MQTT 5 message expiry: a pole that is away longer never gets it late.
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await clients[0].publish(f"{cfg.root}/{pid}/cmd", msg,
                                             message_expiry_s=cfg.command_expiry_s)
    finally:
        for cl in clients:
            await cl.disconnect()
    return state

