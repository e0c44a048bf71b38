"""Compatibility names: base.py was split into adapter.py, monitor.py, hub.py and registry.py.

Adapters written against `edge_controller.peripherals.base` keep working; new
code imports the module that defines the name.
"""

from edge_controller.api.commands import CommandOutcome
from edge_controller.peripherals.adapter import REASONS, Adapter, Sink
from edge_controller.peripherals.hub import OnEvent, PeripheralHub, PublishStatus
from edge_controller.peripherals.monitor import (
    EVENT_FAULT_CLEARED,
    EVENT_FAULT_RAISED,
    EVENT_LOST,
    EVENT_RESTORED,
    EVENTS,
    DeviceMonitor,
    Output,
    RateLimitedLog,
)
from edge_controller.peripherals.registry import AdapterFactory

__all__ = ["EVENTS", "EVENT_FAULT_CLEARED", "EVENT_FAULT_RAISED", "EVENT_LOST",
           "EVENT_RESTORED", "REASONS", "Adapter", "AdapterFactory", "CommandOutcome",
           "DeviceMonitor", "OnEvent", "Output", "PeripheralHub", "PublishStatus",
           "RateLimitedLog", "Sink"]
