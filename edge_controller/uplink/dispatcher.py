"""Commands in, results out: the trust and replay rules in one place, then a handler per type.

Each feature registers the command types it carries out (`register`), or says
why it cannot (`refuse`: the feature is off); the dispatcher parses the
message, applies the trust rules (`TrustPolicy`: clock skew, pole, lifetime,
signature), then answers a repeated id from the result cache (the original
result, marked duplicate; another body is a conflict) and otherwise runs the
handler. Only commands that ran are remembered. The decisions are sans-I/O
(`decide` takes the time); only `handle` awaits the handler and sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from edge_controller.api.commands import (
    COMMAND_TYPES,
    MAX_PAYLOAD,
    BodyType,
    CommandOutcome,
    Envelope,
    Rejection,
    command_type,
    parse,
    parse_ts,
)
from edge_controller.uplink.trust import ResultCache, TrustPolicy, body_hash

log = logging.getLogger(__name__)

B = TypeVar("B", bound=BodyType)
Handler = Callable[[Any], Awaitable[CommandOutcome]]
SendResult = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Replay:
    """A command that ran before: send its original result again (marked duplicate)."""

    result: dict[str, Any]


@dataclass(frozen=True)
class Run:
    """A trusted command to hand to its handler."""

    envelope: Envelope
    body: str = ""  # body_hash, remembered with the result
    deadline: float | None = None  # expires_at of a verified signed command


Decision = Rejection | Replay | Run


class CommandDispatcher:
    def __init__(self, policy: TrustPolicy, results: ResultCache, send: SendResult,
                 clock: Callable[[], float] = time.time,
                 clock_synced: Callable[[], bool] | None = None) -> None:
        self.policy = policy
        self.results = results
        self._send = send
        self._clock = clock
        self._synced = clock_synced
        self._handlers: dict[str, Handler] = {}
        self._refused: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Event] = {}
        self.rejected = 0  # results with status rejected (telemetry mqtt.commands_rejected)
        self.refused: Counter[str] = Counter()  # rejections by reason
        self.replays = 0  # duplicates answered from the cache

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
        """What to do with one message received at `now` (the pole's clock)."""
        # Expiry is judged by the pole's clock, or by the newest signed command that ran
        # if that is later: a clock set back (unsynchronised) cannot revive old commands.
        cmd = parse(payload, max(now, self.results.time_floor))
        if isinstance(cmd, Rejection):
            return cmd
        envelope = json.loads(payload)
        why = self.policy.check(envelope, cmd, now, allow_unsigned)
        if why is not None:
            return Rejection(cmd.id, *why)
        body = body_hash(envelope)
        cached = self.results.get(cmd.id)
        if cached is not None:
            if cached.body is not None and cached.body != body:
                return Rejection(cmd.id, "conflict", f"id {cmd.id} already ran with another "
                                 "body; the original result stands (use a fresh id)")
            return Replay({**cached.result, "duplicate": True})
        deadline = parse_ts(cmd.expires_at) if cmd.expires_at is not None else None
        if deadline is not None and deadline <= self.results.floor:
            return Rejection(cmd.id, "expired", "older than the pole's replay window "
                             f"(commands expiring before {_iso(self.results.floor)} are "
                             "refused; send it again with a fresh id and expires_at)")
        signed = cmd.sig is not None and self.policy.key is not None
        return Run(cmd, body, deadline if signed else None)

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
            detail = decision.detail
            if decision.reason in ("expired", "not_yet_valid") and self._synced is not None \
                    and not self._synced():
                detail += " (the pole's clock is not synchronised)"
            self.refused[decision.reason] += 1
            log.warning("command %s rejected (%s): %s", decision.id, decision.reason, detail)
            # Never remembered: junk cannot push a real id out of the cache, nor block one.
            self._result(decision.id, CommandOutcome("rejected", decision.reason, detail),
                         now, send)
        elif isinstance(decision, Replay):
            self.replays += 1
            log.info("command %s repeated: answering with its original result", cid)
            send(decision.result)
        else:
            await self._run(decision, send)

    async def _run(self, run: Run, send: SendResult) -> None:
        cmd = run.envelope
        done = self._inflight[cmd.id] = asyncio.Event()
        try:
            handler = self._handlers.get(cmd.body.type)
            if handler is None:
                why = self._refused.get(cmd.body.type, f"{cmd.body.type} is not available")
                outcome = CommandOutcome("rejected", "unsupported", why)
            else:
                outcome = await handler(cmd.body)
            now = self._clock()
            result = self._result(cmd.id, outcome, now, send)
            self.results.put(cmd.id, result, now, run.body, run.deadline)
            if run.deadline is not None:
                self.results.saw_trusted(parse_ts(cmd.issued_at), self.policy.max_clock_skew_s)
        finally:
            done.set()
            del self._inflight[cmd.id]

    def _result(self, cid: str | None, o: CommandOutcome, now: float,
                send: SendResult) -> dict[str, Any]:
        self.rejected += o.status == "rejected"
        result = {"id": cid, "status": o.status, "reason": o.reason, "detail": o.detail,
                  "duplicate": False}
        send(result)
        return result


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
