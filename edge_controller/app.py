"""The controller: builds the pole's parts, connects them and hands the tasks to one supervisor.

Core tasks (names frozen in docs/architecture.md): link, uplink, telemetry,
lamp_poll, health. Features add theirs when configured: detector, violations,
audio (crossing), dimming, visibility, camera, peripherals. Commands go to the
`CommandDispatcher`, where each part registers its own; telemetry is assembled
by the `TelemetryBuilder` from what each part contributes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_controller import pole_commands
from edge_controller.api.messages import Result
from edge_controller.camera.source import Frame
from edge_controller.camera.task import CameraTask
from edge_controller.clock import clock_status
from edge_controller.config import Config, config_version
from edge_controller.crossing.service import CrossingService
from edge_controller.health import Health
from edge_controller.link.client import LinkClient
from edge_controller.link.session import LinkEvent, as_int
from edge_controller.peripherals import PeripheralHub
from edge_controller.peripherals.hub import register_commands as register_screen
from edge_controller.peripherals.screen_service import ScreenService
from edge_controller.pole_state import PoleState
from edge_controller.profiles import registry as profile_registry
from edge_controller.profiles.registry import ProfileContext
from edge_controller.profiles.runner import ProfileRunner
from edge_controller.reports import CORE_SECTIONS, BirthBuilder, core_telemetry
from edge_controller.supervisor import Supervisor, TaskSpec
from edge_controller.uplink.dispatcher import CommandDispatcher
from edge_controller.uplink.mqtt import Record, Uplink
from edge_controller.uplink.store import RecordStore
from edge_controller.uplink.telemetry import TelemetryBuilder
from edge_controller.uplink.topics import Topics
from edge_controller.uplink.trust import ResultCache, TrustPolicy, load_public_key
from edge_controller.version import __version__
from edge_controller.visibility import commands as dimming_commands
from edge_controller.visibility.service import DimmingService, band_distances_for

log = logging.getLogger(__name__)

EXIT_RESTART = pole_commands.EXIT_RESTART


class Controller:
    def __init__(self, cfg: Config, config_path: str | Path | None = None) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.mqtt.topic_root, cfg.pole.id)
        self.state = PoleState()
        self._link_listeners: list[Callable[[LinkEvent], None]] = [self._pole_state]
        self._frame_listeners: list[Callable[[Frame], None]] = []
        # Parts that act on the pole's own events (the screen on a violation).
        self._event_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.link = LinkClient(cfg.link, f"smartpole-controller {__version__}", self._on_link)
        q, c = cfg.queue, cfg.commands
        store = RecordStore(q.path, q.max_records, int(q.max_mb * 2**20), q.max_age_h * 3600)
        self.uplink = Uplink(cfg.mqtt, self.topics, lambda: self.birth(),
                             lambda payload: self.dispatcher.handle(payload), store,
                             q.drain_rate_per_s,
                             native=profile_registry.NATIVE in cfg.mqtt.profiles)
        policy = TrustPolicy(load_public_key(c.public_key) if c.public_key else None,
                             c.require_signature, c.max_clock_skew_s, c.max_lifetime_s,
                             cfg.pole.id)
        if policy.mode != "required":
            log.warning("!!! COMMANDS ARE NOT AUTHENTICATED: this pole runs unsigned commands "
                        "from anyone who can publish to %s (no [commands] require_signature; "
                        "birth says command_signatures=%s). Fine for a lab or the simulator; "
                        "a street pole needs `polectl provision` or docs/security.md, "
                        "'Upgrading a pole' !!!", self.topics.command, policy.mode)
        self.dispatcher = CommandDispatcher(
            policy, ResultCache(None if q.path == ":memory:" else q.path, c.replay_cache),
            self._send_result, clock_synced=lambda: bool(clock_status()["synced"]))
        self.birth = BirthBuilder(self.link, self.uplink, self.dispatcher,
                                  config_version(config_path))
        self.telemetry_builder = TelemetryBuilder()
        self.telemetry_builder.contribute(CORE_SECTIONS, core_telemetry(
            self.link, cfg.link.port, self.state, self.uplink, self.dispatcher,
            lambda: self.supervisor))
        pole_commands.register(self.dispatcher, self.link.command, lambda code: self.stop(code))
        specs = [
            TaskSpec("link", self.link.run, "always", probe=lambda: self.link.up),
            TaskSpec("uplink", self.uplink.run, "always", probe=lambda: self.uplink.connected),
            TaskSpec("telemetry", self._telemetry_loop, "always"),
            TaskSpec("lamp_poll", self._lamp_poll_loop, "always"),
        ]
        self.crossing = self._add_crossing(specs)
        self.dimming = self._add_dimming(specs)
        # Dimming sees a link event before the pole state publishes what it caused.
        self._link_listeners[:0] = [self.dimming.on_link_event] if self.dimming else []
        self.camera = self._add_camera(specs)
        self.peripherals = self._add_peripherals(specs)
        self.profiles = self._add_profiles(specs)
        self.health = Health(lambda: self.supervisor.report())
        specs.append(TaskSpec("health", self.health.run, "always"))
        s = cfg.supervisor
        self.supervisor = Supervisor(
            specs, restart_min_s=s.restart_min_s, restart_max_s=s.restart_max_s,
            max_restarts=s.max_restarts, restart_window_s=s.restart_window_s,
            on_failure=lambda name, err: self.uplink.event("task_failed",
                                                           {"task": name, "error": err}))
        self.supervisor.set_shutdown_hook(self._shutdown)

    async def run(self) -> int:
        return await self.supervisor.run()

    def stop(self, exit_code: int = 0) -> None:
        self.supervisor.stop(exit_code)

    # ---- features -------------------------------------------------------------------

    def _add_dimming(self, specs: list[TaskSpec]) -> DimmingService | None:
        cfg = self.cfg
        dm = None
        if cfg.dimming.enabled or cfg.visibility.enabled:
            dm = DimmingService(
                cfg.visibility, cfg.dimming, cfg.pole, self._set_lamp, self.uplink.event,
                lux=self._lux, presence=lambda: self.crossing is not None
                and self.crossing.tracks_live > 0)
            self.birth.extra_caps.append("dimming")
            if cfg.visibility.enabled:
                self._frame_listeners.append(dm.submit)
            if cfg.dimming.enabled:
                specs.append(TaskSpec("dimming", dm.run_dimming, "always",
                                      probe=lambda: dm.healthy_dimming))
            if cfg.visibility.enabled:
                specs.append(TaskSpec("visibility", dm.run_visibility, "on_failure",
                                      probe=lambda: dm.healthy_visibility))
        dimming_commands.register(self.dispatcher, dm)
        self.telemetry_builder.contribute(
            ("dimming", "visibility"),
            dm.telemetry if dm is not None else lambda: {"dimming": None, "visibility": None})
        return dm

    def _add_crossing(self, specs: list[TaskSpec]) -> CrossingService | None:
        if not self.cfg.crossing.enabled:
            return None
        # The detector is fed the dimming task's regime and the visibility task's MOR, and
        # the calibration's distances for its fog model (issue 15).
        cx = CrossingService(self.cfg, self._event, self._amp, light=self._light,
                             distances=band_distances_for(self.cfg.visibility.calibration,
                                                          self.cfg.detector.enhance.bands))
        specs += [TaskSpec("detector", cx.run_detector, "always"),
                  TaskSpec("violations", cx.run_violations, "always"),
                  TaskSpec("audio", cx.run_audio, "always")]
        self._frame_listeners.append(cx.submit)
        self.telemetry_builder.contribute(("crossing",), lambda: {"crossing": cx.telemetry()})
        sig = self.cfg.signal
        if sig.source == "mqtt":
            self.uplink.subscribe(sig.mqtt_topic or f"{self.topics.base}/signal",
                                  cx.on_signal_feed)
        elif sig.source == "din":
            def din(ev: LinkEvent) -> None:
                if ev.frame is not None and ev.frame.name == "digital_inputs":
                    cx.on_digital_inputs(as_int(ev.fields["levels"]))
            self._link_listeners.append(din)
        return cx

    def _add_camera(self, specs: list[TaskSpec]) -> CameraTask | None:
        cam = None
        if self.cfg.camera.enabled:
            cam = CameraTask(self.cfg.camera, self.uplink.event, lambda: self.stop(0),
                             on_frame=self._on_frame)
            specs.append(TaskSpec("camera", cam.run, "on_failure", probe=lambda: cam.healthy))
            self.birth.camera = True
        self.telemetry_builder.contribute(
            ("camera",), lambda: {"camera": cam.stats() if cam is not None else None})
        return cam

    def _add_peripherals(self, specs: list[TaskSpec]) -> PeripheralHub | None:
        ph = None
        devices = [d for d in self.cfg.peripherals.devices if d.enabled]
        if devices:
            ph = PeripheralHub(self.cfg.peripherals, self._publish_periph, self.uplink.event)
            specs.append(TaskSpec("peripherals", ph.run, "always", probe=lambda: ph.healthy))
            self.birth.extra_caps.append("peripherals")
            if any(d.kind == "led_screen" for d in devices):
                self.birth.extra_caps.append("screen")
        sw = self.cfg.screen_warnings
        # Disabled with no idle text: screen.text goes straight to the screen, as before 1.7.
        self.screen: ScreenService | None = None
        if ph is not None and (sw.enabled or sw.idle_text):
            self.screen = ScreenService.create(sw, ph, self.cfg.pole.timezone,
                                               self.uplink.event,
                                               visibility=self._visibility_band)
        if self.screen is not None:
            self._event_listeners.append(self.screen.on_event)
        register_screen(self.dispatcher, ph, self.screen)
        return ph

    def _add_profiles(self, specs: list[TaskSpec]) -> list[ProfileRunner]:
        """A runner per backend profile besides native, each with its own queue file."""
        cfg, q = self.cfg, self.cfg.queue
        runners = []
        for name in cfg.mqtt.profiles:
            if name == profile_registry.NATIVE:
                continue
            spec = profile_registry.spec(name)
            settings = getattr(cfg.mqtt, name)
            path = q.path if q.path == ":memory:" else \
                str(Path(q.path).with_suffix(f".{name}{Path(q.path).suffix}"))
            runner = ProfileRunner(
                spec.create(ProfileContext(cfg.pole.id, self.topics), settings), settings,
                self.uplink, self.dispatcher,
                RecordStore(path, q.max_records, int(q.max_mb * 2**20), q.max_age_h * 3600),
                cfg.mqtt.reconnect_min_s, cfg.mqtt.reconnect_max_s)
            specs.append(TaskSpec(f"profile_{name}", runner.run, "always",
                                  probe=runner.is_connected))
            runners.append(runner)
        return runners

    # ---- connections ------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        # Fan out every camera frame; each consumer keeps only the newest it can use.
        for listener in self._frame_listeners:
            listener(frame)

    def _event(self, name: str, detail: dict[str, Any]) -> None:
        # Upstream first: the event is the record; then the parts that act on it.
        self.uplink.event(name, detail)
        for listener in self._event_listeners:
            try:
                listener(name, detail)
            except Exception:
                log.exception("event listener failed on %s", name)

    def _light(self) -> tuple[str | None, float | None, float | None]:
        dm = getattr(self, "dimming", None)  # built after the crossing service
        return dm.light(time.time()) if dm is not None else (None, None, None)

    def _visibility_band(self) -> tuple[str, float] | None:
        dm = self.dimming
        rd = dm.current_reading(time.time()) if dm is not None else None
        return None if rd is None else (rd.band, rd.confidence)

    def _on_link(self, ev: LinkEvent) -> None:
        for listener in self._link_listeners:
            listener(ev)

    def _pole_state(self, ev: LinkEvent) -> None:
        for name, detail in self.state.apply(ev):
            self.uplink.event(name, detail)
        if ev.kind == "incompatible":
            log.error("link: %s; refusing to drive this board (update the firmware or "
                      "the controller)", ev.detail)
        if ev.kind == "frame" and ev.frame is not None and ev.frame.name == "board_id":
            self.uplink.refresh_birth()  # hello + board id complete the firmware identity

    def _lux(self) -> float | None:
        lux = (self.state.sensors or {}).get("lux")
        return float(lux) if isinstance(lux, (int, float)) and self.link.up else None

    async def _set_lamp(self, level: int, fade_ms: int) -> bool:
        return (await self.link.command("lamp_set", (level, fade_ms))).ok

    async def _amp(self, on: bool) -> bool:
        return (await self.link.command("amp_enable", (1 if on else 0,))).ok

    def _publish_periph(self, device_id: str, payload: dict[str, Any], retain: bool) -> None:
        self.uplink.publish(Record(self.topics.periph_status(device_id),
                                   self.uplink.stamp(payload), retain=retain))

    def _send_result(self, body: dict[str, Any]) -> None:
        self.uplink.send(self.topics.result, Result(**self.uplink.header(), **body))

    # ---- reports ----------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        return self.telemetry_builder.build(**self.uplink.header()).payload()

    async def _telemetry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.telemetry.interval_s)
            self.uplink.publish(Record(self.topics.telemetry, self.telemetry()))

    async def _lamp_poll_loop(self) -> None:
        # The firmware reports lamp changes itself; a slow poll repairs a lost report.
        while True:
            await asyncio.sleep(self.cfg.telemetry.lamp_poll_s)
            if self.link.up:
                await self.link.request("lamp_get")

    async def _shutdown(self) -> None:
        # Last telemetry, then offline (retained) and only then the disconnect.
        self.uplink.publish(Record(self.topics.telemetry, self.telemetry()))
        await asyncio.gather(*(r.shutdown() for r in self.profiles))
        await self.uplink.shutdown("shutdown")
