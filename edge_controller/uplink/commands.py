"""Upstream commands, sans-I/O: payload bytes and the time in, a command or a rejection out.

The envelope is frozen in docs/architecture.md: id, issued_at, optional
expires_at, optional sig (verified from a later release), body. Every
rejection carries a machine-readable reason and a human-readable detail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
MAX_PAYLOAD = 8192


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LampSet(_Strict):
    type: Literal["lamp.set"]
    level: int = Field(ge=0, le=100)
    fade_ms: int = Field(1000, ge=0, le=65535)


class Reboot(_Strict):
    type: Literal["reboot"]
    target: Literal["firmware", "controller"] = "firmware"


class Ping(_Strict):
    type: Literal["ping"]


Body = Annotated[LampSet | Reboot | Ping, Field(discriminator="type")]


class Envelope(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    issued_at: Annotated[str, Field(pattern=TS_PATTERN)]
    expires_at: Annotated[str, Field(pattern=TS_PATTERN)] | None = None
    sig: str | None = None
    body: Body


@dataclass(frozen=True)
class Rejection:
    id: str | None
    reason: str  # invalid_json | schema | expired | too_large
    detail: str


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def parse(payload: bytes, now: float) -> Envelope | Rejection:
    """Validate one command message; `now` is UTC epoch seconds."""
    if len(payload) > MAX_PAYLOAD:
        return Rejection(None, "too_large", f"payload of {len(payload)} bytes > {MAX_PAYLOAD}")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return Rejection(None, "invalid_json", f"not JSON: {e}")
    cid = data.get("id") if isinstance(data, dict) else None
    cid = cid if isinstance(cid, str) and len(cid) <= 64 else None
    try:
        env = Envelope.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(envelope)"
        return Rejection(cid, "schema", f"{where}: {first['msg']}")
    try:
        expires = _ts(env.expires_at) if env.expires_at else None
        _ts(env.issued_at)
    except ValueError as e:
        return Rejection(cid, "schema", f"bad timestamp: {e}")
    if expires is not None and now > expires:
        return Rejection(env.id, "expired", f"expired at {env.expires_at}")
    return env
