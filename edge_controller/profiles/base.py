"""The contract between a backend profile (a sans-I/O translator) and its runner.

The runner feeds the profile every message the pole publishes on its native API
(`Native`: the topic's kind and the JSON payload, as built from the typed models
in edge_controller/api; `state` too: `online` on every native connect and
`offline`/`shutdown` when the pole stops cleanly, before the profile's queue is
drained for the last time; a lost connection's `offline` is the native broker's
will, which no profile sees), and every message that arrives on the topics the profile
subscribes to. The profile answers with what to publish on the platform (`Out`)
and, for a platform command, the native command to run (`Inbound`) with a context
that comes back with the native result, so the platform gets its reply in its own
form. Time is passed in; a profile does no I/O and keeps only bounded state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

NativeKind = Literal["state", "birth", "telemetry", "events", "result", "periph_status"]


@dataclass(frozen=True)
class Native:
    """One message of the pole's native API."""

    kind: NativeKind
    payload: dict[str, Any]
    device_id: str | None = None  # for periph_status: the charger or screen


@dataclass(frozen=True)
class Out:
    """One publish on the platform's broker."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Inbound:
    """A platform command translated into a native command body (the `body` of the
    envelope: {"type": "lamp.set", ...}); `context` is handed back with its result."""

    body: dict[str, Any]
    context: Any
    signed_envelope: bytes | None = None  # when the platform sent a full signed envelope


@dataclass(frozen=True)
class Refused:
    """A platform message that is not a command we run, with the reply (if the platform
    expects one) and the reason for the log and the counters."""

    reason: str
    replies: list[Out] = field(default_factory=list)


@dataclass(frozen=True)
class Connection:
    """Where and how a profile connects when not over the native connection. `url` None:
    a connection of its own to the native broker ([mqtt] url, its TLS files, user name and
    password), e.g. for Sparkplug, whose last will must be its own."""

    url: str | None
    client_id: str
    username: str | None = None
    password: str | None = None
    will: Out | None = None
    clean_start: bool = True


class Profile(ABC):
    name: str
    # Records queued for one connection mean nothing on the next: the runner drops what is
    # still queued when a new connection starts, before `on_connect` (Sparkplug: a new
    # session begins with a fresh NBIRTH/DBIRTH of current values and seq from 0, so the
    # old session's NDATA/DDATA must not follow it). False: the backlog is delivered.
    session_scoped: bool = False

    @abstractmethod
    def subscriptions(self) -> list[str]:
        """Topic filters to subscribe to (commands, the platform's status topics)."""

    @abstractmethod
    def on_connect(self, now: float) -> list[Out]:
        """What to publish on every (re)connect: discovery, births, retained state."""

    @abstractmethod
    def translate(self, msg: Native, now: float) -> list[Out]:
        """The platform's messages for one native message (often none)."""

    @abstractmethod
    def inbound(self, topic: str, payload: bytes, now: float) -> Inbound | Refused | list[Out]:
        """A message from the platform: a command to run, a refusal, or messages to
        publish in answer without running anything (e.g. a rebirth request)."""

    @abstractmethod
    def result(self, context: Any, result: dict[str, Any], now: float) -> list[Out]:
        """The platform's reply to a command, from the native `cmd/result` payload."""

    def connection(self, now: float) -> Connection | None:
        """Its own broker and credentials; None to share the native connection."""
        return None

    def on_disconnect(self, now: float) -> None:
        """The connection (own or shared) was lost or closed: nothing published from now
        until the next `on_connect` reaches the platform on this session."""
        return None

    def on_shutdown(self, now: float) -> list[Out]:
        """What to publish when the pole stops cleanly, after the last drain: on its own
        connection before the clean disconnect (by default the will's topic with what it
        would say: a clean stop looks like a lost one); on the shared one before the native
        connection says offline."""
        conn = self.connection(now)
        return [] if conn is None or conn.will is None else [conn.will]
