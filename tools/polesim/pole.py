"""A whole simulated pole: firmware on the MicroPython unix port, a pty cable, the controller.

Used by `polectl sim` (`make run`, which adds polectl's live view) and by the HIL
harness. The controller runs
as its own process with a generated TOML config, exactly as on a pole.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from polesim.firmware import DEFAULT_BUILD, SimFirmware
from polesim.signing import KEYS, TestCityKey
from polesim.tomlwrite import render_toml
from polesim.wire import PtyWire

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_VIDEO = ROOT / "samples" / "pets09-s2l1-0-119.mp4"


DEMO_ZONE = [[300, 190], [560, 175], [640, 300], [600, 420], [420, 330], [300, 290]]


def plan_red_since(seconds_ago: float, red_s: float, green_s: float) -> dict[str, float]:
    """A fixed-time plan (UTC) whose current red phase began `seconds_ago`."""
    now = time.time()
    into_day = now % 86400
    return {"red_s": red_s, "green_s": green_s,
            "offset_s": (into_day - seconds_ago) % (red_s + green_s)}


def demo_crossing(audio_device: str = "null") -> dict[str, Any]:
    """Config for `make run`: the middle of the road in the sample clip is a carriageway
    zone; the pedestrian signal went red 3 s before start; warnings go to `audio_device`."""
    return {
        "zones": [{"name": "mid-road", "kind": "carriageway", "polygon": DEMO_ZONE}],
        "signal": {"source": "plan", "plan": plan_red_since(3.0, 40.0, 20.0)},
        "crossing": {"enabled": True, "grace_s": 1.0},
        "audio": {"device": audio_device, "cooldown_s": 3.0},
    }


class SimPole:
    def __init__(
        self,
        workdir: Path,
        broker_url: str,
        *,
        pole_id: str = "sim-pole-1",
        video: Path | None = None,
        overrides: dict[str, Any] | None = None,
        build_dir: Path = DEFAULT_BUILD,
        signed: bool = False,
    ) -> None:
        """`signed`: the pole requires commands signed by `city_key`, a test key made
        here, like a provisioned pole (`make run` and the HIL harness); False leaves it
        permissive, as a lab pole without a [commands] section (it warns at start and
        says command_signatures "off" in birth). A `commands` override wins."""
        self.workdir = workdir
        self.city_key = TestCityKey()
        self.signed = signed
        self.broker_url = broker_url
        self.pole_id = pole_id
        self.video = video
        self.overrides = overrides or {}
        self.build_dir = build_dir
        self.wire: PtyWire | None = None
        self.firmware: SimFirmware | None = None
        self.controller: subprocess.Popen[bytes] | None = None
        self.config_path = workdir / "pole.toml"
        self.controller_log = workdir / "controller.log"
        self._log_fh: IO[bytes] | None = None

    @property
    def link_port(self) -> str:
        assert self.wire is not None
        return self.wire.ctl_path

    def config(self) -> dict[str, Any]:
        sections: dict[str, Any] = {
            "pole": {"id": self.pole_id},
            "link": {"port": self.link_port},
            "mqtt": {"url": self.broker_url},
            "telemetry": {"interval_s": 1.0, "lamp_poll_s": 2.0},
            "queue": {"path": str(self.workdir / "queue.sqlite3")},
            "camera": ({"enabled": True, "source": f"file:{self.video}", "on_end": "exit"}
                       if self.video else {"enabled": False}),
        }
        if self.signed:
            KEYS[self.pole_id] = self.city_key  # hil_tests' Capture signs with it
            pub = self.city_key.write_public(self.workdir / "city-test-key.pub")
            sections["commands"] = {"public_key": str(pub), "require_signature": True}
        for sec, kv in self.overrides.items():
            if isinstance(kv, dict):
                sections.setdefault(sec, {}).update(kv)
            else:
                sections[sec] = kv  # e.g. the zones array
        return sections

    def start(self) -> SimPole:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.wire = PtyWire()
        self.firmware = SimFirmware(self.wire.fw_path, self.build_dir,
                                    log_path=self.workdir / "firmware.log")
        self.firmware.start()
        self.config_path.write_text(render_toml(self.config()))
        self.start_controller()
        return self

    def start_controller(self) -> None:
        self._log_fh = open(self.controller_log, "ab")  # noqa: SIM115 - lives with the process
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "edge_controller.main", "--config", str(self.config_path)],
            stdout=self._log_fh, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stop_controller(self, sig: int = signal.SIGTERM, within_s: float = 10.0) -> int | None:
        p = self.controller
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(within_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        return p.returncode

    def stop(self) -> None:
        self.stop_controller()
        if self.firmware is not None:
            self.firmware.stop()
        if self.wire is not None:
            self.wire.close()

    def controller_log_tail(self, n: int = 4000) -> str:
        try:
            return self.controller_log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


async def scenario(pole: SimPole, host: str, port: int) -> None:
    """A short evening on the simulated pole, so the live view has something to show:
    dusk falls, the city backend dims the lamp up, a technician opens the door."""
    import json

    import aiomqtt

    from edge_controller.clock import utc_iso

    fw = pole.firmware
    if fw is None:
        return
    topic = f"smartpole/v1/{pole.pole_id}/cmd"
    async with aiomqtt.Client(host, port) as backend:
        steps: list[tuple[float, str, dict[str, Any]]] = [
            (2.0, "panel", {"lux": 40.0}),
            (3.5, "panel", {"lux": 12.0}),
            (4.0, "cmd", {"type": "lamp.set", "level": 80, "fade_ms": 2000}),
            (6.0, "panel", {"door": 1}),
            (8.0, "panel", {"door": 0}),
            (9.0, "cmd", {"type": "lamp.set", "level": 50, "fade_ms": 1000}),
        ]
        t0 = time.monotonic()
        for i, (at, kind, what) in enumerate(steps):
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            if kind == "panel":
                await asyncio.to_thread(fw.panel.set, **what)
            else:
                cmd = pole.city_key.sign({"id": f"demo-{i}", "issued_at": utc_iso(),
                                          "body": what}, pole.pole_id)
                await backend.publish(topic, json.dumps(cmd), qos=1)
