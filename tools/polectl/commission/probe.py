"""The pole as the city backend sees it over MQTT: everything it publishes, in arrival
order, and commands to it (signed when the pole requires it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from edge_controller.clock import utc_iso


class CommissionError(Exception):
    """Cannot even start (broker unreachable, pole never seen): the message says why."""



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

            env["pole_id"] = self.base.rsplit("/", 1)[-1]  # signed: bound to this pole (1.8.0)
            env["sig"] = base64.b64encode(self.signer(signed_bytes(env))).decode()
        await self.client.publish(f"{self.base}/cmd", json.dumps(env), qos=1)
        res = await self.wait_for("cmd/result", lambda m: m.get("id") == cid, within_s, t)
        return res, time.monotonic() - t



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

