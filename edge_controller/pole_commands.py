"""The pole's own commands: `lamp.set`, `reboot` and `ping` (the link and the supervisor)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from edge_controller.api.commands import CommandOutcome, LampSet, Ping, Reboot
from edge_controller.link.session import Outcome
from edge_controller.uplink.dispatcher import CommandDispatcher

EXIT_RESTART = 75  # EX_TEMPFAIL: the service manager restarts us (reboot command)

# NAK reasons of the link protocol: the board understood and said no.
_NAKS = ("bad_value", "unsupported", "malformed", "state", "busy", "version")

LinkCommand = Callable[[str, tuple[int, ...]], Awaitable[Outcome]]


def link_outcome(out: Outcome, what: str) -> CommandOutcome:
    """A link command's outcome as a command result."""
    if out.ok:
        return CommandOutcome("ok", "done", what)
    if out.reason in _NAKS:
        return CommandOutcome("failed", "firmware_nak", f"firmware refused: {out.reason}")
    return CommandOutcome("failed", out.reason, f"{what}: {out.reason.replace('_', ' ')}")


def register(dispatcher: CommandDispatcher, link_command: LinkCommand,
             stop: Callable[[int], None]) -> None:
    async def ping(_: Ping) -> CommandOutcome:
        return CommandOutcome("ok", "done", "pong")

    async def lamp_set(body: LampSet) -> CommandOutcome:
        out = await link_command("lamp_set", (body.level, body.fade_ms))
        return link_outcome(out, f"lamp to {body.level} % over {body.fade_ms} ms")

    async def reboot(body: Reboot) -> CommandOutcome:
        if body.target == "controller":
            # stop() only sets an event: the result is queued before the shutdown drains.
            stop(EXIT_RESTART)
            return CommandOutcome("ok", "done", "controller restarting")
        out = await link_command("reboot", (200,))
        return link_outcome(out, "firmware reboot in 200 ms")

    dispatcher.register("lamp.set", LampSet, lamp_set)
    dispatcher.register("reboot", Reboot, reboot)
    dispatcher.register("ping", Ping, ping)
