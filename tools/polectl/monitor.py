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


@dataclass
class PoleView:
    pole_id: str
    state: str = "?"
    birth: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    messages: int = 0


@dataclass
class FleetView:
    root: str
    poles: dict[str, PoleView] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    periph: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
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
            msg = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.log.append(f"{pole} {kind}: (not JSON, {len(payload)} bytes)")
            return
        if not isinstance(msg, dict):
            return
        if kind.startswith("periph/") and kind.endswith("/status"):
            self.periph[(pole, kind.split("/")[1])] = msg
        elif kind == "state":
            v.state = str(msg.get("state", "?"))
            self.log.append(f"{pole} state {v.state} ({msg.get('reason', '')})")
        elif kind == "birth":
            v.birth = msg
        elif kind == "telemetry":
            v.telemetry = msg
        elif kind == "events":
            self.log.append(f"{pole} event {msg.get('event')} {json.dumps(msg.get('detail'))}")
        elif kind == "cmd/result":
            self.log.append(f"{pole} result {msg.get('id')}: {msg.get('status')} "
                            f"({msg.get('reason')})")
        elif kind == "cmd":
            self.log.append(f"{pole} command {msg.get('id')} {json.dumps(msg.get('body'))}")

    def render(self) -> Group:
        t = Table(title=f"smartpole - {len(self.poles)} pole(s), {self.total} messages",
                  expand=True)
        for col in ("pole", "state", "firmware", "lamp %", "lux", "door", "mains", "link",
                    "rtt ms", "camera", "signal", "tracks", "violations", "cpu %", "rss MB"):
            t.add_column(col)
        for v in sorted(self.poles.values(), key=lambda p: p.pole_id):
            tel = v.telemetry
            lamp = tel.get("lamp") or {}
            sens = tel.get("sensors") or {}
            link = tel.get("link") or {}
            cam = tel.get("camera") or {}
            cx = tel.get("crossing") or {}
            sig = (cx.get("signal") or {}).get("state", "-")
            viol = sum(z.get("violations", 0) for z in (cx.get("zones") or {}).values())
            proc = tel.get("process") or {}
            fw = (v.birth.get("firmware") or {}).get("version", "-")
            state = Text(v.state, style="green" if v.state == "online" else "red")
            lamp_s = f"{lamp.get('level', '-')}" + (" FS" if lamp.get("failsafe") else "")
            t.add_row(
                v.pole_id, state, str(fw), lamp_s, _fmt(sens.get("lux")),
                _yn(sens.get("door_open"), "open", "shut"), _yn(sens.get("mains"), "on", "OFF"),
                _yn(link.get("up"), "up", "DOWN"), _fmt(link.get("rtt_ms")),
                f"{cam.get('frames', '-')} @ {_fmt(cam.get('fps'))}" if cam else "-",
                Text(sig, style={"red": "red", "green": "green"}.get(sig, "")),
                str(cx.get("tracks", "-")), str(viol) if cx else "-",
                _fmt(proc.get("cpu_percent")), _fmt(proc.get("rss_mb")),
            )
        parts: list[Any] = [t]
        if self.periph:
            pt = Table(title="peripherals", expand=True)
            for col in ("pole", "device", "kind", "health", "state", "power W", "energy Wh",
                        "screen"):
                pt.add_column(col)
            for (pole, dev), m in sorted(self.periph.items()):
                ch = m.get("charger") or {}
                sc = m.get("screen") or {}
                health = str(m.get("health", "?"))
                pt.add_row(pole, dev, str(m.get("kind", "")),
                           Text(health, style={"ok": "green", "lost": "red"}.get(health, "yellow")),
                           str(ch.get("connector_state", "-")), _fmt(ch.get("power_w")),
                           _fmt(ch.get("session_energy_wh")),
                           (f"{_shown(m.get('shown'))}{'on' if sc.get('on') else 'off'} "
                            f"{sc.get('brightness', '')}% {sc.get('content_id', '')}")
                           if sc else "-")
            parts.append(pt)
        parts.append(Text("\n".join(self.log) or "(waiting for messages)"))
        return Group(*parts)


def _shown(sh: object) -> str:
    """What the pole put on a screen (API 1.7 `shown`): source and the first line."""
    if not isinstance(sh, dict) or not sh.get("source"):
        return ""
    first = str(sh.get("text") or "").split("\n")[0][:28]
    return f"{sh['source']}" + (f": {first}" if first else "") + " | "


def _fmt(v: object) -> str:
    return f"{v:.1f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _yn(v: object, yes: str, no: str) -> str:
    return "-" if v is None else (yes if v else no)


async def monitor(
    host: str,
    port: int,
    root: str = "smartpole/v1",
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
