"""The adapter interface: what one device's protocol code implements and reports to.

An adapter talks to one device (polling it, or listening for it) and tells its
`Sink` what happened: a normalised reading, plain contact, a failed or rejected
exchange (with a reason code), a connection going up or down, a persistent
condition. An `Adapter` subclass that names its `kind` registers itself
(`adapter_class` in registry.py finds it by kind).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from edge_controller.api.commands import CommandOutcome
from edge_controller.peripherals.config import DeviceConfig, DeviceKind, PeripheralsConfig
from edge_controller.peripherals.status import PeripheralStatus

# Reason codes (snake_case) that appear in `reasons`.
REASONS = (
    "no_answer",            # the peer did not answer in time
    "exception_response",   # Modbus exception reply (illegal address, busy, ...)
    "malformed_reply",      # a reply that failed a check (length, checksum, syntax)
    "bad_value",            # a well-formed reply with a value outside the profile
    "malformed_message",    # an OCPP message that is not valid OCPP 1.6J
    "port_error",           # the serial port / TCP endpoint could not be opened
    "disconnected",         # a listener's peer closed its connection
    "never_connected",      # a listener's peer has not connected since start
    "upstream_unreachable",  # OCPP proxy: the central system cannot be reached
    "boot_rejected",        # OCPP: the central system rejected the charger's boot
    "adapter_error",        # the adapter itself failed and is being restarted
)


class Sink(ABC):
    """What an adapter reports; bound to one device and the hub's clock."""

    @abstractmethod
    def reading(self, status: PeripheralStatus) -> None:
        """A good, normalised reading (also counts as contact)."""

    @abstractmethod
    def contact(self) -> None:
        """Heard from the peer (e.g. an OCPP Heartbeat), nothing new to report."""

    @abstractmethod
    def error(self, reason: str, detail: str) -> None:
        """A failed or rejected exchange; `reason` is a code from REASONS, `detail` is logged."""

    @abstractmethod
    def connection(self, up: bool, reason: str = "disconnected") -> None:
        """A listener's peer connected (up) or went away."""

    @abstractmethod
    def condition(self, name: str, active: bool, detail: str = "") -> None:
        """A persistent degraded reason that holds until cleared; `detail` (why it is set)
        is logged like an error's, but nothing is held for degraded_hold_s after clearing."""


class Adapter(ABC):
    """One device. `run()` polls or listens until cancelled; raising restarts it (backoff)."""

    kind: ClassVar[DeviceKind]

    def __init__(self, device: DeviceConfig, sink: Sink) -> None:
        self.device = device
        self.sink = sink

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            REGISTERED[cls.kind] = cls

    @classmethod
    def create(cls, device: DeviceConfig, cfg: PeripheralsConfig, sink: Sink,
               shared: dict[str, Any]) -> Adapter:
        """Build the adapter for `device`; `shared` holds what devices share (a bus)."""
        return cls(device, sink)

    @abstractmethod
    async def run(self) -> None: ...

    async def show_text(self, text: str, seconds: float) -> CommandOutcome:
        return CommandOutcome("rejected", "unsupported",
                              f"{self.device.id} ({self.kind}) cannot show text")

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what run() left open (called after run() ends or is cancelled)."""


# kind -> adapter class, filled as adapter modules are imported.
REGISTERED: dict[str, type[Adapter]] = {}
