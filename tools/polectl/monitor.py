"""A live terminal view of what poles publish, straight from MQTT."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edge_controller.api import TOPIC_ROOT, Birth, Event, PeriphStatus, Result, State, Telemetry
from polectl.apiread import model_for, read


@dataclass
class PoleView:
    pole_id: str
    state: str = "?"
    birth: Birth | None = None
    telemetry: Telemetry | None = None
    messages: int = 0


@dataclass
class FleetView:
    root: str
    poles: dict[str, PoleView] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    periph: dict[tuple[str, str], PeriphStatus] = field(default_factory=dict)
    total: int = 0

    def apply(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.root + "/"):
            # A backend profile's message (polectl sim --profile): shown as it went out.
            self.total += 1
            text = payload[:90].decode("utf-8", "replace")
            self.log.append(f"{topic}: {text}" + ("..." if len(payload) > 90 else ""))
            return
        parts = topic[len(self.root) + 1:].split("/")
        if len(parts) < 2:
            return
        pole, kind = parts[0], "/".join(parts[1:])
        v = self.poles.setdefault(pole, PoleView(pole))
        v.messages += 1
        self.total += 1
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.log.append(f"{pole} {kind}: (not JSON, {len(payload)} bytes)")
            return
        if kind == "cmd":  # a backend's command: shown as sent, valid or not
            if isinstance(data, dict):
                self.log.append(f"{pole} command {data.get('id')} "
                                f"{json.dumps(data.get('body'))}")
            return
        model = model_for(kind)
        msg = read(model, data) if model is not None else None
        if msg is None:
            if model is not None:
                self.log.append(f"{pole} {kind}: not a v1 {kind} message")
            return
        self._show(v, msg)

    def _show(self, v: PoleView, msg: object) -> None:
        pole = v.pole_id
        if isinstance(msg, PeriphStatus):
            self.periph[(pole, msg.device_id)] = msg
        elif isinstance(msg, State):
            v.state = msg.state
            self.log.append(f"{pole} state {v.state} ({msg.reason})")
        elif isinstance(msg, Birth):
            v.birth = msg
        elif isinstance(msg, Telemetry):
            v.telemetry = msg
        elif isinstance(msg, Event):
            self.log.append(f"{pole} event {msg.event} {json.dumps(msg.detail)}")
        elif isinstance(msg, Result):
            self.log.append(f"{pole} result {msg.id}: {msg.status} ({msg.reason})")

    def render(self) -> Group:
        t = Table(title=f"smartpole - {len(self.poles)} pole(s), {self.total} messages",
                  expand=True)
        for col in ("pole", "state", "firmware", "lamp %", "lux", "door", "mains", "link",
                    "rtt ms", "camera", "signal", "tracks", "violations", "cpu %", "rss MB"):
            t.add_column(col)
        for v in sorted(self.poles.values(), key=lambda p: p.pole_id):
            t.add_row(*_row(v))
        parts: list[Any] = [t]
        if self.periph:
            pt = Table(title="peripherals", expand=True)
            for col in ("pole", "device", "kind", "health", "state", "power W", "energy Wh",
                        "screen"):
                pt.add_column(col)
            for (pole, dev), m in sorted(self.periph.items()):
                ch, sc = m.charger, m.screen
                pt.add_row(pole, dev, m.kind,
                           Text(m.health,
                                style={"ok": "green", "lost": "red"}.get(m.health, "yellow")),
                           ch.connector_state if ch else "-", _fmt(ch and ch.power_w),
                           _fmt(ch and ch.session_energy_wh),
                           (f"{_shown(m)}{'on' if sc.on else 'off'} "
                            f"{sc.brightness}% {sc.content_id or ''}") if sc else "-")
            parts.append(pt)
        parts.append(Text("\n".join(self.log) or "(waiting for messages)"))
        return Group(*parts)


def _row(v: PoleView) -> list[str | Text]:
    """One pole's row of the table, from its last birth and telemetry."""
    tel = v.telemetry
    lamp, sens, link = (tel.lamp, tel.sensors, tel.link) if tel else (None, None, None)
    cam = (tel.camera if tel else None) or {}
    cx = (tel.crossing if tel else None) or {}
    sig = (cx.get("signal") or {}).get("state", "-")
    viol = sum(z.get("violations", 0) for z in (cx.get("zones") or {}).values())
    proc = tel.process if tel else None
    fw = v.birth.firmware.version if v.birth and v.birth.firmware else "-"
    lamp_s = "-" if lamp is None else f"{lamp.level}" + (" FS" if lamp.failsafe else "")
    return [
        v.pole_id, Text(v.state, style="green" if v.state == "online" else "red"), fw,
        lamp_s, _fmt(sens and sens.lux), _yn(sens and sens.door_open, "open", "shut"),
        _yn(sens and sens.mains, "on", "OFF"), _yn(link and link.up, "up", "DOWN"),
        _fmt(link and link.rtt_ms),
        f"{cam.get('frames', '-')} @ {_fmt(cam.get('fps'))}" if cam else "-",
        Text(sig, style={"red": "red", "green": "green"}.get(sig, "")),
        str(cx.get("tracks", "-")), str(viol) if cx else "-",
        _fmt(proc and proc.cpu_percent), _fmt(proc and proc.rss_mb),
    ]


def _shown(m: PeriphStatus) -> str:
    """What the pole put on a screen (API 1.7 `shown`): source and the first line."""
    sh = m.shown
    if sh is None:
        return ""
    first = sh.text.split("\n")[0][:28]
    return f"{sh.source}" + (f": {first}" if first else "") + " | "


def _fmt(v: object) -> str:
    return f"{v:.1f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _yn(v: object, yes: str, no: str) -> str:
    return "-" if v is None else (yes if v else no)


async def monitor(
    host: str,
    port: int,
    root: str = TOPIC_ROOT,
    pole: str = "+",
    stop: asyncio.Event | None = None,
    live: bool = True,
    extra_topics: tuple[str, ...] = (),
) -> FleetView:
    """Show the fleet until `stop` is set (or forever); returns the final view.
    `extra_topics`: also show what arrives there (a backend profile's topics)."""
    view = FleetView(root)
    stop = stop or asyncio.Event()
    async with aiomqtt.Client(host, port, identifier=None) as client:
        await client.subscribe(f"{root}/{pole}/#", qos=1)
        for t in extra_topics:
            await client.subscribe(t, qos=1)

        async def consume() -> None:
            async for msg in client.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                view.apply(str(msg.topic), payload)
                if disp is not None:
                    disp.update(view.render())

        disp: Live | None = None
        if live:
            disp = Live(view.render(), refresh_per_second=4, transient=False)
            disp.start()
        task = asyncio.create_task(consume())
        try:
            await stop.wait()
        finally:
            task.cancel()
            if disp is not None:
                disp.update(view.render())
                disp.stop()
    return view
