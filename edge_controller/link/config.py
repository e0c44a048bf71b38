"""`[link]`: the UART link to the I/O board."""

from __future__ import annotations

from pydantic import Field

from edge_controller.configbase import Section as _Section


class LinkConfig(_Section):
    port: str = Field(
        "/dev/ttyUSB0", description="Serial device of the I/O board (a pty path in simulation)."
    )
    baudrate: int = Field(115200, gt=0, description="UART speed in baud.")
    heartbeat_s: float = Field(
        1.0, gt=0, le=60, description="Interval between controller heartbeats to the firmware."
    )
    ack_timeout_s: float = Field(
        0.25, gt=0, le=10, description="Time to wait for an ack before retrying a command."
    )
    retries: int = Field(
        3, ge=0, le=10, description="Retransmissions of a command before it fails."
    )
    hello_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Time to wait for the firmware's hello after a request."
    )
    lost_after_s: float = Field(
        3.5, gt=0, le=600,
        description="Silence from the firmware after which the link counts as lost "
        "(keep it below the firmware's fail-safe timeout).",
    )
