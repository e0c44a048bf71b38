"""A real Home Assistant for tests: a config directory with pre-seeded `.storage`
(the MQTT config entry, finished onboarding, an owner with a long-lived token), the
process, and its REST API. Shares no code with edge_controller.profiles.

Home Assistant 2024.3 takes the broker only from a config entry, so the entry is
written into `.storage/core.config_entries`. The long-lived token is an HS256 JWT
whose issuer is a refresh token's id, signed with that refresh token's `jwt_key`
(homeassistant/auth/__init__.py, async_validate_access_token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HA_VENV = Path(os.environ.get("HA_VENV", "/opt/havenv"))
HA_VERSION = "2024.3.3"


def ha_python() -> Path | None:
    py = HA_VENV / "bin" / "python"
    if not py.exists():
        return None
    ok = subprocess.run([str(py), "-c", "import homeassistant.const as c; "
                         f"assert c.__version__ == {HA_VERSION!r}"], capture_output=True)
    return py if ok.returncode == 0 else None


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _jwt(issuer: str, key: str, now: int) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"iss": issuer, "iat": now, "exp": now + 10 * 365 * 86400}).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _store(key: str, version: int, data: dict[str, Any], minor: int = 1) -> str:
    return json.dumps({"version": version, "minor_version": minor, "key": key, "data": data},
                      indent=1)


def seed(config_dir: Path, mqtt_host: str, mqtt_port: int, http_port: int) -> str:
    """Write the config directory; return the long-lived access token."""
    storage = config_dir / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        "homeassistant:\n  name: smartpole test\n  unit_system: metric\n"
        "  time_zone: UTC\n  latitude: 0\n  longitude: 0\n  elevation: 0\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {http_port}\n"
        # api for REST, frontend for the device page screenshot (docs/backends.md).
        "api:\nfrontend:\nconfig:\nlogger:\n  default: warning\n  logs:\n"
        "    homeassistant.components.mqtt: info\n")
    uid, rid = secrets.token_hex(16), secrets.token_hex(16)
    jwt_key, cred = secrets.token_hex(64), secrets.token_hex(16)
    now = int(time.time())
    created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))
    auth = {
        "users": [{"id": uid, "group_ids": ["system-admin"], "is_owner": True,
                   "is_active": True, "name": "owner", "system_generated": False,
                   "local_only": False}],
        "groups": [{"id": "system-admin", "name": "Administrators"},
                   {"id": "system-users", "name": "Users"},
                   {"id": "system-read-only", "name": "Read Only"}],
        "credentials": [{"id": cred, "user_id": uid, "auth_provider_type": "homeassistant",
                         "auth_provider_id": None, "data": {"username": "owner"}}],
        "refresh_tokens": [{"id": rid, "user_id": uid, "client_id": None,
                            "client_name": "smartpole tests", "client_icon": None,
                            "token_type": "long_lived_access_token", "created_at": created,
                            "access_token_expiration": 10 * 365 * 86400.0,
                            "token": secrets.token_hex(64), "jwt_key": jwt_key,
                            "last_used_at": None, "last_used_ip": None,
                            "credential_id": None, "version": "2024.3.3"}],
    }
    (storage / "auth").write_text(_store("auth", 1, auth))
    (storage / "auth_provider.homeassistant").write_text(
        _store("auth_provider.homeassistant", 1, {"users": []}))
    (storage / "onboarding").write_text(_store(
        "onboarding", 4, {"done": ["user", "core_config", "analytics", "integration"]}))
    entry = {"entry_id": secrets.token_hex(16), "version": 1, "minor_version": 1,
             "domain": "mqtt", "title": f"{mqtt_host}:{mqtt_port}",
             "data": {"broker": mqtt_host, "port": mqtt_port, "discovery": True,
                      "discovery_prefix": "homeassistant"},
             "options": {}, "pref_disable_new_entities": False,
             "pref_disable_polling": False, "source": "user", "unique_id": None,
             "disabled_by": None}
    (storage / "core.config_entries").write_text(
        _store("core.config_entries", 1, {"entries": [entry]}))
    return _jwt(rid, jwt_key, now)


@dataclass
class HomeAssistant:
    config_dir: Path
    http_port: int
    token: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.config_dir / "ha.log"

    def start(self, python: Path) -> None:
        out = self.log.open("ab")
        # Its own session: stop() signals the whole group (HA starts helper processes).
        self.proc = subprocess.Popen(
            [str(python), "-m", "homeassistant", "--config", str(self.config_dir),
             "--log-file", str(self.config_dir / "home-assistant.log")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        if r.headers.get_content_type() != "application/json":
            return body.decode()  # /api/template answers text
        return json.loads(body or b"null")

    def wait_running(self, within_s: float) -> float:
        """Seconds until the REST API says RUNNING (the first start installs packages)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if self.request("GET", "/api/config", timeout=3).get("state") == "RUNNING":
                    return time.monotonic() - t0
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Home Assistant not RUNNING after {within_s} s: "
                           f"{self.log.read_text()[-3000:]}")

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    """`python -m tests.profiles.hass`: start HA once so it installs its requirements
    (the frontend included) into its venv; CI calls this after creating the venv."""
    import tempfile
    py = ha_python()
    assert py is not None, f"no Home Assistant {HA_VERSION} in {HA_VENV}"
    d = Path(tempfile.mkdtemp(prefix="ha-warm-"))
    port = free_port()
    ha = HomeAssistant(d, port, seed(d, "127.0.0.1", free_port(), port))
    ha.start(py)
    try:
        print(f"Home Assistant RUNNING after {ha.wait_running(900):.1f} s")
    finally:
        ha.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
