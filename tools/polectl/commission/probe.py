"""The pole as the city backend sees it over MQTT: everything it publishes, in arrival
order, and commands to it (signed when the pole requires it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiomqtt
from pydantic import BaseModel

from edge_controller.api import Result
from polectl.apiread import KINDS, model_for, read
from polectl.commands import Signer, command
from polectl.commands import load_signer as _load_signer

M = TypeVar("M", bound=BaseModel)
# Model -> the topic kind it is published on (state, birth, telemetry, events, cmd/result).
_KIND = {m: k for k, m in KINDS.items()}


class CommissionError(Exception):
    """Cannot even start (broker unreachable, pole never seen): the message says why."""


@dataclass
class Seen:
    t: float
    kind: str
    msg: BaseModel
    retain: bool


class PoleLink:
    """Everything the pole publishes, in arrival order, as the API's models (read
    tolerantly: unknown keys ignored), and a way to send it commands."""

    def __init__(self, client: aiomqtt.Client, base: str, signer: Signer | None = None) -> None:
        self.client = client
        self.base = base
        self.pole_id = base.rsplit("/", 1)[-1]
        self.signer = signer
        self.seen: list[Seen] = []
        self._cond = asyncio.Condition()
        self._n = 0

    async def pump(self) -> None:
        async for m in self.client.messages:
            topic = str(m.topic)
            if not topic.startswith(self.base + "/"):
                continue
            kind = topic[len(self.base) + 1:]
            model = model_for(kind)
            payload = m.payload if isinstance(m.payload, bytes) else b""
            try:
                msg = read(model, json.loads(payload)) if model and payload else None
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                continue
            if msg is not None:
                async with self._cond:
                    self.seen.append(Seen(time.monotonic(), kind, msg, bool(m.retain)))
                    self._cond.notify_all()

    async def wait_for(self, model: type[M], pred: Callable[[M], bool], within_s: float,
                       after: float = 0.0) -> M | None:
        """The newest `model` message seen since `after` for which `pred` holds, waiting
        up to `within_s` for one."""
        kind = _KIND[model]
        end = time.monotonic() + within_s
        async with self._cond:
            while True:
                for s in reversed(self.seen):
                    if s.kind == kind and s.t >= after and isinstance(s.msg, model) \
                            and pred(s.msg):
                        return s.msg
                left = end - time.monotonic()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), left)

    async def command(self, body: BaseModel, within_s: float) -> tuple[Result | None, float]:
        """Send `body` (one of the API's command bodies), signed and bound to this pole
        when there is a key; its result and the round trip in seconds."""
        self._n += 1
        cid = f"commission-{int(time.time())}-{self._n}"
        t = time.monotonic()
        msg = command(cid, body, self.pole_id, 60, self.signer)
        await self.client.publish(f"{self.base}/cmd", msg, qos=1)
        res = await self.wait_for(Result, lambda m: m.id == cid, within_s, t)
        return res, time.monotonic() - t


def load_signer(path: Path) -> Signer:
    """An Ed25519 private key (PEM) that signs commands for poles that require it."""
    try:
        return _load_signer(path)
    except ValueError as e:
        raise CommissionError(f"--sign-key {e}") from None
