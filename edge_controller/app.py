"""The controller: wires the link, the pole state, the uplink and the camera under one supervisor.

Task names are frozen (docs/architecture.md): link, uplink, telemetry,
lamp_poll, camera. Later features add their own (detector, violations,
audio, visibility, dimming, peripherals).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from edge_controller.camera.source import Frame
from edge_controller.camera.task import CameraTask
from edge_controller.clock import clock_status, utc_iso
from edge_controller.config import Config, config_version
from edge_controller.crossing.service import CrossingService
from edge_controller.health import Health
from edge_controller.link.client import LinkClient
from edge_controller.link.session import LinkEvent
from edge_controller.peripherals import PeripheralHub
from edge_controller.pole_state import PoleState
from edge_controller.supervisor import Supervisor, TaskSpec
from edge_controller.uplink import commands, trust
from edge_controller.uplink.mqtt import Record, Uplink
from edge_controller.uplink.store import RecordStore
from edge_controller.uplink.topics import Topics
from edge_controller.version import __version__
from edge_controller.visibility.commands import DimmingSchedule, LampOverride
from edge_controller.visibility.service import DimmingService

log = logging.getLogger(__name__)

EXIT_RESTART = 75  # EX_TEMPFAIL: the service manager restarts us (reboot command)


class ProcessStats:
    """CPU and memory of this process, from os.times() and /proc."""

    def __init__(self) -> None:
        self._last_cpu = self._cpu()
        self._last_wall = time.monotonic()
        self.started = self._last_wall

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    def sample(self) -> dict[str, float]:
        cpu, wall = self._cpu(), time.monotonic()
        pct = 100.0 * (cpu - self._last_cpu) / max(wall - self._last_wall, 1e-6)
        self._last_cpu, self._last_wall = cpu, wall
        return {"uptime_s": round(wall - self.started, 3), "cpu_percent": round(pct, 2),
                "rss_mb": round(_rss_bytes() / 2**20, 2)}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Controller:
    def __init__(self, cfg: Config, config_path: str | Path | None = None) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.mqtt.topic_root, cfg.pole.id)
        self.boot_id = uuid.uuid4().hex
        self.started_at = utc_iso()
        self.config_version = config_version(config_path)
        self.state = PoleState()
        self.proc = ProcessStats()
        self.link = LinkClient(cfg.link, f"smartpole-controller {__version__}", self._on_link)
        q = cfg.queue
        store = RecordStore(q.path, q.max_records, int(q.max_mb * 2**20), q.max_age_h * 3600)
        self.uplink = Uplink(cfg.mqtt, self.topics, self._birth, self._on_command, store,
                             q.drain_rate_per_s)
        self.camera: CameraTask | None = None
        self.signal_rejected = 0
        self.replays = 0
        self._inflight: dict[str, asyncio.Event] = {}
        self.results = trust.ResultCache(store.db if q.path != ":memory:" else None,
                                         cfg.commands.replay_cache)
        self.city_key = (trust.load_public_key(cfg.commands.public_key)
                         if cfg.commands.public_key else None)
        specs = [
            TaskSpec("link", self.link.run, "always", probe=lambda: self.link.up),
            TaskSpec("uplink", self.uplink.run, "always", probe=lambda: self.uplink.connected),
            TaskSpec("telemetry", self._telemetry_loop, "always"),
            TaskSpec("lamp_poll", self._lamp_poll_loop, "always"),
        ]
        self.crossing: CrossingService | None = None
        if cfg.crossing.enabled:
            self.crossing = CrossingService(cfg, self.uplink.event, self._amp)
            cx = self.crossing
            specs += [
                TaskSpec("detector", cx.run_detector, "always"),
                TaskSpec("violations", cx.run_violations, "always"),
                TaskSpec("audio", cx.run_audio, "always"),
            ]
            if cfg.signal.source == "mqtt":
                topic = cfg.signal.mqtt_topic or f"{self.topics.base}/signal"
                self.uplink.subscribe(topic, self._on_signal_message)
        self.dimming: DimmingService | None = None
        if cfg.dimming.enabled or cfg.visibility.enabled:
            cxs = self.crossing
            self.dimming = DimmingService(
                cfg.visibility, cfg.dimming, cfg.pole, self._set_lamp, self.uplink.event,
                lux=self._lux,
                presence=(lambda: cxs.tracks_live > 0) if cxs is not None else None)
            dm = self.dimming
            if cfg.dimming.enabled:
                specs.append(TaskSpec("dimming", dm.run_dimming, "always",
                                      probe=lambda: dm.healthy_dimming))
            if cfg.visibility.enabled:
                specs.append(TaskSpec("visibility", dm.run_visibility, "on_failure",
                                      probe=lambda: dm.healthy_visibility))
        if cfg.camera.enabled:
            self.camera = CameraTask(
                cfg.camera, self.uplink.event, self._camera_ended, on_frame=self._on_frame)
            cam = self.camera
            specs.append(TaskSpec("camera", cam.run, "on_failure", probe=lambda: cam.healthy))
        self.peripherals: PeripheralHub | None = None
        if any(d.enabled for d in cfg.peripherals.devices):
            self.peripherals = PeripheralHub(cfg.peripherals, self._publish_periph,
                                             self.uplink.event)
            ph = self.peripherals
            specs.append(TaskSpec("peripherals", ph.run, "always", probe=lambda: ph.healthy))
        self.health = Health(lambda: self.supervisor.report())
        specs.append(TaskSpec("health", self.health.run, "always"))
        self.supervisor = Supervisor(
            specs,
            restart_min_s=cfg.supervisor.restart_min_s,
            restart_max_s=cfg.supervisor.restart_max_s,
            max_restarts=cfg.supervisor.max_restarts,
            restart_window_s=cfg.supervisor.restart_window_s,
            on_failure=lambda name, err: self.uplink.event("task_failed",
                                                           {"task": name, "error": err}),
        )
        self.supervisor.set_shutdown_hook(self._shutdown)

    async def run(self) -> int:
        return await self.supervisor.run()

    # ---- link -> state -> events ------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        # Fan out every camera frame; each consumer keeps only the newest it can use.
        if self.crossing is not None:
            self.crossing.submit(frame)
        if self.dimming is not None and self.cfg.visibility.enabled:
            self.dimming.submit(frame)

    def _lux(self) -> float | None:
        lux = (self.state.sensors or {}).get("lux")
        return float(lux) if isinstance(lux, (int, float)) and self.link.up else None

    async def _set_lamp(self, level: int, fade_ms: int) -> bool:
        return (await self.link.command("lamp_set", (level, fade_ms))).ok

    def _on_link(self, ev: LinkEvent) -> None:
        if self.dimming is not None:
            self.dimming.on_link_event(ev)
        for name, detail in self.state.apply(ev):
            self.uplink.event(name, detail)
        if (self.crossing is not None and self.cfg.signal.source == "din"
                and self.state.digital_inputs is not None and ev.frame is not None
                and ev.frame.name == "digital_inputs"):
            level = (self.state.digital_inputs >> self.cfg.signal.din_bit) & 1
            self.crossing.push_signal(
                "red" if level == self.cfg.signal.din_red_level else "green", time.time())
        if ev.kind == "incompatible":
            log.error("link: %s; refusing to drive this board (update the firmware or "
                      "the controller)", ev.detail)
        if ev.kind == "frame" and ev.frame is not None and ev.frame.name == "board_id":
            self.uplink.refresh_birth()  # hello + board id complete the firmware identity

    def _on_signal_message(self, payload: bytes) -> None:
        """External signal feed: 'red' / 'green', or {"state": "red"}."""
        text = payload.decode(errors="replace").strip()
        with contextlib.suppress(ValueError):
            doc = json.loads(text)
            if isinstance(doc, dict):
                text = str(doc.get("state", ""))
            elif isinstance(doc, str):
                text = doc
        if text in ("red", "green") and self.crossing is not None:
            self.crossing.push_signal(text, time.time())  # type: ignore[arg-type]
        else:
            self.signal_rejected += 1
            log.warning("signal feed: ignored %r (want red or green)", text[:40])

    def _publish_periph(self, device_id: str, payload: dict[str, Any], retain: bool) -> None:
        self.uplink.publish(Record(self.topics.periph_status(device_id),
                                   self.uplink.stamp(payload), retain=retain))

    async def _amp(self, on: bool) -> bool:
        out = await self.link.command("amp_enable", (1 if on else 0,))
        return out.ok

    # ---- reports --------------------------------------------------------------

    def _birth(self) -> dict[str, Any]:
        fw = self.link.session.firmware
        caps = fw.capabilities() if fw.version else []
        if self.camera is not None:
            caps.append("camera")
        if self.uplink.protocol == "5":
            caps.append("mqtt5")
        return {
            "boot_id": self.boot_id,
            "started_at": self.started_at,
            "controller_version": __version__,
            "firmware": ({"version": fw.version, "board_id": fw.board_id,
                          "protocol": fw.protocol} if fw.version else None),
            "config_version": self.config_version,
            "models": {},
            "capabilities": caps,
        }

    def telemetry(self) -> dict[str, Any]:
        s = self.link.session
        return {
            "clock": clock_status(),
            "lamp": self.state.lamp,
            "sensors": self.state.sensors,
            "digital_inputs": self.state.digital_inputs,
            "link": {"up": s.up, "port": self.cfg.link.port,
                     "rtt_ms": None if s.last_rtt_s is None else round(s.last_rtt_s * 1000, 3),
                     **s.link_counters(), "firmware_stats": self.state.firmware_stats},
            "process": {**self.proc.sample(), "tasks": self.supervisor.report()},
            "camera": self.camera.stats() if self.camera is not None else None,
            "crossing": self.crossing.telemetry() if self.crossing is not None else None,
            **(self.dimming.telemetry() if self.dimming is not None
               else {"dimming": None, "visibility": None}),
            "mqtt": {"protocol": self.uplink.protocol, "reconnects": self.uplink.reconnects,
                     "commands_received": self.uplink.commands_received,
                     "commands_rejected": self.uplink.commands_rejected,
                     "queued": self.uplink.queued, "dropped": self.uplink.dropped,
                     "refused": self.uplink.refused},
        }

    async def _telemetry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.telemetry.interval_s)
            self.uplink.publish(Record(self.topics.telemetry, self.uplink.stamp(self.telemetry())))

    async def _lamp_poll_loop(self) -> None:
        # The firmware reports lamp changes itself; a slow poll repairs a lost report.
        while True:
            await asyncio.sleep(self.cfg.telemetry.lamp_poll_s)
            if self.link.up:
                await self.link.request("lamp_get")

    # ---- commands -------------------------------------------------------------

    def _result(self, cid: str | None, status: str, reason: str, detail: str) -> None:
        if status != "ok":
            self.uplink.commands_rejected += status == "rejected"
        result = {"id": cid, "status": status, "reason": reason, "detail": detail}
        self.uplink.publish(Record(self.topics.result, self.uplink.stamp(result)))
        if cid is not None and reason not in ("invalid_json", "too_large", "schema"):
            self.results.put(cid, result, time.time())

    async def _on_command(self, payload: bytes) -> None:
        now = time.time()
        cmd = commands.parse(payload, now)
        if isinstance(cmd, commands.Rejection):
            log.warning("command rejected (%s): %s", cmd.reason, cmd.detail)
            self._result(cmd.id, "rejected", cmd.reason, cmd.detail)
            return
        if cmd.id in self._inflight:  # the same id arrived twice at once: answer it once
            await self._inflight[cmd.id].wait()
        cached = self.results.get(cmd.id)
        if cached is not None:
            self.replays += 1
            log.info("command %s replayed: answering from the result cache", cmd.id)
            self.uplink.publish(Record(self.topics.result, self.uplink.stamp(dict(cached))))
            return
        why = self._untrusted(payload, cmd, now)
        if why is not None:
            log.warning("command %s rejected: %s", cmd.id, why[1])
            self._result(cmd.id, "rejected", *why)
            return
        done = self._inflight[cmd.id] = asyncio.Event()
        try:
            await self._execute(cmd)
        finally:
            done.set()
            del self._inflight[cmd.id]

    def _untrusted(self, payload: bytes, cmd: commands.Envelope,
                   now: float) -> tuple[str, str] | None:
        c = self.cfg.commands
        issued = commands.parse_ts(cmd.issued_at)
        if issued - now > c.max_clock_skew_s:
            return "not_yet_valid", f"issued_at is {issued - now:.0f} s in the future"
        if self.city_key is None:
            return None
        if cmd.sig is None and not c.require_signature:
            return None
        problem = trust.verify(json.loads(payload), self.city_key)
        if problem is not None:
            return "signature", f"{problem} (commands must be signed with the city's key)"
        return None

    async def _execute(self, cmd: commands.Envelope) -> None:
        body = cmd.body
        if isinstance(body, commands.Ping):
            self._result(cmd.id, "ok", "done", "pong")
        elif isinstance(body, commands.LampSet):
            out = await self.link.command("lamp_set", (body.level, body.fade_ms))
            self._link_result(cmd.id, out.ok, out.reason,
                              f"lamp to {body.level} % over {body.fade_ms} ms")
        elif isinstance(body, LampOverride | DimmingSchedule):
            if self.dimming is None:
                self._result(cmd.id, "rejected", "unsupported", "dimming is not enabled")
            else:
                res = (self.dimming.apply_override(body) if isinstance(body, LampOverride)
                       else self.dimming.apply_schedule(body))
                self._result(cmd.id, res.status, res.reason, res.detail)
        elif isinstance(body, commands.ScreenText):
            if self.peripherals is None:
                self._result(cmd.id, "rejected", "unsupported", "no LED screen configured")
            else:
                o = await self.peripherals.show_text(body.device_id, body.text, body.seconds)
                self._result(cmd.id, o.status, o.reason, o.detail)
        elif isinstance(body, commands.Reboot):
            if body.target == "controller":
                self._result(cmd.id, "ok", "done", "controller restarting")
                self.supervisor.stop(EXIT_RESTART)
            else:
                out = await self.link.command("reboot", (200,))
                self._link_result(cmd.id, out.ok, out.reason, "firmware reboot in 200 ms")

    def _link_result(self, cid: str, ok: bool, reason: str, what: str) -> None:
        if ok:
            self._result(cid, "ok", "done", what)
        elif reason in ("bad_value", "unsupported", "malformed", "state", "busy", "version"):
            self._result(cid, "failed", "firmware_nak", f"firmware refused: {reason}")
        else:
            self._result(cid, "failed", reason, f"{what}: {reason.replace('_', ' ')}")

    # ---- lifecycle ------------------------------------------------------------

    def _camera_ended(self) -> None:
        self.supervisor.stop(0)

    async def _shutdown(self) -> None:
        # Last telemetry, then offline (retained) and only then the disconnect.
        self.uplink.publish(Record(self.topics.telemetry, self.uplink.stamp(self.telemetry())))
        await self.uplink.shutdown("shutdown")
