"""Peripheral relay: the EV charging pile and the LED screen, normalised and relayed upstream.

`PeripheralHub` (base.py) is the `peripherals` task; adapters: modbus_charger.py
(Modbus RTU), ocpp_proxy.py (OCPP 1.6J proxy / local central system),
led_screen.py (screen profiles). See docs/peripherals.md.
"""

from edge_controller.peripherals.base import (
    EVENTS,
    Adapter,
    CommandOutcome,
    DeviceMonitor,
    PeripheralHub,
    Sink,
)
from edge_controller.peripherals.config import DeviceConfig, PeripheralsConfig
from edge_controller.peripherals.status import ChargerStatus, ScreenStatus

__all__ = ["EVENTS", "Adapter", "ChargerStatus", "CommandOutcome", "DeviceConfig",
           "DeviceMonitor", "PeripheralHub", "PeripheralsConfig", "ScreenStatus", "Sink"]
