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
import hmac
import json
import os
import secrets
import threading
import tomllib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_controller.config import ConfigError, config_version, load, parse
from polectl.calibration_page import PAGE
from polectl.console import err, out, print_config_problems
from polectl.tomledit import EditError, apply_edits

CALIBRATION_KEYS = ("mounting_height_m", "tilt_deg", "vfov_deg", "roll_deg")
MAX_BODY = 1 << 20

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
        self.refused: Counter[str] = Counter()  # requests refused by Host/Origin/token

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


TOKEN_HEADER = "X-Calibrate-Token"
COOKIE = "polectl_calibrate"


# Long: the handler class it returns closes over the session, the token and the hosts.
def _handler(session: Session, token: str, hosts: frozenset[str]
             ) -> type[BaseHTTPRequestHandler]:
    """`token`: the per-session secret in the URL polectl prints; the page gets it as a
    SameSite=Strict cookie. `hosts`: the Host values this server answers to (so a DNS
    rebinding page, whose Host is its own name, is refused)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "polectl-calibrate"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the terminal shows what matters

        def _query_token(self) -> str | None:
            from urllib.parse import parse_qs, urlsplit

            got = parse_qs(urlsplit(self.path).query).get("t")
            return got[0] if got else None

        def _cookie_token(self) -> str | None:
            from http.cookies import CookieError, SimpleCookie

            try:
                c = SimpleCookie(self.headers.get("Cookie", ""))
            except CookieError:
                return None
            return c[COOKIE].value if COOKIE in c else None

        def _refused(self) -> str | None:
            """Why this request is refused (counted in session.refused), or None."""
            host = self.headers.get("Host", "")
            if host not in hosts:
                return f"Host {host!r} is not this server (open the URL polectl printed)"
            origin = self.headers.get("Origin")
            if origin is not None and origin.removeprefix("http://") not in hosts:
                return f"Origin {origin!r} is not this page"
            sent = (self.headers.get(TOKEN_HEADER) or self._cookie_token()
                    or self._query_token() or "")
            if not hmac.compare_digest(sent.encode(), token.encode()):
                return "no valid session token (open the URL polectl printed, with its ?t=)"
            return None

        def _gate(self) -> bool:
            why = self._refused()
            if why is None:
                return True
            session.refused[why.split(" ", 1)[0]] += 1
            self._json(403, {"ok": False, "problems": [{"key": "(request)", "reason": why}]})
            return False

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
            if not self._gate():
                return
            if path == "/":
                body = PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Set-Cookie", f"{COOKIE}={token}; Path=/; HttpOnly; "
                                 "SameSite=Strict")
                self.end_headers()
                self.wfile.write(body)
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
            if not self._gate():
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
        self.token = secrets.token_urlsafe(24)
        # Bind first, then the handler knows the real port (port 0: any free one).
        self.httpd = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
        bound = int(self.httpd.server_address[1])
        names = {host, "127.0.0.1", "localhost", "[::1]"} if host in (
            "127.0.0.1", "localhost", "::1") else {host if ":" not in host else f"[{host}]"}
        hosts = frozenset(f"{n}:{bound}" for n in names)
        self.httpd.RequestHandlerClass = _handler(session, self.token, hosts)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL (API clients send the token in X-Calibrate-Token)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    @property
    def page_url(self) -> str:
        """The URL to open: carries this session's token."""
        return f"{self.url}?t={self.token}"

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

    from polectl.snapshot import grab_frame, make_snapshot

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
        print_config_problems(e, f"Fix the keys above first (`polectl config check {config}`).")
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
        out.print_json(json.dumps({"url": server.page_url, **session.state()}))
    else:
        out.print(f"calibrating {config} on a {session.width}x{session.height} snapshot: "
                  f"open [bold]{server.page_url}[/] (Ctrl-C when done; the URL's token is "
                  "this session's key)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            err.print("[yellow]listening beyond this machine: anyone who reaches it can "
                      "change the config[/]")
    if open_browser:
        import webbrowser

        webbrowser.open(server.page_url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        out.print(f"{session.saves} save(s) to {config}")
