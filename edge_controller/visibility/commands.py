"""Command bodies for dimming, in the style of `edge_controller.uplink.commands`.

`LampOverride` and `DimmingSchedule` are strict pydantic models with a `type`
literal, ready to join the discriminated `Body` union of the command
envelope. `DimmingService.apply_override` / `apply_schedule` carry them out
(sans-I/O: they take `now` and return a `CommandOutcome`).

    {"type": "lamp.override", "level": 100, "duration_s": 1800}
    {"type": "lamp.override", "level": 0, "duration_s": 0}       # cancel
    {"type": "dimming.schedule", "night_level": 60,
     "periods": [{"start": "00:30", "end": "05:00", "level": 40}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_controller.visibility.config import HHMM


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


@dataclass(frozen=True)
class CommandOutcome:
    status: str  # ok | rejected | failed
    reason: str  # done | bad_value | disabled
    detail: str
