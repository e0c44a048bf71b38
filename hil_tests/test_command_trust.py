"""Commands you can trust, end to end: replays answered from the cache, signatures."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
)

from edge_controller.clock import utc_iso
from hil_tests.capture import Capture

pytestmark = pytest.mark.hil


def _send(cap: Capture, pole: str, env: dict[str, Any]) -> dict[str, Any]:
    t = cap.publish(f"smartpole/v1/{pole}/cmd", json.dumps(env))
    m = cap.wait_for(lambda m: m.kind == "cmd/result" and m.json()["id"] == env["id"], 10, t)
    out: dict[str, Any] = m.json()
    return out


def _sign(env: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    # Written from the contract in docs/mqtt.md, not from the product's code.
    body = json.dumps({k: v for k, v in env.items() if k != "sig"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()
    return {**env, "sig": base64.b64encode(key.sign(body)).decode()}


def test_a_replayed_command_is_answered_not_executed(
    target: Any, broker: Any, firmware_build: Any, tmp_path: Path
) -> None:
    from hil_tests.conftest import make_pole

    p = make_pole(target, broker, firmware_build, tmp_path)
    cap = Capture("127.0.0.1", broker.port, f"smartpole/v1/{p.pole_id}/#")
    try:
        cap.wait_for(lambda m: m.kind == "birth" and m.json()["firmware"], 15)
        first = {"id": "once-1", "issued_at": utc_iso(),
                 "body": {"type": "lamp.set", "level": 40, "fade_ms": 0}}
        assert _send(cap, p.pole_id, first)["status"] == "ok"
        assert _send(cap, p.pole_id, {"id": "once-2", "issued_at": utc_iso(), "body": {
            "type": "lamp.set", "level": 10, "fade_ms": 0}})["status"] == "ok"
        again = _send(cap, p.pole_id, first)  # the same id, e.g. a QoS 1 redelivery
        assert (again["status"], again["reason"]) == ("ok", "done")
        time.sleep(0.3)
        assert p.firmware is not None and p.firmware.panel.get()["lamp"]["level"] == 10
    finally:
        cap.close()
        p.stop()


def test_signatures_are_required_and_verified(
    target: Any, broker: Any, firmware_build: Any, tmp_path: Path
) -> None:
    from hil_tests.conftest import make_pole

    city = Ed25519PrivateKey.generate()
    pub = tmp_path / "city.pub.pem"
    pub.write_bytes(city.public_key().public_bytes(Encoding.PEM,
                                                   PublicFormat.SubjectPublicKeyInfo))
    p = make_pole(target, broker, firmware_build, tmp_path,
                  {"commands": {"public_key": str(pub), "require_signature": True}})
    cap = Capture("127.0.0.1", broker.port, f"smartpole/v1/{p.pole_id}/#")
    try:
        cap.wait_for(lambda m: m.kind == "birth" and m.json()["firmware"], 15)
        env = {"id": "s-1", "issued_at": utc_iso(),
               "body": {"type": "lamp.set", "level": 70, "fade_ms": 0}}
        r = _send(cap, p.pole_id, env)
        assert (r["status"], r["reason"]) == ("rejected", "signature")
        rogue = Ed25519PrivateKey.generate()
        r = _send(cap, p.pole_id, _sign({**env, "id": "s-2"}, rogue))
        assert (r["status"], r["reason"]) == ("rejected", "signature")
        tampered = _sign({**env, "id": "s-3"}, city)
        tampered["body"] = {**tampered["body"], "level": 100}
        r = _send(cap, p.pole_id, tampered)
        assert (r["status"], r["reason"]) == ("rejected", "signature")
        r = _send(cap, p.pole_id, _sign({**env, "id": "s-4"}, city))
        assert (r["status"], r["reason"]) == ("ok", "done")
        assert p.firmware is not None and p.firmware.panel.get()["lamp"]["level"] == 70
        future = _sign({**env, "id": "s-5", "issued_at": "2099-01-01T00:00:00Z"}, city)
        r = _send(cap, p.pole_id, future)
        assert (r["status"], r["reason"]) == ("rejected", "not_yet_valid")
    finally:
        cap.close()
        p.stop()
