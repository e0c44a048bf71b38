"""Which adapter serves a device kind: the adapters register themselves when imported.

The built-in kinds are imported on first use, so a pole without a charging
pile never loads pymodbus or the OCPP stack.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from edge_controller.peripherals.adapter import REGISTERED, Adapter, Sink
from edge_controller.peripherals.config import DeviceConfig, PeripheralsConfig

AdapterFactory = Callable[[DeviceConfig, PeripheralsConfig, Sink, dict[str, Any]], Adapter]

# Where the built-in adapters live, by kind.
BUILTIN = {
    "modbus_charger": "edge_controller.peripherals.modbus_charger",
    "ocpp_charger": "edge_controller.peripherals.ocpp_proxy",
    "led_screen": "edge_controller.peripherals.led_screen",
}


def adapter_class(kind: str) -> type[Adapter]:
    if kind not in REGISTERED and kind in BUILTIN:
        importlib.import_module(BUILTIN[kind])
    try:
        return REGISTERED[kind]
    except KeyError:
        raise LookupError(f"no adapter for device kind {kind!r}") from None


def default_factory(dev: DeviceConfig, cfg: PeripheralsConfig, sink: Sink,
                    shared: dict[str, Any]) -> Adapter:
    return adapter_class(dev.kind).create(dev, cfg, sink, shared)
