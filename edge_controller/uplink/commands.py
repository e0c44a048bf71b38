"""Compatibility name: the command envelope and its parser live in `edge_controller.api.commands`.

Kept for callers written before the API package (the installer's fleet tools);
new code imports `edge_controller.api`.
"""

from edge_controller.api.commands import (
    ID_PATTERN,
    MAX_PAYLOAD,
    SIG_PATTERN,
    TS_PATTERN,
    Body,
    DimmingSchedule,
    Envelope,
    LampOverride,
    LampSet,
    Ping,
    Reboot,
    Rejection,
    ScreenText,
    parse,
    parse_ts,
)

__all__ = ["ID_PATTERN", "MAX_PAYLOAD", "SIG_PATTERN", "TS_PATTERN", "Body", "DimmingSchedule",
           "Envelope", "LampOverride", "LampSet", "Ping", "Reboot", "Rejection", "ScreenText",
           "parse", "parse_ts"]
