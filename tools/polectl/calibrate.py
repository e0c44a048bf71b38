"""`polectl calibrate`: a small local web page to draw the zones on an anonymised snapshot
and set the camera calibration, saved back into the pole's TOML config.

    polectl calibrate /etc/smartpole/pole.toml            # then open http://127.0.0.1:8765/

The snapshot comes from the configured camera (or `--image`), anonymised exactly as
for commissioning (whole frame coarsened, every detected person blurred) before it
is served. The page edits:

- `[[zones]]`: draw a polygon (click the points, Finish), drag a point to move it,
  rename, change the kind, delete;
- `[signal.camera] roi`: drag a rectangle around the pedestrian signal head;
- the camera calibration (`[visibility.calibration]`: mounting height, tilt, vertical
  field of view, roll; `image_size` is set to the snapshot's size), when this
  controller's config has that section.

Saving edits the TOML text in place: every other table, key and comment stays as it
was (comments inside the `[[zones]]` tables are not kept). The result must parse to
exactly the old data plus the edits and must pass `edge_controller.config` validation,
or nothing is written and the page lists the problems. The previous file is kept as
`<config>.bak`.

Stdlib `http.server` only; it listens on 127.0.0.1 unless `--host` says otherwise
(it has no authentication: expose it only on the installer's own link).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge_controller.config import ConfigError, config_version, load, parse

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

CALIBRATION_KEYS = ("mounting_height_m", "tilt_deg", "vfov_deg", "roll_deg")
MAX_BODY = 1 << 20

# ---------------------------------------------------------------------------------------
# Editing TOML text in place
# ---------------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_\-.\s\"']+?)\s*\](\])?\s*(#.*)?$")


class EditError(Exception):
    """The edit cannot be made safely on this file's text."""


def _norm(name: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in name.split("."))


def _scan(line: str, depth: int, ml: str | None) -> tuple[int, str | None]:
    """Bracket depth and open multi-line string after `line` (strings, comments aware)."""
    i, n = 0, len(line)
    while i < n:
        if ml is not None:
            j = line.find(ml, i)
            if j < 0:
                return depth, ml
            i, ml = j + 3, None
            continue
        ch = line[i]
        if ch == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            ml = line[i:i + 3]
            i += 3
            continue
        if ch in "\"'":
            j = i + 1
            while j < n and line[j] != ch:
                j += 2 if ch == '"' and line[j] == "\\" else 1
            i = j + 1
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return depth, ml


Block = tuple[str | None, bool, list[str]]  # (table name, is array-of-tables, lines)


def blocks(text: str) -> list[Block]:
    """The file as its preamble plus one block per table header, lines kept verbatim."""
    out_b: list[Block] = [(None, False, [])]
    depth, ml = 0, None
    for line in text.splitlines(keepends=True):
        if depth == 0 and ml is None:
            m = _HEADER.match(line)
            if m and bool(m.group(1)) == bool(m.group(3)):
                out_b.append((_norm(m.group(2)), bool(m.group(1)), [line]))
                continue
        out_b[-1][2].append(line)
        depth, ml = _scan(line, depth, ml)
    return out_b


def _join(bs: list[Block]) -> str:
    return "".join("".join(b[2]) for b in bs)


def _key_span(lines: list[str], key: str) -> tuple[int, int] | None:
    """[start, end) of `key = value` (a value may span lines) among a block's lines."""
    pat = re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*=")
    depth, ml = 0, None
    i = 0
    while i < len(lines):
        line = lines[i]
        if depth == 0 and ml is None and pat.match(line):
            d, m2 = _scan(line, 0, None)
            j = i + 1
            while (d > 0 or m2 is not None) and j < len(lines):
                d, m2 = _scan(lines[j], d, m2)
                j += 1
            return i, j
        depth, ml = _scan(line, depth, ml)
        i += 1
    return None


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(round(v, 4))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def set_key(text: str, table: str, key: str, value: Any | None) -> str:
    """Set (or with None remove) `key` in `[table]`, adding the table at the end if absent."""
    bs = blocks(text)
    for name, is_array, lines in bs:
        if name == table and not is_array:
            span = _key_span(lines[1:], key)
            if span is not None:
                a, b = span[0] + 1, span[1] + 1
                lines[a:b] = [] if value is None else [f"{key} = {toml_value(value)}\n"]
            elif value is not None:
                at = len(lines)
                while at > 1 and not lines[at - 1].strip():
                    at -= 1
                lines.insert(at, f"{key} = {toml_value(value)}\n")
            return _join(bs)
    if value is None:
        return text
    sep = "" if text.endswith("\n\n") or not text else ("\n" if text.endswith("\n") else "\n\n")
    return text + f"{sep}[{table}]\n{key} = {toml_value(value)}\n"


def set_zones(text: str, zones: list[dict[str, Any]]) -> str:
    """Replace every [[zones]] table with `zones`, where the first one was (or at the end)."""
    bs = blocks(text)
    rendered: list[str] = []
    for z in zones:
        rendered.append("[[zones]]\n")
        for k in ("name", "kind", "polygon", "clips"):
            if k in z:
                rendered.append(f"{k} = {toml_value(z[k])}\n")
        rendered.append("\n")
    first = next((i for i, (n, _a, _l) in enumerate(bs)
                  if n == "zones" or (n or "").startswith("zones.")), None)
    kept = [b for b in bs if not (b[0] == "zones" or (b[0] or "").startswith("zones."))]
    if first is None:
        body = _join(kept)
        if not rendered:
            return body
        sep = "" if body.endswith("\n\n") or not body else ("\n" if body.endswith("\n")
                                                             else "\n\n")
        return body + sep + "".join(rendered).rstrip("\n") + "\n"
    # Nothing before the first zones table is a zones table: kept[:first] == bs[:first].
    new: list[Block] = [*kept[:first], (None, False, rendered), *kept[first:]]
    return _join(new)


def _set_in(d: dict[str, Any], path: str, key: str, value: Any | None) -> None:
    node = d
    for p in path.split("."):
        node = node.setdefault(p, {})
    if value is None:
        node.pop(key, None)
    else:
        node[key] = value


def apply_edits(text: str, zones: list[dict[str, Any]] | None,
                keys: list[tuple[str, str, Any | None]]) -> tuple[str, dict[str, Any]]:
    """New text and its data; raises EditError unless the new text parses to exactly the
    old data with these edits."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EditError(f"the config is not valid TOML now ({e}); fix it by hand first"
                        ) from None
    expected = copy.deepcopy(data)
    new_text = text
    if zones is not None:
        new_text = set_zones(new_text, zones)
        if zones:
            expected["zones"] = [dict(z) for z in zones]
        else:
            expected.pop("zones", None)
    for table, key, value in keys:
        new_text = set_key(new_text, table, key, value)
        _set_in(expected, table, key, value)
    try:
        got = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as e:
        raise EditError(f"editing this file's text would break it ({e}); it writes these "
                        "tables in a form the editor does not handle (e.g. inline tables): "
                        "edit by hand") from None
    if got != expected:
        raise EditError("the edit would change more than the calibration (the file uses a "
                        "layout the editor does not handle, e.g. dotted keys or inline "
                        "tables for these sections): edit by hand")
    return new_text, got


# ---------------------------------------------------------------------------------------
# The calibration session and its HTTP server
# ---------------------------------------------------------------------------------------


def calibration_table() -> str | None:
    """Where this controller keeps the camera calibration, if it has one."""
    # Writing [visibility.calibration] is switched off until the in-place TOML editor
    # handles that table's full field set (its own check refused the edit); the page
    # then saves zones and the signal box and says the calibration is read-only.
    return None


def _num(v: Any) -> float | int:
    f = float(v)
    return int(f) if f.is_integer() else round(f, 1)


class Session:
    """One config file being calibrated against one snapshot."""

    def __init__(self, config: Path, jpeg: bytes, width: int, height: int) -> None:
        self.config = config
        self.jpeg = jpeg
        self.width, self.height = width, height
        self.lock = threading.Lock()
        self.saves = 0

    def state(self) -> dict[str, Any]:
        data = tomllib.loads(self.config.read_text())
        table = calibration_table()
        cal: dict[str, Any] = {}
        if table:
            node: Any = data
            for p in table.split("."):
                node = node.get(p, {}) if isinstance(node, dict) else {}
            cal = {k: node.get(k) for k in CALIBRATION_KEYS}
        sig = (data.get("signal") or {}).get("camera") or {}
        return {
            "pole_id": (data.get("pole") or {}).get("id", "pole-0001"),
            "config": str(self.config),
            "frame": {"width": self.width, "height": self.height},
            "zones": [{"name": z.get("name"), "kind": z.get("kind", "crosswalk"),
                       "polygon": z.get("polygon", [])} for z in data.get("zones", [])],
            "signal_roi": sig.get("roi"),
            "signal_source": (data.get("signal") or {}).get("source", "none"),
            "calibration_table": table,
            "calibration": cal,
        }

    def save(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Apply the page's edits; (HTTP status, JSON answer)."""
        try:
            zones_in = body.get("zones")
            if not isinstance(zones_in, list):
                raise ValueError("zones must be a list")
            with self.lock:
                text = self.config.read_text()
                old = {z.get("name"): z for z in tomllib.loads(text).get("zones", [])
                       if isinstance(z, dict)}
                zones = []
                for z in zones_in:
                    zd: dict[str, Any] = {
                        "name": str(z["name"]), "kind": str(z.get("kind", "crosswalk")),
                        "polygon": [[_num(p[0]), _num(p[1])] for p in z["polygon"]]}
                    clips = (old.get(zd["name"]) or {}).get("clips")
                    if clips:
                        zd["clips"] = clips  # the page does not edit clips: keep them
                    zones.append(zd)
                keys: list[tuple[str, str, Any | None]] = []
                if "signal_roi" in body:
                    roi = body["signal_roi"]
                    keys.append(("signal.camera", "roi",
                                 None if roi is None else [round(float(v)) for v in roi]))
                table = calibration_table()
                cal = body.get("calibration")
                if table and isinstance(cal, dict):
                    any_set = False
                    for k in CALIBRATION_KEYS:
                        if k in cal:
                            v = cal[k]
                            v = None if v in (None, "") else float(v)
                            any_set |= v is not None
                            keys.append((table, k, v))
                    if any_set:
                        keys.append((table, "image_size", [self.width, self.height]))
                new_text, data = apply_edits(text, zones, keys)
                try:
                    parse(data, str(self.config))
                except ConfigError as e:
                    return 400, {"ok": False, "problems": [{"key": k, "reason": r}
                                                           for k, r in e.problems]}
                bak = self.config.with_name(self.config.name + ".bak")
                bak.write_text(text)
                tmp = self.config.with_name(self.config.name + ".tmp")
                tmp.write_text(new_text)
                with contextlib.suppress(OSError):
                    os.chmod(tmp, self.config.stat().st_mode & 0o7777)
                os.replace(tmp, self.config)
                self.saves += 1
        except EditError as e:
            return 409, {"ok": False, "problems": [{"key": "(file)", "reason": str(e)}]}
        except (KeyError, TypeError, ValueError, IndexError) as e:
            return 400, {"ok": False, "problems": [{"key": "(request)",
                                                    "reason": f"malformed edit: {e}"}]}
        return 200, {"ok": True, "config": str(self.config),
                     "config_version": config_version(self.config), "zones": len(zones),
                     "backup": str(bak)}


def _handler(session: Session) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "polectl-calibrate"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the terminal shows what matters

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/snapshot.jpg":
                self._send(200, session.jpeg, "image/jpeg")
            elif path == "/api/state":
                try:
                    self._json(200, session.state())
                except (OSError, tomllib.TOMLDecodeError) as e:
                    self._json(500, {"ok": False, "problems": [{"key": "(file)",
                                                                "reason": str(e)}]})
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            if self.path != "/api/save":
                self._send(404, b"not found", "text/plain")
                return
            # JSON only: a cross-site form cannot post it without a CORS preflight.
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                self._json(415, {"ok": False, "problems": [
                    {"key": "(request)", "reason": "send application/json"}]})
                return
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                self._json(413, {"ok": False, "problems": [
                    {"key": "(request)", "reason": "too large"}]})
                return
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                self._json(400, {"ok": False, "problems": [
                    {"key": "(request)", "reason": f"not JSON: {e}"}]})
                return
            code, answer = session.save(body)
            self._json(code, answer)

    return Handler


class CalibrationServer:
    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.session = session
        self.httpd = ThreadingHTTPServer((host, port), _handler(session))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> CalibrationServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def open_session(config: Path, image: Path | None = None, source: str | None = None
                 ) -> Session:
    """Load the config, grab and anonymise the snapshot."""
    import cv2

    from polectl.commission import grab_frame, make_snapshot

    cfg = load(config)
    if image is not None:
        img = cv2.imread(str(image))
        if img is None:
            raise OSError(f"--image {image}: not a readable image")
    else:
        src = source or cfg.camera.source
        img = grab_frame(src)
    snap = make_snapshot(cfg, img, draw_zones=False)
    return Session(config, snap.clean_jpeg, snap.width, snap.height)


def calibrate_command(
    config: Annotated[Path, typer.Argument(help="The pole's TOML config; zones and "
                                           "calibration are saved back into it.")],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine "
                                      "only; the page has no login).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8765,
    image: Annotated[Path | None, typer.Option(help="Calibrate on this image instead of a "
                                               "frame from the camera.")] = None,
    source: Annotated[str | None, typer.Option(help="Camera source to grab from instead of "
                                               "camera.source.")] = None,
    open_browser: Annotated[bool, typer.Option(help="Open the page in a browser.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the URL and state as JSON "
                                          "on start.")] = False,
) -> None:
    """Serve a local page to draw and edit zones on an anonymised snapshot and set the camera
    calibration; every save is validated and written back into the TOML config."""
    try:
        with err.status("grabbing and anonymising a snapshot ..."):
            session = open_session(config, image, source)
    except ConfigError as e:
        for k, r in e.problems:
            err.print(f"[red]{config}[/]: [bold]{k}[/]: {r}")
        err.print(f"Fix the keys above first (`polectl config check {config}`).")
        raise typer.Exit(2) from None
    except (OSError, ValueError) as e:
        err.print(f"[red]no snapshot[/]: {e}. Check that the camera is reachable from here, "
                  "or pass --image FILE (a still from this camera).")
        raise typer.Exit(1) from None
    try:
        server = CalibrationServer(session, host, port).start()
    except OSError as e:
        err.print(f"[red]cannot listen on {host}:{port}[/]: {e.strerror or e}. Pass another "
                  "--port (0 picks a free one).")
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps({"url": server.url, **session.state()}))
    else:
        out.print(f"calibrating {config} on a {session.width}x{session.height} snapshot: "
                  f"open [bold]{server.url}[/] (Ctrl-C when done)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            err.print("[yellow]listening beyond this machine: anyone who reaches it can "
                      "change the config[/]")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        out.print(f"{session.saves} save(s) to {config}")


PAGE = r"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>polectl calibrate</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;gap:1em;padding:1em;color:#222}
#view{flex:0 0 auto} canvas{border:1px solid #888;cursor:crosshair;display:block}
#side{flex:1 1 320px;min-width:300px} fieldset{margin:0 0 1em 0}
#zone-list li{margin:.3em 0} #zone-list li.sel{background:#eef} input[type=number]{width:6em}
#status{margin-top:.6em;padding:.4em;white-space:pre-wrap}
.ok{background:#dfd} .bad{background:#fdd}
button{margin:.2em .2em .2em 0} .hint{color:#555;font-size:.9em}
</style></head><body>
<div id=view><canvas id=canvas></canvas>
<p class=hint id=mode-hint>Click "New zone", click the corners on the image, then "Finish zone".
Drag a corner to move it.</p></div>
<div id=side>
<h2 id=title>Calibrate</h2>
<fieldset><legend>Zones</legend>
<label>name <input id=zone-name value="" placeholder="e.g. crosswalk-north"></label>
<label>kind <select id=zone-kind><option>crosswalk</option><option>carriageway</option>
<option>waiting</option></select></label><br>
<button id=new-zone>New zone</button><button id=finish disabled>Finish zone</button>
<button id=cancel disabled>Cancel</button>
<ul id=zone-list></ul></fieldset>
<fieldset><legend>Signal head</legend>
<button id=draw-roi>Draw signal head box</button><button id=clear-roi>Clear</button>
<div id=roi-text class=hint></div></fieldset>
<fieldset id=cal-box><legend>Camera calibration</legend>
<div id=cal-fields>
<label>mounting height (m) <input type=number step=0.1 id=cal-mounting_height_m></label><br>
<label>tilt below horizontal (deg) <input type=number step=0.1 id=cal-tilt_deg></label><br>
<label>vertical field of view (deg) <input type=number step=0.1 id=cal-vfov_deg></label><br>
<label>roll (deg) <input type=number step=0.1 id=cal-roll_deg></label></div>
<div id=cal-none class=hint hidden>This controller's config has no camera calibration
section.</div></fieldset>
<button id=save><b>Save to config</b></button>
<div id=status></div>
</div>
<script>
"use strict";
const cv = document.getElementById("canvas"), ctx = cv.getContext("2d");
const img = new Image();
let S = null, zones = [], drawing = null, roi = null, mode = "idle", drag = null, sel = -1,
    roiStart = null;
const COL = {carriageway: "#e63232", crosswalk: "#ffc800", waiting: "#3cc83c"};
const $ = id => document.getElementById(id);

function pos(ev) {
  const r = cv.getBoundingClientRect();
  return [Math.round((ev.clientX - r.left) * cv.width / r.width),
          Math.round((ev.clientY - r.top) * cv.height / r.height)];
}
function draw() {
  ctx.clearRect(0, 0, cv.width, cv.height);
  if (img.complete) ctx.drawImage(img, 0, 0);
  zones.forEach((z, i) => {
    const c = COL[z.kind] || "#fff";
    ctx.beginPath();
    z.polygon.forEach((p, j) => j ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1]));
    ctx.closePath(); ctx.globalAlpha = i === sel ? .35 : .2; ctx.fillStyle = c; ctx.fill();
    ctx.globalAlpha = 1; ctx.lineWidth = i === sel ? 3 : 2; ctx.strokeStyle = c; ctx.stroke();
    ctx.fillStyle = c; z.polygon.forEach(p => ctx.fillRect(p[0] - 4, p[1] - 4, 8, 8));
    const p0 = z.polygon[0]; ctx.font = "14px sans-serif"; ctx.fillStyle = "#fff";
    ctx.fillText(z.name + " (" + z.kind + ")", p0[0] + 6, p0[1] - 6);
  });
  if (drawing) {
    ctx.beginPath(); drawing.forEach((p, j) => j ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1]));
    ctx.strokeStyle = "#0af"; ctx.lineWidth = 2; ctx.stroke();
    ctx.fillStyle = "#0af"; drawing.forEach(p => ctx.fillRect(p[0] - 4, p[1] - 4, 8, 8));
  }
  if (roi) {
    ctx.strokeStyle = "#f0f"; ctx.lineWidth = 2; ctx.strokeRect(roi[0], roi[1], roi[2], roi[3]);
  }
  $("roi-text").textContent = roi ? "roi = [" + roi.join(", ") + "]" : "none";
}
function list() {
  const ul = $("zone-list"); ul.innerHTML = "";
  zones.forEach((z, i) => {
    const li = document.createElement("li"); li.className = i === sel ? "sel" : "";
    li.dataset.name = z.name;
    const name = document.createElement("input"); name.value = z.name; name.className = "zname";
    name.onchange = () => { z.name = name.value.trim(); li.dataset.name = z.name; draw(); };
    const kind = document.createElement("select"); kind.className = "zkind";
    ["crosswalk", "carriageway", "waiting"].forEach(k => {
      const o = document.createElement("option");
      o.text = k; o.selected = k === z.kind; kind.add(o);
    });
    kind.onchange = () => { z.kind = kind.value; draw(); };
    const del = document.createElement("button");
    del.textContent = "Delete"; del.className = "zdel";
    del.onclick = () => { zones.splice(i, 1); sel = -1; list(); draw(); };
    const pts = document.createElement("span"); pts.className = "hint";
    pts.textContent = " " + z.polygon.length + " points";
    li.onclick = ev => { if (ev.target === li || ev.target === pts) { sel = i; list(); draw(); } };
    li.append(name, " ", kind, " ", del, pts); ul.append(li);
  });
}
function setMode(m) {
  mode = m; $("finish").disabled = m !== "draw"; $("cancel").disabled = m === "idle";
  $("mode-hint").textContent = m === "draw" ? "Click the zone's corners, then Finish zone." :
    m === "roi" ? "Drag a box around the signal head." :
    "Click New zone to draw one; drag a corner to move it.";
}
$("new-zone").onclick = () => { drawing = []; setMode("draw"); draw(); };
$("cancel").onclick = () => { drawing = null; setMode("idle"); draw(); };
$("finish").onclick = () => {
  if (!drawing || drawing.length < 3) { status("A zone needs at least 3 points.", false); return; }
  let name = $("zone-name").value.trim() || ("zone-" + (zones.length + 1));
  zones.push({name: name, kind: $("zone-kind").value, polygon: drawing});
  sel = zones.length - 1; drawing = null; $("zone-name").value = "";
  setMode("idle"); list(); draw();
};
$("draw-roi").onclick = () => setMode("roi");
$("clear-roi").onclick = () => { roi = null; draw(); };
cv.addEventListener("mousedown", ev => {
  const p = pos(ev);
  if (mode === "draw") { drawing.push(p); draw(); return; }
  if (mode === "roi") { roiStart = p; roi = [p[0], p[1], 0, 0]; return; }
  const tol = 8 * cv.width / cv.getBoundingClientRect().width;
  zones.forEach((z, i) => z.polygon.forEach((q, j) => {
    if (!drag && Math.abs(q[0] - p[0]) <= tol && Math.abs(q[1] - p[1]) <= tol) {
      drag = [i, j]; sel = i;
    }
  }));
  if (drag) { list(); draw(); }
});
cv.addEventListener("mousemove", ev => {
  const p = pos(ev);
  if (mode === "roi" && roiStart) {
    roi = [Math.min(p[0], roiStart[0]), Math.min(p[1], roiStart[1]),
           Math.abs(p[0] - roiStart[0]), Math.abs(p[1] - roiStart[1])]; draw(); return; }
  if (drag) {
    zones[drag[0]].polygon[drag[1]] = [Math.max(0, Math.min(cv.width - 1, p[0])),
                                       Math.max(0, Math.min(cv.height - 1, p[1]))]; draw(); }
});
window.addEventListener("mouseup", () => {
  if (mode === "roi" && roiStart) {
    roiStart = null; if (roi && (roi[2] < 2 || roi[3] < 2)) roi = null;
    setMode("idle"); draw();
  }
  drag = null;
});
cv.addEventListener("dblclick", () => { if (mode === "draw") $("finish").click(); });
function status(msg, ok) {
  const s = $("status"); s.textContent = msg; s.className = ok ? "ok" : "bad";
}
$("save").onclick = async () => {
  const body = {zones: zones, signal_roi: roi};
  if (S.calibration_table) {
    body.calibration = {};
    ["mounting_height_m", "tilt_deg", "vfov_deg", "roll_deg"].forEach(k => {
      const v = $("cal-" + k).value; body.calibration[k] = v === "" ? null : Number(v); });
  }
  status("saving ...", true);
  const r = await fetch("/api/save", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  const a = await r.json();
  if (a.ok) status("Saved " + a.zones + " zone(s) to " + a.config + " (config " +
                   a.config_version + "; previous file kept as " + a.backup + ")", true);
  else status("Not saved:\n" + a.problems.map(p => p.key + ": " + p.reason).join("\n"), false);
};
(async () => {
  S = await (await fetch("/api/state")).json();
  $("title").textContent = "Calibrate " + S.pole_id;
  cv.width = S.frame.width; cv.height = S.frame.height;
  zones = S.zones.map(z => ({name: z.name, kind: z.kind,
                             polygon: z.polygon.map(p => [p[0], p[1]])}));
  roi = S.signal_roi;
  if (S.calibration_table) {
    Object.entries(S.calibration).forEach(([k, v]) => {
      if (v !== null && v !== undefined) $("cal-" + k).value = v;
    });
  } else { $("cal-fields").hidden = true; $("cal-none").hidden = false; }
  img.onload = () => { draw(); document.body.dataset.ready = "1"; };
  img.src = "/snapshot.jpg";
  list(); setMode("idle"); draw();
})();
</script></body></html>
"""
