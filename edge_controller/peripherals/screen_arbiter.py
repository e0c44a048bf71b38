"""Who owns the LED screen, sans-I/O: backend text, crossing warnings, fog warnings, idle.

Priority, highest first (docs/peripherals.md, "The screen arbiter"):

| source | shows | until |
| --- | --- | --- |
| crossing | the bilingual red-light warning | `crossing_s` after the violation |
| fog | the drivers' warning with the band | visibility recovers (with hysteresis) |
| backend | the last `screen.text` | its own display time |
| idle | `idle_text` (may be empty: the screen's own content) | always |

A warning that ends gives the screen back to whatever is below it, so a backend
message still inside its display time is shown again. Every change is a `Shown`
with the reason, which the adapter writes to the screen and reports upstream.
Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Source = Literal["crossing", "fog", "backend", "idle"]
PRIORITY: dict[Source, int] = {"crossing": 3, "fog": 2, "backend": 1, "idle": 0}
FOG_BANDS = ("<50", "50-200")  # "below 200 m"
CLEAR_BANDS = ("200-1000", ">=1000")


class ScreenWarningsConfig(BaseModel):
    """`[screen_warnings]`: what the pole shows on its LED screen by itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Show crossing and fog warnings on the screen "
                          "(needs an led_screen device).")
    crossing_text: list[str] = Field(
        default_factory=lambda: ["Red light: please wait", "红灯 请勿通行"],
        description="Crossing warning, one entry per language, shown in this order.")
    crossing_s: float = Field(8.0, gt=0, le=600, description="How long the crossing "
                              "warning stays after a violation.")
    crossing_cooldown_s: float = Field(
        20.0, ge=0, le=3600, description="No new crossing warning this soon after the "
        "last one started (a repeat while shown extends it instead).")
    crossing_quiet_hours: tuple[str, str] | None = Field(
        None, description="Local [start, end) without crossing warnings on the screen. "
        "Unlike the audio's quiet hours, none by default: at night the screen may be the "
        "only warning.")
    fog_text: list[str] = Field(
        default_factory=lambda: ["Fog: visibility < {limit} m, slow down",
                                 "大雾 能见度低 减速慢行"],
        description="Drivers' fog warning; {band} is the visibility band, {limit} its "
        "upper bound in metres.")
    fog_min_confidence: float = Field(0.5, ge=0, le=1, description="A fog band needs at "
                                      "least this confidence to raise the warning.")
    fog_on_s: float = Field(10.0, ge=0, le=3600, description="Fog must hold this long "
                            "before the warning shows.")
    fog_off_s: float = Field(60.0, ge=0, le=3600, description="Clear visibility must hold "
                             "this long before the warning clears (an unknown band holds "
                             "the warning as it is).")
    idle_text: str = Field("", description="Shown when nothing else is: empty leaves the "
                           "screen's own content.")
    device_id: str | None = Field(None, description="The screen that shows the warnings "
                                  "(and whose screen.text goes through the arbiter); unset: "
                                  "the pole's only led_screen.")
    page_s: float = Field(3.0, ge=1, le=60, description="How long each page of a text too "
                          "long for the screen is shown (screens that do not scroll).")
    hold_s: float = Field(30.0, ge=5, le=3600, description="Display time sent for content "
                          "without an end (fog warning, idle_text); it is sent again "
                          "refresh_margin_s before it runs out. On a screen that cannot be "
                          "cleared (smartpole-ascii-v1) it is also the longest a cleared "
                          "fog warning can linger.")
    refresh_margin_s: float = Field(5.0, ge=0.5, le=60, description="Content without an end "
                                    "is sent again this long before its display time runs "
                                    "out.")
    brightness: int | None = Field(None, ge=0, le=100, description="Brightness (%) for "
                                   "warnings, where the screen has it; none keeps its own.")
    colour: str = Field("red", description="Colour of warnings, where the screen has "
                        "colours.")

    @model_validator(mode="after")
    def _margin(self) -> ScreenWarningsConfig:
        if self.refresh_margin_s >= self.hold_s:
            raise ValueError("refresh_margin_s must be below hold_s")
        return self

    @field_validator("crossing_text", "fog_text")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v or not all(s.strip() for s in v):
            raise ValueError("needs at least one non-empty text")
        return v


@dataclass(frozen=True)
class Shown:
    source: Source
    text: str  # lines joined by "\n"
    reason: str  # why this content is on the screen
    since: float  # when changed() first returned it (current(): the time asked)
    until: float | None = None  # when it ends by itself; None: when something else starts
    brightness: int | None = None
    colour: str | None = None


def width(s: str) -> int:
    """Display columns: East Asian wide and fullwidth characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in s)


def pages(text: str, cols: int, rows: int) -> list[str]:
    """The text laid out on a `cols` x `rows` screen: words wrapped, a word longer than a
    line broken between characters (never inside one), lines grouped into pages."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            cand = f"{line} {word}" if line else word
            if width(cand) <= cols:
                line = cand
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # CJK has no spaces: break between characters
                if width(line + ch) > cols:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return ["\n".join(lines[i:i + rows]) for i in range(0, len(lines), rows)] or [""]


def _hhmm(s: str) -> int:
    h, m = s.split(":")
    return int(h) * 60 + int(m)


class ScreenArbiter:
    def __init__(self, cfg: ScreenWarningsConfig, timezone: str = "UTC") -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(timezone)
        self._backend: tuple[str, float | None] | None = None  # text, until
        self._crossing_until: float | None = None
        self._crossing_started: float | None = None
        self._crossing_zone = ""
        self._fog_since: float | None = None  # fog seen (not yet shown) since
        self._clear_since: float | None = None
        self._fog_band: str | None = None  # the warning is up, for this band
        self._last: Shown | None = None

    # ---- inputs ---------------------------------------------------------------------

    def backend_text(self, text: str, seconds: float | None, now: float) -> None:
        """A `screen.text` from the backend; an empty text clears it."""
        self._backend = (text, None if seconds is None else now + seconds) if text else None

    def violation(self, zone: str, now: float) -> bool:
        """A confirmed violation; True when it raised (or extended) the warning."""
        c = self.cfg
        if not c.enabled or self._quiet(now):
            return False
        if self._crossing_until is not None and now < self._crossing_until:
            self._crossing_until = now + c.crossing_s  # still up: keep it up
            return True
        if self._crossing_started is not None and \
                now - self._crossing_started < c.crossing_cooldown_s:
            return False
        self._crossing_started = now
        self._crossing_until = now + c.crossing_s
        self._crossing_zone = zone
        return True

    def visibility(self, band: str, confidence: float, now: float) -> None:
        c = self.cfg
        if band in FOG_BANDS and confidence >= c.fog_min_confidence:
            self._clear_since = None
            if self._fog_band is not None:
                self._fog_band = band  # follow the band while the warning is up
                return
            if self._fog_since is None:
                self._fog_since = now
            if now - self._fog_since >= c.fog_on_s:
                self._fog_band = band
        elif band in CLEAR_BANDS:
            self._fog_since = None
            if self._fog_band is None:
                return
            if self._clear_since is None:
                self._clear_since = now
            if now - self._clear_since >= c.fog_off_s:
                self._fog_band = None
                self._clear_since = None
        else:
            # Unknown, or fog with too little confidence: nothing new is decided.
            self._fog_since = None
            self._clear_since = None

    # ---- output ---------------------------------------------------------------------

    def current(self, now: float) -> Shown:
        c = self.cfg
        if self._crossing_until is not None and now < self._crossing_until and c.enabled:
            return Shown("crossing", "\n".join(c.crossing_text),
                         f"violation in zone {self._crossing_zone}", now,
                         self._crossing_until, c.brightness, c.colour)
        if self._fog_band is not None and c.enabled:
            limit = "50" if self._fog_band == "<50" else "200"
            text = "\n".join(t.format(band=self._fog_band, limit=limit) for t in c.fog_text)
            return Shown("fog", text, f"visibility {self._fog_band} m", now, None,
                         c.brightness, c.colour)
        if self._backend is not None:
            text, until = self._backend
            if until is None or now < until:
                return Shown("backend", text, "screen.text", now, until)
            self._backend = None
        return Shown("idle", c.idle_text, "idle", now)

    def changed(self, now: float) -> Shown | None:
        """The new content when it differs from what was last returned, else None. A new
        end counts as a change (a crossing warning extended, a backend text sent again):
        the screen's display time must follow it."""
        cur = self.current(now)
        last = self._last
        if last is not None and (last.source, last.text, last.until) == (
                cur.source, cur.text, cur.until):
            return None
        self._last = cur
        return cur

    def backend_pending(self, now: float) -> bool:
        """A backend text waits under a warning (shown when the warning ends)."""
        return self._backend is not None and self.current(now).source in ("crossing", "fog")

    def _quiet(self, now: float) -> bool:
        qh = self.cfg.crossing_quiet_hours
        if qh is None:
            return False
        local = datetime.fromtimestamp(now, self.tz)
        m = local.hour * 60 + local.minute
        a, b = _hhmm(qh[0]), _hhmm(qh[1])
        return a <= m < b if a <= b else (m >= a or m < b)
