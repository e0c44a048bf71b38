"""Commands in, results out: the trust and replay rules in one place, then a handler per type.

Each feature registers the command types it carries out (`register`), or says
why it cannot (`refuse`: the feature is off); the dispatcher parses the
message, answers a replayed id from the result cache, applies the trust rules
(`TrustPolicy`: clock skew, signature) and runs the handler. The decisions are
sans-I/O (`decide` takes the time); only `handle` awaits the handler and sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from edge_controller.api.commands import (
    COMMAND_TYPES,
    MAX_PAYLOAD,
    UNCACHED_REASONS,
    BodyType,
    CommandOutcome,
    Envelope,
    Rejection,
    command_type,
    parse,
)
from edge_controller.uplink.trust import ResultCache, TrustPolicy

log = logging.getLogger(__name__)

B = TypeVar("B", bound=BodyType)
Handler = Callable[[Any], Awaitable[CommandOutcome]]
SendResult = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Replay:
    """A command id answered before: send this result again, run nothing."""

    result: dict[str, Any]


@dataclass(frozen=True)
class Run:
    """A trusted command to hand to its handler."""

    envelope: Envelope


Decision = Rejection | Replay | Run


class CommandDispatcher:
    def __init__(self, policy: TrustPolicy, results: ResultCache, send: SendResult,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.results = results
        self._send = send
        self._clock = clock
        self._handlers: dict[str, Handler] = {}
        self._refused: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Event] = {}
        self.rejected = 0  # results with status rejected (telemetry mqtt.commands_rejected)
        self.replays = 0

    # ---- the handler table ----------------------------------------------------------

    def register(self, type_: str, body: type[B],
                 handler: Callable[[B], Awaitable[CommandOutcome]]) -> None:
        """`handler` carries out commands of `type_` (whose body model is `body`)."""
        if type_ not in COMMAND_TYPES or command_type(body) != type_:
            raise ValueError(f"{type_!r} is not a command of the API with body {body.__name__}")
        if type_ in self._handlers:
            raise ValueError(f"{type_!r} is registered twice")
        self._refused.pop(type_, None)
        self._handlers[type_] = handler

    def refuse(self, type_: str, why: str) -> None:
        """Answer `type_` with rejected/unsupported and `why` (a feature that is off)."""
        if type_ not in self._handlers:
            self._refused[type_] = why

    @property
    def commands(self) -> list[str]:
        """The command types this pole carries out, in API order (birth `commands`)."""
        return [t for t in COMMAND_TYPES if t in self._handlers]

    # ---- decisions (sans-I/O) -------------------------------------------------------

    def decide(self, payload: bytes, now: float,
               allow_unsigned: frozenset[str] = frozenset()) -> Decision:
        cmd = parse(payload, now)
        if isinstance(cmd, Rejection):
            return cmd
        cached = self.results.get(cmd.id)
        if cached is not None:
            return Replay(dict(cached))
        why = self.policy.check(json.loads(payload), cmd, now, allow_unsigned)
        if why is not None:
            return Rejection(cmd.id, *why)
        return Run(cmd)

    # ---- the task side --------------------------------------------------------------

    async def handle(self, payload: bytes, reply: SendResult | None = None,
                     allow_unsigned: frozenset[str] = frozenset()) -> None:
        """One message from .../cmd; always answered with one result (or a replayed one).

        A backend profile passes `reply` (its result goes back to its platform, not to
        cmd/result) and the unsigned types its operator allowed (TrustPolicy.check)."""
        send = reply or self._send
        now = self._clock()
        cid = _peek_id(payload)
        if cid is not None and cid in self._inflight:
            await self._inflight[cid].wait()  # the same id twice at once: answer it once
        decision = self.decide(payload, now, allow_unsigned)
        if isinstance(decision, Rejection):
            log.warning("command %s rejected (%s): %s", decision.id, decision.reason,
                        decision.detail)
            self._result(decision.id, CommandOutcome("rejected", decision.reason,
                                                     decision.detail), now, send)
        elif isinstance(decision, Replay):
            self.replays += 1
            log.info("command %s replayed: answering from the result cache", cid)
            send(decision.result)
        else:
            await self._run(decision.envelope, send)

    async def _run(self, cmd: Envelope, send: SendResult) -> None:
        done = self._inflight[cmd.id] = asyncio.Event()
        try:
            handler = self._handlers.get(cmd.body.type)
            if handler is None:
                why = self._refused.get(cmd.body.type, f"{cmd.body.type} is not available")
                outcome = CommandOutcome("rejected", "unsupported", why)
            else:
                outcome = await handler(cmd.body)
            self._result(cmd.id, outcome, self._clock(), send)
        finally:
            done.set()
            del self._inflight[cmd.id]

    def _result(self, cid: str | None, o: CommandOutcome, now: float,
                send: SendResult) -> None:
        self.rejected += o.status == "rejected"
        result = {"id": cid, "status": o.status, "reason": o.reason, "detail": o.detail}
        send(result)
        if cid is not None and o.reason not in UNCACHED_REASONS:
            self.results.put(cid, result, now)


def _peek_id(payload: bytes) -> str | None:
    # Only to serialise duplicates in flight; the real parse happens in decide().
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    cid = doc.get("id") if isinstance(doc, dict) else None
    return cid if isinstance(cid, str) else None
