"""Peripheral relay: the EV charging pile and the LED screen, normalised and relayed upstream.

`PeripheralHub` (hub.py) is the `peripherals` task; adapter.py is the interface,
monitor.py the health rules, registry.py finds an adapter by kind. Adapters: modbus_charger.py
(Modbus RTU), ocpp_proxy.py (OCPP 1.6J proxy / local central system),
led_screen.py (screen profiles). See docs/peripherals.md.
"""

from edge_controller.api.commands import CommandOutcome
from edge_controller.peripherals.adapter import Adapter, Sink
from edge_controller.peripherals.config import DeviceConfig, PeripheralsConfig
from edge_controller.peripherals.hub import PeripheralHub
from edge_controller.peripherals.monitor import EVENTS, DeviceMonitor
from edge_controller.peripherals.status import ChargerStatus, ScreenStatus

__all__ = ["EVENTS", "Adapter", "ChargerStatus", "CommandOutcome", "DeviceConfig",
           "DeviceMonitor", "PeripheralHub", "PeripheralsConfig", "ScreenStatus", "Sink"]
