"""The pole's MQTT API as code: versions, message models, the command envelope and bodies.

The bottom layer: it imports nothing else of edge_controller, so the controller,
the installer's tools and the simulator can all use it. The JSON Schemas in
`schemas/` (docs/api/schemas) are the published contract; tests keep the two equal.
"""

from edge_controller.api.commands import (
    COMMAND_TYPES,
    REASONS,
    CommandOutcome,
    DimmingSchedule,
    Envelope,
    LampOverride,
    LampSet,
    Period,
    Ping,
    Reboot,
    Rejection,
    ScreenText,
)
from edge_controller.api.messages import (
    CAPABILITIES,
    EVENTS,
    MODELS,
    Birth,
    Event,
    Firmware,
    PeriphStatus,
    Result,
    State,
    Telemetry,
)
from edge_controller.api.version import API_VERSION, PAYLOAD_VERSION, TOPIC_ROOT

__all__ = [
    "API_VERSION",
    "CAPABILITIES",
    "COMMAND_TYPES",
    "EVENTS",
    "MODELS",
    "PAYLOAD_VERSION",
    "REASONS",
    "TOPIC_ROOT",
    "Birth",
    "CommandOutcome",
    "DimmingSchedule",
    "Envelope",
    "Event",
    "Firmware",
    "LampOverride",
    "LampSet",
    "Period",
    "PeriphStatus",
    "Ping",
    "Reboot",
    "Rejection",
    "Result",
    "ScreenText",
    "State",
    "Telemetry",
]
