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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_controller.visibility.commands import DimmingSchedule, LampOverride

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
SIG_PATTERN = r"^[A-Za-z0-9+/]{86}==$"  # base64 of a 64-byte Ed25519 signature
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


class ScreenText(_Strict):
    type: Literal["screen.text"]
    device_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")] | None = None
    text: Annotated[str, Field(min_length=1, max_length=512)]
    seconds: Annotated[float, Field(gt=0, le=86400)]


Body = Annotated[LampSet | Reboot | Ping | ScreenText | LampOverride | DimmingSchedule,
                 Field(discriminator="type")]


class Envelope(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    issued_at: Annotated[str, Field(pattern=TS_PATTERN)]
    expires_at: Annotated[str, Field(pattern=TS_PATTERN)] | None = None
    sig: Annotated[str, Field(pattern=SIG_PATTERN)] | None = None
    body: Body

    @field_validator("expires_at", "sig", mode="before")
    @classmethod
    def _no_null(cls, v: object) -> object:
        # Optional means "omit the key"; an explicit null is a malformed command.
        if v is None:
            raise ValueError("must be a string when present (omit the key instead)")
        return v


@dataclass(frozen=True)
class Rejection:
    id: str | None
    reason: str  # invalid_json | schema | expired | too_large
    detail: str


def parse_ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def parse(payload: bytes, now: float) -> Envelope | Rejection:
    """Validate one command message; `now` is UTC epoch seconds."""
    if len(payload) > MAX_PAYLOAD:
        return Rejection(None, "too_large", f"payload of {len(payload)} bytes > {MAX_PAYLOAD}")
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32.
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8, bad JSON, nested too deep
        return Rejection(None, "invalid_json", f"not JSON: {e}")
    if not isinstance(data, dict):
        return Rejection(None, "invalid_json", f"not a JSON object: {type(data).__name__}")
    cid = data.get("id")
    cid = cid if isinstance(cid, str) else None
    try:
        env = Envelope.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(envelope)"
        return Rejection(cid, "schema", f"{where}: {first['msg']}")
    try:
        expires = parse_ts(env.expires_at) if env.expires_at else None
        parse_ts(env.issued_at)
    except ValueError as e:
        return Rejection(cid, "schema", f"bad timestamp: {e}")
    if expires is not None and now > expires:
        return Rejection(env.id, "expired", f"expired at {env.expires_at}")
    return env
