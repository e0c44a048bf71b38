"""Charging pile over OCPP 1.6J: the pole is a local proxy between charger and central system.

    charger --ws--> pole (this adapter) --ws--> upstream central system (optional)

The charger connects to the pole's WebSocket server (`ws://pole:port/<cp id>`,
subprotocol `ocpp1.6`). With `upstream_url` set, the pole opens a connection to
`<upstream_url>/<cp id>` during the charger's handshake (forwarding its
Authorization header; a charger whose upstream cannot be reached is refused
with HTTP 502 and retries as chargers do) and then forwards every frame both
ways unchanged, in order, observing each. Without an upstream the pole answers
the core profile itself (BootNotification, Heartbeat, StatusNotification,
MeterValues, Authorize, StartTransaction, StopTransaction) with the `ocpp`
package's ChargePoint.

Who may connect (docs/security.md, "OCPP"): the server listens on loopback
unless configured otherwise; only the charge point ids of the allow-list get
a connection (HTTP 404 for any other); with security profile 1 each charger
proves its id with HTTP Basic and its own password (HTTP 401 otherwise), and
profile 2 adds TLS (a plain ws:// connection fails its handshake). All of it
is decided in the opening handshake, before an upstream connection is opened
or an existing charger connection is superseded. Passwords are read from
their file or environment variable at each handshake, so a rotated password
takes effect without a restart and never sits in the config.

`OcppObserver` (sans-I/O) reads the traffic: it validates each message against
the OCPP 1.6 JSON schemas, rejects (with a logged reason) what is not valid,
and keeps the connector state, error code, meter values and transaction.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import json
import logging
import os
import ssl
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge_controller.clock import utc_iso
from edge_controller.peripherals.adapter import Adapter, Sink
from edge_controller.peripherals.config import (
    CONNECTOR_STATES,
    ChargePointAuth,
    DeviceConfig,
    OcppSettings,
)
from edge_controller.peripherals.ocpp_compat import (
    OCPP_VERSION,
    SUBPROTOCOL,
    ChargePoint,
    MessageType,
    OCPPError,
    call_result,
    get_validator,
    on,
    unpack,
)
from edge_controller.peripherals.status import ChargerStatus

log = logging.getLogger(__name__)

# After a ping goes unanswered (or the pole closes for any other reason) the peer gets this
# long to complete the closing handshake before the socket is dropped. websockets' default
# (10 s) would keep a hung charger "connected" for 2 x ping_s + 10 s; a peer that is alive
# answers a close frame within milliseconds on a local network.
CLOSE_TIMEOUT_S = 1.0
# Largest frame accepted either way; a bigger one closes that connection with 1009. OCPP 1.6J
# messages are a few kB at most; the limit keeps one peer from exhausting the pole's memory.
MAX_FRAME_BYTES = 1 << 20

# OCPP 1.6 security whitepaper: the AuthorizationKey is 16-40 characters (profile 1/2).
PASSWORD_MIN, PASSWORD_MAX = 16, 40
# Refused handshakes are logged at most this often per reason (a scanner must not flood
# the log); the counters in OcppProxyAdapter.refused count every one.
REFUSAL_LOG_EVERY_S = 60.0

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
            self.pending[msg.unique_id] = (sender, action, msg.payload)
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


def _close_story(ws: ServerConnection) -> str:
    """Who closed, with what code and reason, for the disconnect log line."""
    proto = ws.protocol
    if proto.close_rcvd is not None and proto.close_rcvd_then_sent is not False:
        return f"closed by the charger: {proto.close_rcvd.code} {proto.close_rcvd.reason}".rstrip()
    if proto.close_sent is not None:
        what = f"{proto.close_sent.code} {proto.close_sent.reason}".rstrip()
        return f"closed by the pole: {what}" + ("" if proto.close_rcvd else ", unanswered")
    return "connection lost without a close frame"


class SecretError(ValueError):
    """A charger's password cannot be read (missing file or variable, bad length)."""


def read_password(cp: ChargePointAuth) -> str:
    """The charger's password from its file (first line) or environment variable."""
    if cp.password_file is not None:
        try:
            with open(cp.password_file, encoding="utf-8") as f:
                pw = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise SecretError(f"password_file {cp.password_file}: {e}") from None
        where = cp.password_file
    elif cp.password_env is not None:
        pw = os.environ.get(cp.password_env, "")
        where = f"${cp.password_env}"
        if not pw:
            raise SecretError(f"environment variable {cp.password_env} is not set")
    else:
        raise SecretError(f"charge point {cp.id} has no password_file or password_env")
    if not PASSWORD_MIN <= len(pw) <= PASSWORD_MAX:
        raise SecretError(f"{where}: the password must be {PASSWORD_MIN}-{PASSWORD_MAX} "
                          f"characters, not {len(pw)}")
    return pw


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` header; None if absent or bad."""
    if header is None:
        return None
    scheme, _, b64 = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(b64.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, pw = raw.partition(":")
    return (user, pw) if sep else None


def server_tls(settings: OcppSettings) -> ssl.SSLContext | None:
    """The TLS context of security profile 2 (TLS 1.2 or newer, as OCPP requires)."""
    if settings.security_profile != 2:
        return None
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise SecretError(f"TLS certificate {settings.tls_cert_file} / key "
                          f"{settings.tls_key_file} cannot be loaded: {e}") from None
    return ctx


class _Reject(Exception):
    def __init__(self, action: str | None, reason: str) -> None:
        super().__init__(reason)
        self.action = action


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


class _Tap:
    """The connection the ocpp ChargePoint reads and writes, observed on the way."""

    def __init__(self, ws: ServerConnection, observe: Any) -> None:
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


class OcppProxyAdapter(Adapter):
    kind = "ocpp_charger"

    def __init__(self, device: DeviceConfig, sink: Sink) -> None:
        super().__init__(device, sink)
        assert device.ocpp is not None
        self.settings = device.ocpp
        self.observer = OcppObserver(self.settings.connector_id)
        self.listening = asyncio.Event()
        self.port: int | None = None
        self._server: Server | None = None
        self._active: ServerConnection | None = None
        self._upstreams: dict[int, ClientConnection] = {}
        self._next_tx = itertools.count(1)
        self.forwarded = {"cp": 0, "cs": 0}
        # Handshakes refused, by reason: unknown_id, no_credentials, bad_credentials,
        # secret_unavailable (the pole cannot read the charger's password).
        self.refused: Counter[str] = Counter()
        self._refusal_logged: dict[str, float] = {}

    @property
    def url(self) -> str:
        host = self.settings.listen_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        scheme = "wss" if self.settings.security_profile == 2 else "ws"
        return f"{scheme}://{host}:{self.port}"

    async def run(self) -> None:
        s = self.settings
        # A bad certificate or key is a config problem: raising here restarts the adapter
        # with backoff and logs why, rather than serving without TLS.
        tls = server_tls(s)
        async with serve(self._handle, s.listen_host, s.listen_port, ssl=tls,
                         subprotocols=[Subprotocol(SUBPROTOCOL)],
                         process_request=self._process_request,
                         select_subprotocol=self._select_subprotocol,
                         ping_interval=s.ping_s, ping_timeout=s.ping_s,
                         close_timeout=CLOSE_TIMEOUT_S, max_size=MAX_FRAME_BYTES,
                         compression=None) as server:
            self._server = server
            sock = next(iter(server.sockets))
            self.port = int(sock.getsockname()[1])
            self.listening.set()
            log.info("ocpp %s: listening on %s (%s)", self.device.id, self.url,
                     f"proxy to {s.upstream_url}" if s.upstream_url else "answering locally")
            await asyncio.Event().wait()

    async def close(self) -> None:
        self.listening.clear()
        for up in list(self._upstreams.values()):
            with contextlib.suppress(Exception):
                await up.close()
        self._upstreams.clear()

    # ---- observation --------------------------------------------------------------

    def _observe(self, sender: Sender, raw: str | bytes) -> bool:
        seen = self.observer.feed(sender, raw)
        if seen.rejected is not None:
            who = "charger" if sender == "cp" else "central system"
            self.sink.error("malformed_message", f"from the {who}: {seen.rejected}; "
                            f"frame {str(raw)[:120]!r}")
            return False
        if seen.action == "BootNotification" and sender == "cs":
            self.sink.condition("boot_rejected", self.observer.boot_status == "Rejected")
        status = self.observer.status()
        if status is not None and (sender == "cp" or seen.changed):
            self.sink.reading(status)
        elif sender == "cp":
            self.sink.contact()
        return True

    # ---- connections --------------------------------------------------------------

    def _cp_id(self, path: str) -> str:
        return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    @staticmethod
    def _select_subprotocol(conn: ServerConnection,
                            offered: Sequence[Subprotocol]) -> Subprotocol | None:
        # OCPP-J: a charge point that does not offer the version is accepted without a
        # subprotocol and then closed with a reason (in _handle), not refused with HTTP 400.
        return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None

    @staticmethod
    def _offered(req: Request) -> list[str]:
        return [p.strip() for h in req.headers.get_all("Sec-WebSocket-Protocol")
                for p in h.split(",") if p.strip()]

    def _refuse(self, conn: ServerConnection, reason: str, status: HTTPStatus, body: str,
                detail: str) -> Response:
        self.refused[reason] += 1
        now = asyncio.get_running_loop().time()
        if now - self._refusal_logged.get(reason, -REFUSAL_LOG_EVERY_S) >= REFUSAL_LOG_EVERY_S:
            self._refusal_logged[reason] = now
            peer = conn.remote_address[0] if conn.remote_address else "?"
            log.warning("ocpp %s: refused a connection from %s: %s (%s so far)",
                        self.device.id, peer, detail, self.refused[reason])
        resp = conn.respond(status, body)
        if status == HTTPStatus.UNAUTHORIZED:
            resp.headers["WWW-Authenticate"] = 'Basic realm="smartpole-ocpp", charset="UTF-8"'
        return resp

    def _authorised(self, conn: ServerConnection, req: Request, cp_id: str
                    ) -> Response | None:
        """None if `cp_id` may connect with this request; else the refusal."""
        allowed = self.settings.allowed_ids()
        if not cp_id or (allowed and cp_id not in allowed):
            return self._refuse(conn, "unknown_id", HTTPStatus.NOT_FOUND,
                                "unknown charge point\n", f"charge point {cp_id!r} is not on "
                                f"the allow-list ({', '.join(allowed) or 'any'})")
        if self.settings.security_profile == 0:
            return None
        auth = self.settings.auth_for(cp_id)
        assert auth is not None  # profile >= 1 implies an allow-list with credentials
        creds = basic_credentials(req.headers.get("Authorization"))
        if creds is None:
            return self._refuse(conn, "no_credentials", HTTPStatus.UNAUTHORIZED,
                                "authentication required\n",
                                f"charge point {cp_id!r} sent no HTTP Basic credentials")
        try:
            password = read_password(auth)
        except SecretError as e:
            return self._refuse(conn, "secret_unavailable", HTTPStatus.SERVICE_UNAVAILABLE,
                                "charge point credentials unavailable\n", str(e))
        user, given = creds
        # Both compared in constant time, the user name too: it must be the URL's id
        # (OCPP 1.6 security whitepaper), so one charger's password opens no other id.
        ok_user = hmac.compare_digest(user.encode(), cp_id.encode())
        ok_pw = hmac.compare_digest(given.encode(), password.encode())
        if not (ok_user and ok_pw):
            return self._refuse(conn, "bad_credentials", HTTPStatus.UNAUTHORIZED,
                                "authentication failed\n",
                                f"charge point {cp_id!r}: wrong user name or password")
        return None

    async def _process_request(self, conn: ServerConnection, req: Request) -> Response | None:
        cp_id = self._cp_id(req.path)
        refused = self._authorised(conn, req, cp_id)
        if refused is not None:
            return refused
        up_url = self.settings.upstream_url
        if up_url is None or SUBPROTOCOL not in self._offered(req):
            return None
        headers = Headers()
        if "Authorization" in req.headers:
            headers["Authorization"] = req.headers["Authorization"]
        try:
            up = await connect(f"{up_url}/{cp_id}", subprotocols=[Subprotocol(SUBPROTOCOL)],
                               additional_headers=headers,
                               open_timeout=self.settings.upstream_timeout_s,
                               ping_interval=self.settings.ping_s,
                               ping_timeout=self.settings.ping_s,
                               close_timeout=CLOSE_TIMEOUT_S, max_size=MAX_FRAME_BYTES,
                               compression=None)
        except Exception as e:  # refused, timed out, bad handshake, DNS, TLS
            # A condition, not a failed exchange: it holds exactly until a connection
            # upstream succeeds, with no degraded_hold_s tail after that.
            self.sink.condition("upstream_unreachable", True,
                                f"{up_url}: {type(e).__name__}: {e}")
            return conn.respond(HTTPStatus.BAD_GATEWAY, "central system unreachable\n")
        self.sink.condition("upstream_unreachable", False)
        self._upstreams[id(conn)] = up
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        cp_id = self._cp_id(ws.request.path if ws.request else "")
        up = self._upstreams.pop(id(ws), None)
        if ws.subprotocol != SUBPROTOCOL:
            offered = self._offered(ws.request) if ws.request else []
            self.sink.error("malformed_message", f"charge point {cp_id} connected without "
                            f"offering subprotocol {SUBPROTOCOL} (offered: "
                            f"{', '.join(offered) or 'none'}); closed with 1002")
            with contextlib.suppress(Exception):
                await ws.close(1002, f"OCPP 1.6J: subprotocol {SUBPROTOCOL} required")
            return
        old, self._active = self._active, ws
        if old is not None:
            log.info("ocpp %s: a new connection from %s replaces the old one",
                     self.device.id, cp_id)
            with contextlib.suppress(Exception):
                await old.close(1000, "superseded by a new connection")
        self.sink.connection(True)
        try:
            if up is not None:
                await self._relay(ws, up)
            else:
                cs = LocalCentralSystem(cp_id, _Tap(ws, self._observe), self.settings,
                                        self._next_tx)
                with contextlib.suppress(ConnectionClosed):
                    await cs.start()
        finally:
            if up is not None:
                with contextlib.suppress(Exception):
                    await up.close()
            sent = ws.protocol.close_sent
            if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.sink.error("malformed_message", f"charger {cp_id} sent a frame over "
                                f"{MAX_FRAME_BYTES} bytes; closed with 1009")
            if self._active is ws:
                self._active = None
                self.sink.connection(False, "disconnected")
                log.info("ocpp %s: charger %s disconnected (%s)", self.device.id, cp_id,
                         _close_story(ws))

    async def _relay(self, cp: ServerConnection, up: ClientConnection) -> None:
        async def pump(src: ServerConnection | ClientConnection,
                       dst: ServerConnection | ClientConnection, sender: Sender) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for msg in src:
                    self._observe(sender, msg)
                    await dst.send(msg)  # unchanged, whatever the observer thought of it
                    self.forwarded[sender] += 1

        a = asyncio.create_task(pump(cp, up, "cp"))
        b = asyncio.create_task(pump(up, cp, "cs"))
        try:
            done, _ = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (a, b):
                t.cancel()
            for t in (a, b):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if b in done:  # the central system went away: so does the charger
            log.info("ocpp %s: upstream closed (code %s); closing the charger's connection",
                     self.device.id, up.close_code)
            with contextlib.suppress(Exception):
                await cp.close(1001 if up.close_code in (1000, 1001) else 1011,
                               "central system went away")
        else:
            with contextlib.suppress(Exception):
                await up.close(1000 if cp.close_code in (1000, 1001, None) else 1001)
