"""The commissioning checklist: each check looks at what the pole publishes (and, for the
snapshot, at its camera from here) and says pass, warn, fail or skip, with a fix."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiomqtt

from edge_controller.api import Birth, LampSet, Ping, State, Telemetry
from edge_controller.config import Config
from edge_controller.link.codec import PROTO_MAJOR as LINK_PROTOCOL_MAJOR
from edge_controller.tlsctx import client_context
from edge_controller.version import __version__
from polectl.broker import BrokerAddr
from polectl.commission.probe import CommissionError, PoleLink, load_signer
from polectl.snapshot import Snapshot, grab_frame, make_snapshot

Status = Literal["pass", "warn", "fail", "skip"]
DEFAULT_SWEEP = (100, 50, 10, 0)
# Plausible ranges for a street pole: outside them a sensor is miswired or broken.
LUX_RANGE = (0.0, 150_000.0)
TEMP_RANGE = (-40.0, 85.0)
TILT_WARN_DEG = 3.0


@dataclass
class Check:
    name: str
    title: str
    status: Status = "skip"
    summary: str = ""
    fix: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Options:
    broker: str | None = None  # host:port or URL; default: the config's mqtt.url
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None
    sweep: tuple[int, ...] = DEFAULT_SWEEP
    frame_size: tuple[int, int] | None = None
    snapshot_source: str | None = None  # default: camera.source
    snapshot: bool = True
    link_timeout_s: float = 30.0
    sign_key: Path | None = None  # Ed25519 key for poles with commands.require_signature


def _pass(c: Check, summary: str, **detail: Any) -> Check:
    c.status, c.summary = "pass", summary
    c.detail.update(detail)
    return c


def _bad(c: Check, status: Status, summary: str, fix: str, **detail: Any) -> Check:
    c.status, c.summary, c.fix = status, summary, fix
    c.detail.update(detail)
    return c


class Commissioning:
    def __init__(self, cfg: Config, config_path: Path, opts: Options,
                 on_step: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.opts = opts
        self.on_step = on_step or (lambda _s: None)
        self.checks: list[Check] = []
        self.base = f"{cfg.mqtt.topic_root}/{cfg.pole.id}"
        self.link: PoleLink | None = None
        self.snapshot: Snapshot | None = None
        self.birth: Birth | None = None
        tel = cfg.telemetry.interval_s
        # Long enough for a couple of telemetry messages whatever the interval.
        self.tel_wait_s = max(5.0, 2.5 * tel + 2.0)

    # -- connection ---------------------------------------------------------------------

    def _broker(self) -> tuple[str, int, bool]:
        if self.opts.broker:
            a = BrokerAddr.parse(self.opts.broker)
            return a.host, a.port, a.tls
        m = self.cfg.mqtt
        return m.host, m.port, m.tls

    def _tls(self, tls: bool) -> ssl.SSLContext | None:
        m = self.cfg.mqtt
        o = self.opts
        return client_context(o.ca_file or m.ca_file, o.cert_file or m.cert_file,
                              o.key_file or m.key_file) if tls else None

    async def run(self) -> list[Check]:
        host, port, tls = self._broker()
        try:
            ctx = self._tls(tls)
        except (OSError, ssl.SSLError) as e:
            raise CommissionError(f"TLS files for {host}:{port} unusable ({e}); check "
                                  "mqtt.ca_file/cert_file/key_file or pass --ca-file, --cert, "
                                  "--key") from None
        client = aiomqtt.Client(
            host, port, identifier=f"polectl-commission-{os.getpid()}",
            username=self.opts.username or self.cfg.mqtt.username,
            password=self.opts.password or self.cfg.mqtt.password,
            protocol=aiomqtt.ProtocolVersion.V5, tls_context=ctx, timeout=10)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as e:
            raise CommissionError(
                f"cannot connect to the broker at {host}:{port} ({e}); check the laptop's "
                "network, --broker, and the credentials (--ca-file/--cert/--key, "
                "--username/--password)") from None
        try:
            signer = load_signer(self.opts.sign_key) if self.opts.sign_key else None
            self.link = PoleLink(client, self.base, signer)
            await client.subscribe(f"{self.base}/#", qos=1)
            pump = asyncio.create_task(self.link.pump())
            try:
                for step in (self.check_link, self.check_mqtt, self.check_clock,
                             self.check_sensors, self.check_lamp, self.check_snapshot,
                             self.check_camera, self.check_zones):
                    c = Check(step.__name__.removeprefix("check_"), "")
                    self.on_step(c.name)
                    t = time.monotonic()
                    try:
                        await step(c)
                    except aiomqtt.MqttError as e:
                        _bad(c, "fail", f"MQTT error: {e}", "check the broker connection and "
                             "run again")
                    c.seconds = round(time.monotonic() - t, 2)
                    self.checks.append(c)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await pump
        finally:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
        return self.checks

    # -- checks -------------------------------------------------------------------------

    async def check_link(self, c: Check) -> None:
        c.title = "Link up, versions compatible"
        assert self.link is not None
        w = self.opts.link_timeout_s
        state = await self.link.wait_for(State, lambda m: True, w)
        if state is None:
            _bad(c, "fail", f"no state from {self.cfg.pole.id} within {w:.0f} s",
                 "is the controller running (systemctl status pole-controller) and "
                 "configured for this broker and pole id?")
            return
        if state.state != "online":
            online = await self.link.wait_for(State, lambda m: m.state == "online", w)
            if online is None:
                _bad(c, "fail", f"pole is {state.state} ({state.reason})",
                     "start the controller: systemctl restart pole-controller; then "
                     "see /var/log/smartpole/controller.log")
                return
        birth = await self.link.wait_for(Birth, lambda m: m.firmware is not None, w)
        if birth is None or birth.firmware is None:
            _bad(c, "fail", "the I/O board never said hello (birth has no firmware)",
                 f"check the UART cable and link.port ({self.cfg.link.port}); is the board "
                 "powered and flashed (polectl flash / deploy)?")
            return
        self.birth = birth
        fw = birth.firmware
        detail: dict[str, Any] = {
            "controller_version": birth.controller_version, "firmware_version": fw.version,
            "board_id": fw.board_id, "link_protocol": fw.protocol, "boot_id": birth.boot_id,
            "config_version": birth.config_version, "capabilities": birth.capabilities}
        if await asyncio.to_thread(os.path.exists, self.cfg.link.port):  # at the pole
            detail["local_link_device"] = self.cfg.link.port
        try:
            major = int(fw.protocol.split(".")[0])
        except ValueError:
            major = -1
        if major != LINK_PROTOCOL_MAJOR:
            _bad(c, "fail", f"firmware speaks link protocol {fw.protocol}, the "
                 f"controller {LINK_PROTOCOL_MAJOR}.x",
                 "deploy the firmware that matches this controller (polectl deploy)", **detail)
            return
        ctl = birth.controller_version
        if ctl.split(".")[0] != __version__.split(".")[0]:
            _bad(c, "warn", f"controller {ctl}, polectl {__version__}: different major "
                 "versions", "update polectl or the controller so both have the same major "
                 "version", **detail)
            return
        tel = await self.link.wait_for(Telemetry, lambda m: True, self.tel_wait_s)
        if tel is None or not tel.link.up:
            _bad(c, "fail", "telemetry says the serial link is down" if tel else
                 "no telemetry", f"check the UART cable and link.port ({self.cfg.link.port})",
                 **detail)
            return
        detail["rtt_ms"] = tel.link.rtt_ms
        _pass(c, f"online; controller {ctl}, firmware {fw.version} (link "
              f"{fw.protocol}), link rtt {detail['rtt_ms']} ms", **detail)

    async def check_mqtt(self, c: Check) -> None:
        c.title = "MQTT round trip (ping)"
        assert self.link is not None
        res, rtt = await self.link.command(Ping(type="ping"), 10)
        if res is None:
            _bad(c, "fail", "no answer to ping within 10 s",
                 "check that the pole subscribes to its cmd topic (broker ACL: read "
                 f"{self.base}/cmd) and is online")
            return
        ms = round(rtt * 1000, 1)
        if res.status != "ok":
            _bad(c, "fail", f"ping answered {res.status}/{res.reason}: "
                 f"{res.detail}", "see the controller log "
                 "(/var/log/smartpole/controller.log)", rtt_ms=ms)
        elif rtt > 5:
            _bad(c, "fail", f"ping took {ms} ms", "the uplink is too slow for commands; check "
                 "the mobile/ethernet link", rtt_ms=ms)
        elif rtt > 1:
            _bad(c, "warn", f"ping took {ms} ms (> 1 s)", "a slow uplink; check signal "
                 "strength or the network path", rtt_ms=ms)
        else:
            _pass(c, f"ping answered ok in {ms} ms", rtt_ms=ms)

    async def _telemetry(self, pred: Callable[[Telemetry], bool] = lambda m: True,
                         after: float = 0.0) -> Telemetry | None:
        assert self.link is not None
        return await self.link.wait_for(Telemetry, pred, self.tel_wait_s, after)

    async def check_clock(self, c: Check) -> None:
        c.title = "Clock in sync"
        tel = await self._telemetry()
        if tel is None:
            _bad(c, "fail", "no telemetry", "is the controller running?")
            return
        clk = tel.clock.model_dump()
        if tel.clock.synced:
            _pass(c, f"synchronised ({tel.clock.source})", **clk)
        else:
            _bad(c, "warn", f"not synchronised ({tel.clock.source}): report times may be off",
                 "enable NTP on the edge computer (systemctl enable --now systemd-timesyncd, "
                 "or chrony) and check that NTP (udp/123) is reachable", **clk)

    async def check_sensors(self, c: Check) -> None:
        c.title = "Sensors plausible"
        tel = await self._telemetry(lambda m: m.sensors is not None)
        if tel is None or tel.sensors is None:
            _bad(c, "fail", "telemetry has no sensor readings", "check the I/O board and "
                 "its link (the link check above)")
            return
        s = tel.sensors.model_dump()
        caps = set(self.birth.capabilities if self.birth else [])
        problems: list[tuple[Status, str, str]] = []

        def in_range(key: str, cap: str, lo: float, hi: float, what: str) -> None:
            v = s.get(key)
            if v is None:
                if cap in caps:
                    problems.append(("warn", f"{what}: no reading",
                                     f"check the {what} sensor's wiring"))
            elif not lo <= float(v) <= hi:
                problems.append(("fail", f"{what} {v} outside {lo}..{hi}",
                                 f"check the {what} sensor and its wiring"))

        in_range("lux", "lux", *LUX_RANGE, "light sensor (lux)")
        in_range("temp_c", "temp", *TEMP_RANGE, "temperature sensor")
        tilt = s.get("tilt_deg")
        if tilt is not None and abs(float(tilt)) > TILT_WARN_DEG:
            problems.append(("warn", f"pole tilted {tilt} deg",
                             "check the pole's foundation and the tilt sensor's mounting"))
        if s.get("mains") is False:
            problems.append(("fail", "no mains power", "check the supply and the mains "
                             "sense input"))
        if s.get("door_open"):
            problems.append(("warn", "service door open", "close the door before leaving; "
                             "run commission again to confirm the door switch"))
        if not problems:
            _pass(c, f"lux {s.get('lux')}, {s.get('temp_c')} C, tilt {tilt} deg, mains on, "
                  "door shut", **s)
            return
        worst: Status = "fail" if any(p[0] == "fail" for p in problems) else "warn"
        _bad(c, worst, "; ".join(p[1] for p in problems), "; ".join(p[2] for p in problems),
             **s)

    async def check_lamp(self, c: Check) -> None:
        c.title = "Lamp responds (dimming sweep)"
        assert self.link is not None
        before = await self._telemetry(lambda m: m.lamp is not None)
        restore = before.lamp.level if before and before.lamp else None
        steps: list[dict[str, Any]] = []
        for level in self.opts.sweep:
            res, rtt = await self.link.command(LampSet(type="lamp.set", level=level,
                                                       fade_ms=0), 10)
            t = time.monotonic()
            step: dict[str, Any] = {"level": level, "result": res and res.status,
                                    "rtt_ms": round(rtt * 1000, 1)}
            steps.append(step)
            if res is None or res.status != "ok":
                why = "no result" if res is None else f"{res.status}/{res.reason}: {res.detail}"
                _bad(c, "fail", f"lamp.set {level} %: {why}",
                     "check the lamp driver wiring and the link; see "
                     "/var/log/smartpole/controller.log", steps=steps)
                return
            tel = await self._telemetry(_lamp_at(level), after=t)
            if tel is None or tel.lamp is None:
                _bad(c, "fail", f"telemetry never showed the lamp at {level} %",
                     "the firmware accepted the command but the level did not follow: check "
                     "the lamp driver", steps=steps)
                return
            step["telemetry_level"] = tel.lamp.level
            step["duty"] = tel.lamp.duty
            if level in (max(self.opts.sweep), min(self.opts.sweep)):
                # Sensors are sampled on their own schedule: the power reading of the
                # message that first shows the new level may predate it; take the next.
                nxt = await self._telemetry(_lamp_at(level), after=time.monotonic())
                step["power_w"] = nxt.sensors.power_w if nxt and nxt.sensors else None
        if restore is not None and restore != self.opts.sweep[-1]:
            await self.link.command(LampSet(type="lamp.set", level=restore, fade_ms=1000), 10)
        powered = [(s["level"], s["power_w"]) for s in steps if s.get("power_w") is not None]
        detail: dict[str, Any] = {"steps": steps, "restored_to": restore}
        if len(powered) >= 2:
            hi = max(powered)
            lo = min(powered)
            if hi[0] > lo[0] and not hi[1] > lo[1]:
                _bad(c, "warn", f"lamp follows the commands but power did not rise ({lo[1]} W "
                     f"at {lo[0]} %, {hi[1]} W at {hi[0]} %)", "check the power transducer "
                     "and that the lamp really lights", **detail)
                return
        levels = " -> ".join(f"{s['level']} %" for s in steps)
        _pass(c, f"{levels}: every step answered ok and seen in telemetry", **detail)

    async def check_camera(self, c: Check) -> None:
        c.title = "Camera frames at the expected size"
        if not self.cfg.camera.enabled:
            c.status, c.summary = "skip", "no camera configured (camera.enabled = false)"
            return
        first = await self._telemetry(lambda m: m.camera is not None)
        if first is None or first.camera is None:
            _bad(c, "fail", "telemetry has no camera section", "check camera.source and the "
                 "controller log")
            return
        f0 = first.camera["frames"]
        later = await self._telemetry(lambda m: m.camera is not None
                                      and m.camera["frames"] > f0, after=time.monotonic())
        advancing = later is not None
        cam = later.camera if later is not None and later.camera else first.camera
        size = (cam["width"], cam["height"])
        want = self.opts.frame_size or (
            (self.snapshot.width, self.snapshot.height) if self.snapshot else None)
        detail = {**cam, "expected": list(want) if want else None}
        if not cam["healthy"] or not advancing:
            _bad(c, "fail", f"camera {'unhealthy' if not cam['healthy'] else 'stalled'}: "
                 f"{cam['frames']} frames", "check the camera's power, cable/network and "
                 "camera.source", **detail)
        elif want and tuple(want) != size:
            _bad(c, "fail", f"frames are {size[0]}x{size[1]}, expected {want[0]}x{want[1]}",
                 "set the camera's stream resolution to the expected size (zones are in "
                 "pixels of that size) or recalibrate the zones (polectl calibrate)", **detail)
        elif size == (0, 0):
            _bad(c, "fail", "frame size unknown", "check camera.source", **detail)
        else:
            _pass(c, f"{size[0]}x{size[1]} at {cam['fps']} fps, {cam['frames']} frames",
                  **detail)

    async def check_zones(self, c: Check) -> None:
        c.title = "Zones inside the frame"
        zones = self.cfg.zones
        cam = next((ch for ch in self.checks if ch.name == "camera"), None)
        size = None
        if cam is not None and cam.detail.get("width"):
            size = (cam.detail["width"], cam.detail["height"])
        size = self.opts.frame_size or size or (
            (self.snapshot.width, self.snapshot.height) if self.snapshot else None)
        if not zones:
            if self.cfg.crossing.enabled or self.cfg.camera.enabled:
                _bad(c, "warn", "no zones configured", "draw them with `polectl calibrate "
                     f"{self.config_path}`")
            else:
                c.status, c.summary = "skip", "no camera, no zones"
            return
        if size is None:
            _bad(c, "warn", f"{len(zones)} zone(s), but the frame size is unknown",
                 "pass --frame-size WxH")
            return
        w, h = size
        outside = []
        for z in zones:
            bad = [p for p in z.polygon if not (0 <= p[0] < w and 0 <= p[1] < h)]
            if bad:
                outside.append(f"{z.name}: {len(bad)} point(s) outside, e.g. "
                               f"[{bad[0][0]:g}, {bad[0][1]:g}]")
        zl = [{"name": z.name, "kind": z.kind, "points": len(z.polygon)} for z in zones]
        if outside:
            _bad(c, "fail", f"outside the {w}x{h} frame: " + "; ".join(outside),
                 f"move the points inside with `polectl calibrate {self.config_path}`",
                 zones=zl, frame=[w, h])
        else:
            _pass(c, f"{len(zones)} zone(s) inside the {w}x{h} frame", zones=zl, frame=[w, h])

    async def check_snapshot(self, c: Check) -> None:
        c.title = "Snapshot (anonymised) with zones"
        if not self.opts.snapshot:
            c.status, c.summary = "skip", "--no-snapshot"
            return
        source = self.opts.snapshot_source or (self.cfg.camera.source
                                               if self.cfg.camera.enabled else None)
        if source is None:
            c.status, c.summary = "skip", "no camera configured"
            return
        try:
            img = await asyncio.to_thread(grab_frame, source)
            self.snapshot = await asyncio.to_thread(make_snapshot, self.cfg, img)
        except (OSError, ValueError) as e:
            _bad(c, "warn", f"no local snapshot: {e}", "run commission on the pole's network "
                 "(the camera must be reachable from here) or pass --snapshot-source")
            return
        s = self.snapshot
        detail = {"width": s.width, "height": s.height, "people_blurred": s.people,
                  "detector": s.detector, "source": _redact(source)}
        if s.detector != "ok":
            _bad(c, "warn", f"{s.width}x{s.height}; person detector did not run, the whole "
                 "frame is coarsened only", "check detector.model", **detail)
            return
        _pass(c, f"{s.width}x{s.height}, {s.people} person box(es) blurred, whole frame "
              "coarsened", **detail)


def _lamp_at(level: int) -> Callable[[Telemetry], bool]:
    return lambda m: m.lamp is not None and m.lamp.level == level


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
