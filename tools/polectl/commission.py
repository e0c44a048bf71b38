"""`polectl commission`: the checklist an installer runs against a live pole before leaving it.

    polectl commission --config /etc/smartpole/pole.toml --out reports/

Over MQTT, as the city backend would see the pole (the config names the broker, the
pole id, the telemetry interval, the camera and the zones):

| check | passes when | otherwise |
| --- | --- | --- |
| `link` | retained state `online`, birth with the firmware (the link said hello), \
telemetry `link.up`, same link protocol and controller major versions | fail |
| `mqtt` | a `ping` is answered `ok` (round trip < 1 s; < 5 s warns) | fail |
| `clock` | telemetry `clock.synced` | warn (NTP) |
| `sensors` | lux, temperature, tilt plausible, mains present, door shut | warn / fail |
| `lamp` | each `lamp.set` of the dimming sweep is `ok` and telemetry follows | fail |
| `snapshot` | a local frame from the configured camera, anonymised | warn |
| `camera` | telemetry camera healthy, frames advancing, expected size | fail / skip |
| `zones` | every zone point inside the frame | fail (warn: no zones) |

Writes `commission-<pole>-<UTC time>.json` (the report), `.html` (the same, for
people, with the snapshot and the zones drawn on it) and `.jpg` (the snapshot).
Exit code 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for a
config or usage error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import aiomqtt
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge_controller.clock import utc_iso
from edge_controller.config import Config, ConfigError, load
from edge_controller.version import __version__

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

Status = Literal["pass", "warn", "fail", "skip"]
LINK_PROTOCOL_MAJOR = 1
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


class CommissionError(Exception):
    """Cannot even start (broker unreachable, pole never seen): the message says why."""


# ---------------------------------------------------------------------------------------
# Snapshot: a local frame, anonymised, zones drawn (shared with `polectl calibrate`)
# ---------------------------------------------------------------------------------------


def grab_frame(source: str, within_s: float = 10.0, skip: int = 0) -> Any:
    """One BGR frame from a camera source spec (file:PATH, v4l2:N, rtsp://...)."""
    from edge_controller.camera.source import SourceSpec, open_capture

    spec = SourceSpec.parse(source)
    cap = open_capture(spec, within_s, within_s)
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open camera source {source!r}")
        img = None
        for _ in range(skip + 1):
            ok, frame = cap.read()
            if not ok:
                break
            img = frame
        if img is None:
            raise OSError(f"camera source {source!r} gave no frame")
        return img
    finally:
        cap.release()


def detect_people(cfg: Config, image: Any) -> Any:
    """Person boxes for blurring: the pole's detector with every pass on, over several tile
    grids (a person cut by one grid's tile border is whole in another), at a lower
    threshold; the union of all of them. A false box costs a little blur, a missed person
    their privacy."""
    import numpy as np

    from edge_controller.detect import DetectionPipeline

    d = cfg.detector
    found = []
    grids = list(dict.fromkeys([(d.tiling.cols, d.tiling.rows), (4, 3), (5, 4)]))
    for cols, rows in grids:
        snap_cfg = d.model_copy(update={
            "tiling": d.tiling.model_copy(update={"whole_frame": True, "cols": cols,
                                                  "rows": rows}),
            "motion": d.motion.model_copy(update={"enabled": False}),
            "focus": d.focus.model_copy(update={"enabled": False}),
            "score_threshold": min(d.score_threshold, 0.3),
            "detect_interval": 1, "max_fps": 0.0,
        })
        boxes = DetectionPipeline(snap_cfg, zones=[z.polygon for z in cfg.zones]).process(
            0, 0.0, image)
        if boxes is not None and len(boxes):
            found.append(np.asarray(boxes, np.float32))
    return np.concatenate(found) if found else np.zeros((0, 5), np.float32)


def count_people(boxes: Any, iou: float = 0.4) -> int:
    """Distinct people among possibly overlapping boxes (greedy, best score first)."""
    kept: list[Any] = []
    for b in sorted(boxes, key=lambda b: -float(b[4])):
        if all(_iou(b, k) < iou for k in kept):
            kept.append(b)
    return len(kept)


def _iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Snapshot:
    jpeg: bytes  # anonymised, zones drawn
    clean_jpeg: bytes  # anonymised, nothing drawn (for the calibration page)
    width: int
    height: int
    people: int
    detector: str  # "ok" or why it did not run
    boxes: Any = None  # the person boxes that were blurred (x1, y1, x2, y2, score)


def make_snapshot(cfg: Config, image: Any, draw_zones: bool = True) -> Snapshot:
    import cv2

    from edge_controller.crossing.privacy import anonymise

    h, w = image.shape[:2]
    note = "ok"
    try:
        boxes = detect_people(cfg, image)
    except Exception as e:  # model missing or broken: coarsening still applies
        import numpy as np

        boxes, note = np.zeros((0, 5), np.float32), f"detector failed: {e}"
    anon = anonymise(image, boxes)
    ok, clean = cv2.imencode(".jpg", anon, [cv2.IMWRITE_JPEG_QUALITY, 85])
    drawn = anon.copy()
    if draw_zones:
        draw_zone_overlay(drawn, cfg)
    ok2, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not (ok and ok2):
        raise OSError("JPEG encoding failed")
    return Snapshot(bytes(buf), bytes(clean), w, h, count_people(boxes), note, boxes)


ZONE_COLOURS = {"carriageway": (40, 40, 230), "crosswalk": (0, 200, 255),
                "waiting": (60, 200, 60)}


def draw_zone_overlay(img: Any, cfg: Config) -> None:
    import cv2
    import numpy as np

    for z in cfg.zones:
        pts = np.asarray(z.polygon, dtype=np.int32).reshape(-1, 1, 2)
        colour = ZONE_COLOURS.get(z.kind, (255, 255, 255))
        overlay = img.copy()
        cv2.fillPoly(overlay, [pts], colour)
        cv2.addWeighted(overlay, 0.25, img, 0.75, 0, dst=img)
        cv2.polylines(img, [pts], True, colour, 2, cv2.LINE_AA)
        x, y = int(min(p[0] for p in z.polygon)), int(min(p[1] for p in z.polygon))
        cv2.putText(img, f"{z.name} ({z.kind})", (x + 4, max(14, y + 16)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(img, f"{z.name} ({z.kind})", (x + 4, max(14, y + 16)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    sig = cfg.signal.camera
    if sig is not None:
        x, y, w, h = sig.roi
        cv2.rectangle(img, (x, y), (x + w, y + h), (255, 0, 255), 2)
        cv2.putText(img, "signal", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 0, 255), 1, cv2.LINE_AA)


# ---------------------------------------------------------------------------------------
# The MQTT side
# ---------------------------------------------------------------------------------------


@dataclass
class Seen:
    t: float
    kind: str
    msg: dict[str, Any]
    retain: bool


class PoleLink:
    """Everything the pole publishes, in arrival order, and a way to send it commands."""

    def __init__(self, client: aiomqtt.Client, base: str,
                 signer: Callable[[bytes], bytes] | None = None) -> None:
        self.client = client
        self.base = base
        self.signer = signer
        self.seen: list[Seen] = []
        self._cond = asyncio.Condition()
        self._n = 0

    async def pump(self) -> None:
        async for m in self.client.messages:
            topic = str(m.topic)
            if not topic.startswith(self.base + "/"):
                continue
            payload = m.payload if isinstance(m.payload, bytes) else b""
            try:
                msg = json.loads(payload) if payload else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(msg, dict):
                async with self._cond:
                    self.seen.append(Seen(time.monotonic(), topic[len(self.base) + 1:], msg,
                                          bool(m.retain)))
                    self._cond.notify_all()

    async def wait_for(self, kind: str, pred: Callable[[dict[str, Any]], bool],
                       within_s: float, after: float = 0.0) -> dict[str, Any] | None:
        end = time.monotonic() + within_s
        async with self._cond:
            while True:
                for s in reversed(self.seen):
                    if s.kind == kind and s.t >= after and pred(s.msg):
                        return s.msg
                left = end - time.monotonic()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), left)

    def latest(self, kind: str) -> dict[str, Any] | None:
        for s in reversed(self.seen):
            if s.kind == kind:
                return s.msg
        return None

    async def command(self, body: dict[str, Any], within_s: float
                      ) -> tuple[dict[str, Any] | None, float]:
        self._n += 1
        cid = f"commission-{int(time.time())}-{self._n}"
        t = time.monotonic()
        env: dict[str, Any] = {"id": cid, "issued_at": utc_iso(),
                               "expires_at": utc_iso(time.time() + 60), "body": body}
        if self.signer is not None:
            from edge_controller.uplink.trust import signed_bytes

            env["sig"] = base64.b64encode(self.signer(signed_bytes(env))).decode()
        await self.client.publish(f"{self.base}/cmd", json.dumps(env), qos=1)
        res = await self.wait_for("cmd/result", lambda m: m.get("id") == cid, within_s, t)
        return res, time.monotonic() - t


# ---------------------------------------------------------------------------------------
# The checklist
# ---------------------------------------------------------------------------------------


def load_signer(path: Path) -> Callable[[bytes], bytes]:
    """An Ed25519 private key (PEM) that signs commands for poles that require it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise CommissionError(f"--sign-key {path}: not a readable PEM private key ({e})"
                              ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CommissionError(f"--sign-key {path}: commands are signed with Ed25519; this "
                              "is another key type")
    return key.sign


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
        self.birth: dict[str, Any] | None = None
        tel = cfg.telemetry.interval_s
        # Long enough for a couple of telemetry messages whatever the interval.
        self.tel_wait_s = max(5.0, 2.5 * tel + 2.0)

    # -- connection ---------------------------------------------------------------------

    def _broker(self) -> tuple[str, int, bool]:
        from polectl.fleet import BrokerAddr

        if self.opts.broker:
            a = BrokerAddr.parse(self.opts.broker)
            return a.host, a.port, a.tls
        m = self.cfg.mqtt
        return m.host, m.port, m.tls

    def _tls(self, tls: bool) -> ssl.SSLContext | None:
        if not tls:
            return None
        m = self.cfg.mqtt
        ca = self.opts.ca_file or m.ca_file
        cert = self.opts.cert_file or m.cert_file
        key = self.opts.key_file or m.key_file
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        return ctx

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
        state = await self.link.wait_for("state", lambda m: True, w)
        if state is None:
            _bad(c, "fail", f"no state from {self.cfg.pole.id} within {w:.0f} s",
                 "is the controller running (systemctl status pole-controller) and "
                 "configured for this broker and pole id?")
            return
        if state.get("state") != "online":
            online = await self.link.wait_for("state", lambda m: m.get("state") == "online", w)
            if online is None:
                _bad(c, "fail", f"pole is {state.get('state')} ({state.get('reason')})",
                     "start the controller: systemctl restart pole-controller; then "
                     "see /var/log/smartpole/controller.log")
                return
        birth = await self.link.wait_for("birth", lambda m: m.get("firmware") is not None, w)
        if birth is None:
            _bad(c, "fail", "the I/O board never said hello (birth has no firmware)",
                 f"check the UART cable and link.port ({self.cfg.link.port}); is the board "
                 "powered and flashed (polectl flash / deploy)?")
            return
        self.birth = birth
        fw = birth["firmware"]
        detail = {"controller_version": birth.get("controller_version"),
                  "firmware_version": fw.get("version"), "board_id": fw.get("board_id"),
                  "link_protocol": fw.get("protocol"), "boot_id": birth.get("boot_id"),
                  "config_version": birth.get("config_version"),
                  "capabilities": birth.get("capabilities")}
        if await asyncio.to_thread(os.path.exists, self.cfg.link.port):  # at the pole
            detail["local_link_device"] = self.cfg.link.port
        try:
            major = int(str(fw.get("protocol", "0.0")).split(".")[0])
        except ValueError:
            major = -1
        if major != LINK_PROTOCOL_MAJOR:
            _bad(c, "fail", f"firmware speaks link protocol {fw.get('protocol')}, the "
                 f"controller {LINK_PROTOCOL_MAJOR}.x",
                 "deploy the firmware that matches this controller (polectl deploy)", **detail)
            return
        ctl = str(birth.get("controller_version", ""))
        if ctl.split(".")[0] != __version__.split(".")[0]:
            _bad(c, "warn", f"controller {ctl}, polectl {__version__}: different major "
                 "versions", "update polectl or the controller so both have the same major "
                 "version", **detail)
            return
        tel = await self.link.wait_for("telemetry", lambda m: True, self.tel_wait_s)
        if tel is None or not (tel.get("link") or {}).get("up"):
            _bad(c, "fail", "telemetry says the serial link is down" if tel else
                 "no telemetry", f"check the UART cable and link.port ({self.cfg.link.port})",
                 **detail)
            return
        detail["rtt_ms"] = tel["link"].get("rtt_ms")
        _pass(c, f"online; controller {ctl}, firmware {fw.get('version')} (link "
              f"{fw.get('protocol')}), link rtt {detail['rtt_ms']} ms", **detail)

    async def check_mqtt(self, c: Check) -> None:
        c.title = "MQTT round trip (ping)"
        assert self.link is not None
        res, rtt = await self.link.command({"type": "ping"}, 10)
        if res is None:
            _bad(c, "fail", "no answer to ping within 10 s",
                 "check that the pole subscribes to its cmd topic (broker ACL: read "
                 f"{self.base}/cmd) and is online")
            return
        ms = round(rtt * 1000, 1)
        if res.get("status") != "ok":
            _bad(c, "fail", f"ping answered {res.get('status')}/{res.get('reason')}: "
                 f"{res.get('detail')}", "see the controller log "
                 "(/var/log/smartpole/controller.log)", rtt_ms=ms)
        elif rtt > 5:
            _bad(c, "fail", f"ping took {ms} ms", "the uplink is too slow for commands; check "
                 "the mobile/ethernet link", rtt_ms=ms)
        elif rtt > 1:
            _bad(c, "warn", f"ping took {ms} ms (> 1 s)", "a slow uplink; check signal "
                 "strength or the network path", rtt_ms=ms)
        else:
            _pass(c, f"ping answered ok in {ms} ms", rtt_ms=ms)

    async def _telemetry(self, pred: Callable[[dict[str, Any]], bool] = lambda m: True,
                         after: float = 0.0) -> dict[str, Any] | None:
        assert self.link is not None
        return await self.link.wait_for("telemetry", pred, self.tel_wait_s, after)

    async def check_clock(self, c: Check) -> None:
        c.title = "Clock in sync"
        tel = await self._telemetry()
        if tel is None:
            _bad(c, "fail", "no telemetry", "is the controller running?")
            return
        clk = tel.get("clock") or {}
        if clk.get("synced"):
            _pass(c, f"synchronised ({clk.get('source')})", **clk)
        else:
            _bad(c, "warn", f"not synchronised ({clk.get('source')}): report times may be off",
                 "enable NTP on the edge computer (systemctl enable --now systemd-timesyncd, "
                 "or chrony) and check that NTP (udp/123) is reachable", **clk)

    async def check_sensors(self, c: Check) -> None:
        c.title = "Sensors plausible"
        tel = await self._telemetry(lambda m: m.get("sensors") is not None)
        if tel is None:
            _bad(c, "fail", "telemetry has no sensor readings", "check the I/O board and "
                 "its link (the link check above)")
            return
        s = tel["sensors"]
        caps = set((self.birth or {}).get("capabilities") or [])
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
        before = await self._telemetry(lambda m: m.get("lamp") is not None)
        restore = before["lamp"]["level"] if before else None
        steps: list[dict[str, Any]] = []
        for level in self.opts.sweep:
            res, rtt = await self.link.command({"type": "lamp.set", "level": level,
                                                "fade_ms": 0}, 10)
            t = time.monotonic()
            step: dict[str, Any] = {"level": level, "result": res and res.get("status"),
                                    "rtt_ms": round(rtt * 1000, 1)}
            steps.append(step)
            if res is None or res.get("status") != "ok":
                why = "no result" if res is None else f"{res.get('status')}/" \
                    f"{res.get('reason')}: {res.get('detail')}"
                _bad(c, "fail", f"lamp.set {level} %: {why}",
                     "check the lamp driver wiring and the link; see "
                     "/var/log/smartpole/controller.log", steps=steps)
                return
            tel = await self._telemetry(_lamp_at(level), after=t)
            if tel is None:
                _bad(c, "fail", f"telemetry never showed the lamp at {level} %",
                     "the firmware accepted the command but the level did not follow: check "
                     "the lamp driver", steps=steps)
                return
            step["telemetry_level"] = tel["lamp"]["level"]
            step["duty"] = tel["lamp"]["duty"]
            if level in (max(self.opts.sweep), min(self.opts.sweep)):
                # Sensors are sampled on their own schedule: the power reading of the
                # message that first shows the new level may predate it; take the next.
                nxt = await self._telemetry(_lamp_at(level), after=time.monotonic())
                step["power_w"] = ((nxt or {}).get("sensors") or {}).get("power_w")
        if restore is not None and restore != self.opts.sweep[-1]:
            await self.link.command({"type": "lamp.set", "level": restore, "fade_ms": 1000}, 10)
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
        first = await self._telemetry(lambda m: m.get("camera") is not None)
        if first is None:
            _bad(c, "fail", "telemetry has no camera section", "check camera.source and the "
                 "controller log")
            return
        f0 = first["camera"]["frames"]
        later = await self._telemetry(lambda m: m.get("camera") is not None
                                      and m["camera"]["frames"] > f0, after=time.monotonic())
        advancing = later is not None
        cam = (later or first)["camera"]
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


def _lamp_at(level: int) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (m.get("lamp") or {}).get("level") == level


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# ---------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------


def overall(checks: list[Check]) -> Status:
    if any(c.status == "fail" for c in checks):
        return "fail"
    if any(c.status == "warn" for c in checks):
        return "warn"
    return "pass"


def report_dict(com: Commissioning, started: str, finished: str) -> dict[str, Any]:
    return {
        "pole_id": com.cfg.pole.id, "result": overall(com.checks), "started_at": started,
        "finished_at": finished, "polectl_version": __version__,
        "config": str(com.config_path), "broker": "{}:{}".format(*com._broker()[:2]),
        "location": {"latitude": com.cfg.pole.latitude, "longitude": com.cfg.pole.longitude},
        "birth": com.birth,
        "checks": [asdict(c) for c in com.checks],
        "snapshot": None if com.snapshot is None else {
            "width": com.snapshot.width, "height": com.snapshot.height,
            "people_blurred": com.snapshot.people, "anonymised": True},
        "zones": [{"name": z.name, "kind": z.kind, "polygon": [list(p) for p in z.polygon]}
                  for z in com.cfg.zones],
    }


STATUS_COLOURS = {"pass": "#1b7f3b", "warn": "#b26a00", "fail": "#b3261e", "skip": "#666"}


def render_html(rep: dict[str, Any], snapshot_jpeg: bytes | None) -> str:
    e = html.escape
    rows = []
    for c in rep["checks"]:
        colour = STATUS_COLOURS[c["status"]]
        fix = f"<div class=fix>Fix: {e(c['fix'])}</div>" if c["fix"] else ""
        rows.append(
            f"<tr class='check-{e(c['name'])}'><td><b>{e(c['title'] or c['name'])}</b></td>"
            f"<td class='st' style='background:{colour}'>{e(c['status'].upper())}</td>"
            f"<td>{e(c['summary'])}{fix}</td><td class=num>{c['seconds']}</td></tr>")
    img = ""
    if snapshot_jpeg:
        b64 = base64.b64encode(snapshot_jpeg).decode()
        s = rep["snapshot"]
        img = (f"<h2>Camera view with zones</h2><p>Anonymised on this laptop before saving: "
               f"the whole frame is coarsened and {s['people_blurred']} detected person "
               f"box(es) are blurred.</p><img id=snapshot alt='anonymised snapshot with zones' "
               f"width={s['width']} height={s['height']} src='data:image/jpeg;base64,{b64}'>")
    zones = "".join(f"<li>{e(z['name'])} ({e(z['kind'])}, {len(z['polygon'])} points)</li>"
                    for z in rep["zones"]) or "<li>none</li>"
    b = rep.get("birth") or {}
    fw = b.get("firmware") or {}
    res = rep["result"]
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<title>Commissioning {e(rep['pole_id'])}: {e(res.upper())}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}
table{{border-collapse:collapse;width:100%}} td,th{{border:1px solid #ccc;padding:.4em .6em;
vertical-align:top;text-align:left}} .st{{color:#fff;font-weight:bold;text-align:center}}
.num{{text-align:right}} .fix{{color:#555;margin-top:.3em}} img{{max-width:100%;height:auto;
border:1px solid #999}} .result{{display:inline-block;padding:.2em .8em;color:#fff;
background:{STATUS_COLOURS[res]};border-radius:4px}}
</style></head><body>
<h1>Pole {e(rep['pole_id'])} <span class=result id=result>{e(res.upper())}</span></h1>
<p>Commissioned {e(rep['started_at'])} to {e(rep['finished_at'])} with polectl
{e(rep['polectl_version'])} via broker {e(rep['broker'])}.<br>
Controller {e(str(b.get('controller_version', '?')))}, firmware
{e(str(fw.get('version', '?')))} (board {e(str(fw.get('board_id', '?')))}, link
{e(str(fw.get('protocol', '?')))}), config {e(str(b.get('config_version', '?')))}.</p>
<h2>Checklist</h2>
<table id=checks><tr><th>check</th><th>result</th><th>what we saw</th><th>s</th></tr>
{''.join(rows)}</table>
{img}
<h2>Zones</h2><ul>{zones}</ul>
</body></html>
"""


def write_reports(com: Commissioning, out_dir: Path, started: str) -> dict[str, Path]:
    finished = utc_iso()
    rep = report_dict(com, started, finished)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = out_dir / f"commission-{com.cfg.pole.id}-{stamp}"
    paths = {"json": stem.with_suffix(".json"), "html": stem.with_suffix(".html")}
    if com.snapshot is not None:
        paths["snapshot"] = stem.with_suffix(".jpg")
        paths["snapshot"].write_bytes(com.snapshot.jpeg)
        rep["snapshot"]["file"] = paths["snapshot"].name
    paths["json"].write_text(json.dumps(rep, indent=1) + "\n")
    paths["html"].write_text(render_html(rep, com.snapshot.jpeg if com.snapshot else None))
    return paths


def commission(config: Path, out_dir: Path, opts: Options,
               on_step: Callable[[str], None] | None = None) -> tuple[dict[str, Any],
                                                                      dict[str, Path]]:
    """Run the checklist and write the reports; returns (report, paths)."""
    cfg = load(config)
    started = utc_iso()
    com = Commissioning(cfg, config, opts, on_step)
    asyncio.run(com.run())
    paths = write_reports(com, out_dir, started)
    return json.loads(paths["json"].read_text()), paths


def _size(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    try:
        w, h = (int(v) for v in s.lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    err.print(f"[red]--frame-size[/] {s!r}: use WIDTHxHEIGHT, e.g. 1920x1080")
    raise typer.Exit(2)


def commission_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The pole's TOML config (its "
                                         "bundle's pole.toml): pole id, broker, camera, "
                                         "zones.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the JSON and HTML reports and "
                                          "the snapshot go.")] = Path("commissioning"),
    broker: Annotated[str | None, typer.Option(help="Broker as host:port or URL, when the "
                                               "laptop reaches it differently from the "
                                               "pole; default: mqtt.url.")] = None,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle (default mqtt.ca_file).")]
        = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (default "
                                              "mqtt.cert_file).")] = None,
    key: Annotated[Path | None, typer.Option(help="Client key (default mqtt.key_file).")]
        = None,
    username: Annotated[str | None, typer.Option(help="Broker user name.")] = None,
    password: Annotated[str | None, typer.Option(help="Broker password.")] = None,
    sweep: Annotated[str, typer.Option(help="Dimming sweep levels, percent, comma-separated; "
                                       "the lamp returns to its level afterwards.")]
        = "100,50,10,0",
    frame_size: Annotated[str | None, typer.Option(help="Expected camera frame size WxH "
                                                   "(default: what the camera gives "
                                                   "here).")] = None,
    snapshot_source: Annotated[str | None, typer.Option(help="Grab the snapshot from this "
                                                        "source instead of camera.source.")]
        = None,
    snapshot: Annotated[bool, typer.Option(help="Take the anonymised snapshot.")] = True,
    link_timeout: Annotated[float, typer.Option(help="Seconds to wait for the pole to be "
                                                "online with its firmware.")] = 30.0,
    sign_key: Annotated[Path | None, typer.Option(help="Ed25519 private key (PEM) to sign "
                                                  "the commands, for poles that require "
                                                  "signed commands.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Checklist against a live pole (link and versions, dimming sweep, sensors, camera,
    zones, MQTT round trip, clock); writes a JSON report and an HTML page with an
    anonymised snapshot showing the zones."""
    try:
        levels = tuple(int(v) for v in sweep.split(","))
        if not levels or not all(0 <= v <= 100 for v in levels):
            raise ValueError
    except ValueError:
        err.print(f"[red]--sweep[/] {sweep!r}: percent levels 0-100, e.g. 100,50,10,0")
        raise typer.Exit(2) from None
    opts = Options(broker, ca_file, cert, key, username, password, levels, _size(frame_size),
                   snapshot_source, snapshot, link_timeout, sign_key)
    try:
        cfg = load(config)
    except ConfigError as e:
        for k, r in e.problems:
            err.print(f"[red]{config}[/]: [bold]{k}[/]: {r}")
        err.print(f"Fix the keys above (`polectl config check {config}`).")
        raise typer.Exit(2) from None
    names = ["link", "mqtt", "clock", "sensors", "lamp", "snapshot", "camera", "zones"]
    try:
        if as_json:
            rep, paths = commission(config, out_dir, opts)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                          console=err, transient=True) as prog:
                task = prog.add_task(f"commissioning {cfg.pole.id}", total=len(names))

                def on_step(name: str) -> None:
                    prog.update(task, completed=names.index(name),
                                description=f"{cfg.pole.id}: {name}")

                rep, paths = commission(config, out_dir, opts, on_step)
    except CommissionError as e:
        err.print(f"[red]commission {cfg.pole.id}[/]: {e}")
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps({**rep, "files": {k: str(v) for k, v in paths.items()}}))
    else:
        t = Table(title=f"pole {rep['pole_id']}: {rep['result'].upper()}")
        for col in ("check", "result", "what we saw", "fix"):
            t.add_column(col)
        colours = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
        for c in rep["checks"]:
            t.add_row(c["title"], f"[{colours[c['status']]}]{c['status']}[/]", c["summary"],
                      c["fix"])
        out.print(t)
        out.print(f"reports: {paths['json']} and {paths['html']}")
    if rep["result"] == "fail":
        raise typer.Exit(1)
