"""Peripheral simulators as real protocol peers: a Modbus RTU charger (pymodbus server on a
pty bus), an OCPP 1.6J charge point and central system (the `ocpp` package), an LED screen
(smartpole-ascii-v1 over TCP or a pty). `demo.run_demo_peers()` starts them for `make run`.
"""

from polesim.peripherals.demo import (
    DemoPeers,
    DemoPeersThread,
    run_demo_peers,
    start_demo_peers,
)

__all__ = ["DemoPeers", "DemoPeersThread", "run_demo_peers", "start_demo_peers"]
