"""Upstream commands: the envelope, its bodies, result reasons; sans-I/O parsing.

The envelope is frozen in docs/architecture.md: id, issued_at, optional
expires_at, optional sig, body; since 1.8.0 an optional pole_id, and a signed
command (one with sig) must carry expires_at and pole_id (docs/security.md).
`parse(payload, now)` turns the bytes of one message into an `Envelope` or a
`Rejection`; every rejection carries a machine-readable reason and a
human-readable detail. What a command does is up to the feature that
registered it (edge_controller.uplink.dispatcher).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
POLE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
SIG_PATTERN = r"^[A-Za-z0-9+/]{86}==$"  # base64 of a 64-byte Ed25519 signature
HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
MAX_PAYLOAD = 8192

Status = Literal["ok", "rejected", "failed"]

# Every `reason` the pole puts in a cmd/result, by who decides it (docs/mqtt.md).
REASONS: dict[str, str] = {
    "done": "the command was carried out",
    "invalid_json": "not UTF-8 JSON, or not a JSON object",
    "too_large": f"the message is over {MAX_PAYLOAD} bytes",
    "schema": "the envelope or body does not match the command schema",
    "expired": "received after its expires_at",
    "not_yet_valid": "issued_at is further in the future than the allowed clock skew",
    "signature": "unsigned while a signature is required, or the signature does not verify",
    "wrong_pole": "the command names another pole in pole_id",
    "lifetime": "expires_at is further after issued_at than the pole's maximum command lifetime",
    "conflict": "the id was answered before for a command with another body",
    "unsupported": "the pole cannot do it (feature off, no such device)",
    "bad_value": "a value the pole's configuration does not allow",
    "link_down": "the I/O board is not connected",
    "timeout": "the I/O board did not answer",
    "incompatible": "the I/O board speaks another link protocol major version",
    "firmware_nak": "the I/O board refused the command",
    "device_unreachable": "a peripheral did not answer",
    "device_nak": "a peripheral refused the command",
    "device_error": "a peripheral's port or connection failed",
}


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


class LampOverride(_Strict):
    type: Literal["lamp.override"]
    level: int = Field(ge=0, le=100, description="Level (%); clamped to [floor, design], "
                       "0 switches the lamp off.")
    duration_s: int | float = Field(ge=0, le=7 * 86400, description="How long; 0 cancels "
                                    "a running override.")


class Period(_Strict):
    start: Annotated[str, Field(pattern=HHMM)]
    end: Annotated[str, Field(pattern=HHMM)]
    level: int = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _not_empty(self) -> Period:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class DimmingSchedule(_Strict):
    type: Literal["dimming.schedule"]
    night_level: int | None = Field(None, ge=0, le=100, description="New night level (%); "
                                    "omitted: unchanged.")
    periods: list[Period] = Field(default_factory=list, max_length=8,
                                  description="Replaces the night periods (empty: none).")


BodyType = LampSet | Reboot | Ping | ScreenText | LampOverride | DimmingSchedule
Body = Annotated[BodyType, Field(discriminator="type")]
BODIES: tuple[type[_Strict], ...] = (LampSet, LampOverride, DimmingSchedule, ScreenText,
                                     Reboot, Ping)


def command_type(body: type[BaseModel]) -> str:
    """The `type` literal of a body model."""
    return str(body.model_fields["type"].annotation.__args__[0])  # type: ignore[union-attr]


# Every command type the API defines, in the order docs/mqtt.md lists them.
COMMAND_TYPES: tuple[str, ...] = tuple(command_type(b) for b in BODIES)


class Envelope(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    issued_at: Annotated[str, Field(pattern=TS_PATTERN)]
    expires_at: Annotated[str, Field(pattern=TS_PATTERN)] | None = None
    pole_id: Annotated[str, Field(pattern=POLE_ID_PATTERN)] | None = None  # since 1.8.0
    sig: Annotated[str, Field(pattern=SIG_PATTERN)] | None = None
    body: Body

    @model_validator(mode="after")
    def _signed_is_bound(self) -> Envelope:
        # Since 1.8.0: a signature covers the pole and a deadline, or it is not accepted
        # (a signed command could otherwise run on every pole, at any time).
        if self.sig is not None:
            missing = [k for k in ("expires_at", "pole_id") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a signed command must carry {' and '.join(missing)}")
        return self

    @field_validator("expires_at", "pole_id", "sig", mode="before")
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


@dataclass(frozen=True)
class CommandOutcome:
    """How a command ended, shaped like a cmd/result (whoever carried it out)."""

    status: Status
    reason: str  # a key of REASONS
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
