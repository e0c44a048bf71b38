"""Dimming commands: `lamp.override` and `dimming.schedule`, registered with the dispatcher.

The bodies are API models (`edge_controller.api.commands`); `DimmingService`
carries them out (sans-I/O: `apply_override` / `apply_schedule` return a
`CommandOutcome`).

    {"type": "lamp.override", "level": 100, "duration_s": 1800}
    {"type": "lamp.override", "level": 0, "duration_s": 0}       # cancel
    {"type": "dimming.schedule", "night_level": 60,
     "periods": [{"start": "00:30", "end": "05:00", "level": 40}]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_controller.api.commands import CommandOutcome, DimmingSchedule, LampOverride, Period

if TYPE_CHECKING:
    from edge_controller.uplink.dispatcher import CommandDispatcher
    from edge_controller.visibility.service import DimmingService

__all__ = ["CommandOutcome", "DimmingSchedule", "LampOverride", "Period", "register"]


def register(dispatcher: CommandDispatcher, service: DimmingService | None) -> None:
    """Give the dispatcher this feature's commands (refused with a reason when it is off)."""
    if service is None:
        for t in ("lamp.override", "dimming.schedule"):
            dispatcher.refuse(t, "dimming is not enabled")
        return

    async def override(body: LampOverride) -> CommandOutcome:
        return service.apply_override(body)

    async def schedule(body: DimmingSchedule) -> CommandOutcome:
        return service.apply_schedule(body)

    dispatcher.register("lamp.override", LampOverride, override)
    dispatcher.register("dimming.schedule", DimmingSchedule, schedule)
