"""What the charger and the central system say to each other, read (sans-I/O).

`OcppObserver` validates each OCPP 1.6J message against the OCPP 1.6 JSON schemas,
rejects (with a logged reason) what is not valid, and keeps the connector state,
error code, meter values and transaction. The adapter (ocpp_proxy.py) feeds it
every frame, both ways.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_controller.peripherals.config import CONNECTOR_STATES
from edge_controller.peripherals.ocpp_compat import (
    OCPP_VERSION,
    MessageType,
    OCPPError,
    get_validator,
    unpack,
)
from edge_controller.peripherals.status import ChargerStatus

# The OCPP proxy's one logger, whichever of its modules logs (the log lines name it).
log = logging.getLogger("edge_controller.peripherals.ocpp_proxy")

Sender = Literal["cp", "cs"]  # charge point (the charger) or central system
_UNITS = {"Wh": 1.0, "kWh": 1000.0, "W": 1.0, "kW": 1000.0, "V": 1.0, "A": 1.0}
# OCPP 1.6 (with the security extension) CALLs a charge point sends; every other action is
# the central system's. DataTransfer goes both ways.
CP_ACTIONS = frozenset({
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction", "SecurityEventNotification", "SignCertificate",
    "LogStatusNotification", "SignedFirmwareStatusNotification",
})
# What an answer is read with (`_on_result`): StartTransaction's connector and meter.
_KEPT_FROM_CALL = ("connectorId", "meterStart")


def _kept(payload: dict[str, Any]) -> dict[str, Any]:
    """The fields of a pending CALL that its answer needs, if they are small numbers."""
    return {k: v for k in _KEPT_FROM_CALL
            if isinstance(v := payload.get(k), (int, float)) and abs(v) < 1e15}


_MEASURANDS = {
    "Energy.Active.Import.Register": "meter_total_wh",
    "Power.Active.Import": "power_w",
    "Voltage": "voltage_v",
    "Current.Import": "current_a",
}


@dataclass
class Observed:
    """What one message did: its action, whether the status changed, why it was rejected."""

    action: str | None = None
    changed: bool = False
    rejected: str | None = None


@dataclass
class OcppObserver:
    """The charger's state as seen in its OCPP 1.6J traffic (sans-I/O)."""

    connector_id: int = 1
    pending: dict[str, tuple[Sender, str, dict[str, Any]]] = field(default_factory=dict)
    connector_state: str | None = None
    charger_state: str | None = None  # connector 0: the charge point as a whole
    error_code: str | None = None
    charger_error: str | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    power_w: float | None = None
    meter_total_wh: float | None = None
    meter_start_wh: float | None = None
    session_energy_wh: float | None = None
    transaction_id: int | None = None
    boot_status: str | None = None
    vendor: str | None = None
    model: str | None = None
    messages: int = 0
    rejected: int = 0

    def status(self) -> ChargerStatus | None:
        state = self.connector_state
        error = self.error_code
        if self.charger_state in ("Faulted", "Unavailable"):
            state, error = self.charger_state, self.charger_error or error
        if state is None:
            return None
        return ChargerStatus(
            connector_state=state,  # type: ignore[arg-type]  # checked on the way in
            error_code=error, voltage_v=self.voltage_v, current_a=self.current_a,
            power_w=self.power_w, session_energy_wh=self.session_energy_wh,
            meter_total_wh=self.meter_total_wh, transaction_id=self.transaction_id)

    def feed(self, sender: Sender, raw: str | bytes) -> Observed:
        """Observe one frame; never raises."""
        self.messages += 1
        try:
            return self._feed(sender, raw)
        except _Reject as e:
            self.rejected += 1
            return Observed(e.action, False, str(e))

    def _feed(self, sender: Sender, raw: str | bytes) -> Observed:
        if isinstance(raw, bytes):
            raise _Reject(None, "binary frame (OCPP-J uses text frames)")
        try:
            msg = unpack(raw)
        except OCPPError as e:
            raise _Reject(None, f"{type(e).__name__}: {e.details.get('cause', e)}") from None
        except Exception as e:  # unpack trusts the shape of what json.loads returned
            raise _Reject(None, f"not an OCPP message: {type(e).__name__}: {e}") from None
        if not isinstance(getattr(msg, "unique_id", None), str):
            raise _Reject(None, "unique id is not a string")
        if msg.message_type_id == MessageType.Call:
            action = msg.action
            if not isinstance(action, str) or not isinstance(msg.payload, dict):
                raise _Reject(None, "CALL without an action name and a payload object")
            # Pending before validation: the CALLERROR that answers a bad CALL matches it.
            # Only what an answer is read with is kept: 256 unanswered frames of up to
            # 1 MiB each would otherwise be a quarter of a GB held until answers come.
            self.pending[msg.unique_id] = (sender, action, _kept(msg.payload))
            if len(self.pending) > 256:  # answers that never came: forget the oldest
                self.pending.pop(next(iter(self.pending)))
            self._validate(MessageType.Call, action, msg.payload)
            if action != "DataTransfer" and (action in CP_ACTIONS) != (sender == "cp"):
                raise _Reject(action, f"{action} is sent by the "
                              f"{'charge point' if action in CP_ACTIONS else 'central system'}"
                              f", not the {'charge point' if sender == 'cp' else 'central system'}")
            if sender == "cp":
                return Observed(action, self._on_call(action, msg.payload))
            return Observed(action)
        req = self.pending.pop(msg.unique_id, None)
        if req is None:
            raise _Reject(None, f"answer to unknown unique id {msg.unique_id!r}")
        req_sender, action, req_payload = req
        if req_sender == sender:
            raise _Reject(action, "answer sent by the side that made the request")
        if msg.message_type_id == MessageType.CallError:
            log.info("ocpp: %s answered %s with CALLERROR %s %s", sender, action,
                     getattr(msg, "error_code", "?"), getattr(msg, "error_description", ""))
            return Observed(action)
        if not isinstance(msg.payload, dict):
            raise _Reject(action, "CALLRESULT payload is not an object")
        self._validate(MessageType.CallResult, action, msg.payload)
        if req_sender == "cp":
            return Observed(action, self._on_result(action, req_payload, msg.payload))
        return Observed(action)

    @staticmethod
    def _validate(mtype: int, action: str, payload: dict[str, Any]) -> None:
        try:
            validator = get_validator(mtype, action, OCPP_VERSION)
        except (OSError, ValueError, OCPPError):
            raise _Reject(action, f"unknown OCPP 1.6 action {action!r}") from None
        err = next(iter(validator.iter_errors(payload)), None)
        if err is not None:
            where = "/".join(str(p) for p in getattr(err, "absolute_path", [])) or "payload"
            raise _Reject(action, f"{action} {where}: {getattr(err, 'message', err)}")

    # ---- the core profile, charger -> central system ------------------------------

    def _on_call(self, action: str, p: dict[str, Any]) -> bool:
        before = self.status()
        if action == "BootNotification":
            self.vendor, self.model = p.get("chargePointVendor"), p.get("chargePointModel")
        elif action == "StatusNotification":
            cid, state = p["connectorId"], p["status"]
            if state not in CONNECTOR_STATES:  # the schema says so too
                raise _Reject(action, f"unknown status {state!r}")
            code = p.get("vendorErrorCode") or p["errorCode"]
            err = None if p["errorCode"] == "NoError" else str(code)
            if cid == self.connector_id:
                self.connector_state, self.error_code = state, err
            elif cid == 0:
                self.charger_state, self.charger_error = state, err
        elif action == "MeterValues" and p["connectorId"] == self.connector_id:
            self._meter(p["meterValue"])
        elif action == "StartTransaction" and p["connectorId"] == self.connector_id:
            # A meter reading either way; the session only starts if the answer accepts it.
            self.meter_total_wh = float(p["meterStart"])
        elif action == "StopTransaction" and (
                self.transaction_id is None or p["transactionId"] == self.transaction_id):
            stop = float(p["meterStop"])
            self.meter_total_wh = stop
            # Only the transaction the pole saw accepted has a session to close: a stop for
            # one it never saw start (a rejected tag, or started before the controller did)
            # leaves the last session's energy as it was.
            if self.meter_start_wh is not None and self.transaction_id is not None:
                self.session_energy_wh = max(0.0, stop - self.meter_start_wh)
            self.transaction_id = None
            self.power_w = 0.0 if self.power_w is not None else None
            self.current_a = 0.0 if self.current_a is not None else None
        return self.status() != before

    def _on_result(self, action: str, req: dict[str, Any], res: dict[str, Any]) -> bool:
        before = self.status()
        if action == "BootNotification":
            self.boot_status = res.get("status")
        elif (action == "StartTransaction" and req.get("connectorId") == self.connector_id
              and res.get("idTagInfo", {}).get("status") == "Accepted"):
            self.transaction_id = int(res["transactionId"])
            self.meter_start_wh = float(req["meterStart"])
            self.session_energy_wh = 0.0
        return self.status() != before

    def _meter(self, meter_values: list[dict[str, Any]]) -> None:
        got: dict[str, list[tuple[str | None, float]]] = {}
        for mv in meter_values:
            for sv in mv.get("sampledValue", []):
                measurand = sv.get("measurand", "Energy.Active.Import.Register")
                key = _MEASURANDS.get(measurand)
                if key is None or sv.get("context") == "Transaction.Begin":
                    continue
                unit = sv.get("unit", "Wh" if key == "meter_total_wh" else
                              "W" if key == "power_w" else "V" if key == "voltage_v" else "A")
                if sv.get("format") == "SignedData":
                    continue
                try:
                    value = float(sv["value"]) * _UNITS[unit]
                except (ValueError, KeyError):
                    raise _Reject("MeterValues", f"{measurand}: value {sv.get('value')!r} in "
                                  f"unit {unit!r} is not a number in a known unit") from None
                got.setdefault(key, []).append((sv.get("phase"), value))
        for key, vals in got.items():
            plain = [v for ph, v in vals if ph is None]
            phases = [v for ph, v in vals if ph is not None and ph != "N"]
            if plain:
                value = plain[-1]
            elif key == "voltage_v":
                value = sum(phases) / len(phases)
            else:
                value = sum(phases)  # per-phase power or current: the total
            setattr(self, key, round(value, 6))
        if (self.meter_total_wh is not None and self.meter_start_wh is not None
                and self.transaction_id is not None):
            self.session_energy_wh = round(max(0.0, self.meter_total_wh - self.meter_start_wh), 6)


class _Reject(Exception):
    def __init__(self, action: str | None, reason: str) -> None:
        super().__init__(reason)
        self.action = action

