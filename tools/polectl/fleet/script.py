"""Scripted steps for `polectl fleet-sim --script`: what happens to which poles when."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Step:
    """One scripted step: at `at` seconds, on poles `poles` ("*", "3", "0-9")."""

    at: float
    poles: str
    do: str  # event | outage | lamp | sensors
    args: dict[str, Any] = field(default_factory=dict)

    def matches(self, index: int) -> bool:
        if self.poles in ("*", "all"):
            return True
        for part in self.poles.split(","):
            lo, _, hi = part.strip().partition("-")
            if hi:
                if int(lo) <= index <= int(hi):
                    return True
            elif int(lo) == index:
                return True
        return False


def load_script(path: Path) -> list[Step]:
    """A JSON list of steps: {"at": s, "poles": "*"|"3"|"0-9,12", "do": "event"|"outage"|
    "lamp"|"sensors", ...}: event takes "event" and "detail"; outage "for_s"; lamp
    "level"; sensors any of lux, temp_c, tilt_deg, door_open, mains."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the script: {e}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: the script must be a JSON list of steps")
    steps = []
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or "at" not in s or "do" not in s:
            raise ValueError(f"{path}: step {i}: needs at least \"at\" and \"do\"")
        if s["do"] not in ("event", "outage", "lamp", "sensors"):
            raise ValueError(f"{path}: step {i}: do={s['do']!r}: use event, outage, lamp "
                             "or sensors")
        args = {k: v for k, v in s.items() if k not in ("at", "poles", "do")}
        steps.append(Step(float(s["at"]), str(s.get("poles", "*")), s["do"], args))
    return sorted(steps, key=lambda st: st.at)

