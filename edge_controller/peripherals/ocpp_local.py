"""The pole as the central system, when there is no upstream one.

Without `upstream_url` the pole answers the core profile itself (BootNotification,
Heartbeat, StatusNotification, MeterValues, Authorize, StartTransaction,
StopTransaction, and the rest of what a 1.6 charge point may send) with the `ocpp`
package's ChargePoint, which reads and writes the charger's connection through
`Tap`, so the adapter observes every frame on the way.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection

from edge_controller.clock import utc_iso
from edge_controller.peripherals.config import OcppSettings
from edge_controller.peripherals.ocpp_compat import ChargePoint, call_result, on
from edge_controller.peripherals.ocpp_observer import Sender

# The OCPP proxy's one logger, whichever of its modules logs (the log lines name it).
log = logging.getLogger("edge_controller.peripherals.ocpp_proxy")


class _QuietOcppLog:
    """The logger handed to the ocpp package: its per-message INFO lines and the tracebacks
    it logs for invalid CALLs go to DEBUG (the observer has logged the reason already)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.debug(msg, *args)

    info = debug
    exception = debug

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.warning(msg, *args)

    error = warning


class LocalCentralSystem(ChargePoint):
    """Answers the core profile when there is no upstream central system."""

    def __init__(self, cp_id: str, connection: Any, settings: OcppSettings,
                 next_tx: itertools.count[int]) -> None:
        super().__init__(cp_id, connection, logger=_QuietOcppLog(log))
        self._settings = settings
        self._next_tx = next_tx

    def _tag(self, id_tag: str) -> dict[str, str]:
        ok = not self._settings.accept_id_tags or id_tag in self._settings.accept_id_tags
        return {"status": "Accepted" if ok else "Invalid"}

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return call_result.BootNotification(current_time=utc_iso(),
                                            interval=self._settings.heartbeat_s,
                                            status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=utc_iso())

    @on("StatusNotification")
    def on_status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on("Authorize")
    def on_authorize(self, id_tag: str, **_: Any) -> Any:
        return call_result.Authorize(id_tag_info=self._tag(id_tag))

    @on("StartTransaction")
    def on_start(self, id_tag: str, **_: Any) -> Any:
        return call_result.StartTransaction(transaction_id=next(self._next_tx),
                                            id_tag_info=self._tag(id_tag))

    @on("StopTransaction")
    def on_stop(self, **_: Any) -> Any:
        return call_result.StopTransaction()

    # The rest of what a 1.6 charge point may send, answered as a central system without
    # those features would: no vendor extensions, no certificate authority, notes taken.

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status(self, **_: Any) -> Any:
        return call_result.DiagnosticsStatusNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on("SecurityEventNotification")
    def on_security_event(self, **_: Any) -> Any:
        return call_result.SecurityEventNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **_: Any) -> Any:
        return call_result.LogStatusNotification()

    @on("SignedFirmwareStatusNotification")
    def on_signed_firmware_status(self, **_: Any) -> Any:
        return call_result.SignedFirmwareStatusNotification()

    @on("SignCertificate")
    def on_sign_certificate(self, **_: Any) -> Any:
        return call_result.SignCertificate(status="Rejected")


class Tap:
    """The connection the ocpp ChargePoint reads and writes, observed on the way."""

    def __init__(self, ws: ServerConnection,
                 observe: Callable[[Sender, str | bytes], bool]) -> None:
        self._ws = ws
        self._observe = observe

    async def recv(self) -> str | bytes:
        while True:
            msg = await self._ws.recv()
            if self._observe("cp", msg):
                return msg
            # Not valid OCPP: observed and logged; ocpp would only log a traceback.
            with contextlib.suppress(Exception):
                parsed = json.loads(msg)
                if isinstance(parsed, list) and len(parsed) >= 3 and parsed[0] == 2:
                    return msg  # a CALL with a bad payload: let ocpp answer CALLERROR

    async def send(self, msg: str) -> None:
        self._observe("cs", msg)
        await self._ws.send(msg)

