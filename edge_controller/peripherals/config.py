"""Config for the peripheral relay: `[peripherals]`, `[[peripherals.devices]]` and
`[[peripherals.modbus_profiles]]` (docs/peripherals.md).

Each device has an id (its MQTT topic level), a kind and the settings section of
that kind (`[peripherals.devices.modbus]`, `.ocpp` or `.screen`; defaults apply
when the section is left out). Modbus register maps are profiles: the built-in
`default` profile (documented in docs/peripherals.md) or one defined here.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_controller.configbase import is_loopback

DEVICE_ID_RE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
PROFILE_NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,31}$"
# Screen protocol profiles by name: the built-in ones, and any that led_screen.py's
# register_profile adds; here so that a config validates without the screen code.
SCREEN_PROFILES: set[str] = {"smartpole-ascii-v1", "smartpole-utf8-v1"}

ConnectorState = Literal[
    "Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing",
    "Reserved", "Unavailable", "Faulted",
]
CONNECTOR_STATES: tuple[str, ...] = (
    "Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing",
    "Reserved", "Unavailable", "Faulted",
)
DeviceKind = Literal["modbus_charger", "ocpp_charger", "led_screen"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisterConfig(_Section):
    address: int = Field(0, ge=0, le=65535, description="Register address (0-based, as on "
                         "the wire).")
    type: Literal["uint16", "int16", "uint32", "int32", "float32", "none"] = Field(
        "uint16", description="Encoding; 32-bit types span two registers; 'none': the charger "
        "lacks this quantity (reported as null).")
    scale: float = Field(1.0, description="Engineering value = raw value x scale.")
    word_order: Literal["big", "little"] = Field(
        "big", description="32-bit types: 'big' puts the high word at the lower address.")


DEFAULT_STATE_MAP: dict[int, ConnectorState] = {
    0: "Available", 1: "Preparing", 2: "Charging", 3: "SuspendedEV", 4: "SuspendedEVSE",
    5: "Finishing", 6: "Reserved", 7: "Unavailable", 8: "Faulted",
}


class ModbusProfileConfig(_Section):
    """A register map. The defaults of every field are the built-in `default` profile."""

    name: Annotated[str, Field(pattern=PROFILE_NAME_RE)] = Field(
        "custom", description="Profile name, referenced by a device's modbus.profile "
        "('default' is the built-in profile's).")
    table: Literal["holding", "input"] = Field(
        "holding", description="Register table: holding (function 0x03) or input (0x04).")
    connector_state: RegisterConfig = Field(
        default_factory=lambda: RegisterConfig(address=0),
        description="Connector state code, translated by state_map.")
    fault_code: RegisterConfig = Field(
        default_factory=lambda: RegisterConfig(address=1),
        description="The charger's own fault code; no_fault_value means none.")
    voltage: RegisterConfig = Field(
        default_factory=lambda: RegisterConfig(address=2, scale=0.1),
        description="Supply voltage in V (after scale).")
    current: RegisterConfig = Field(
        default_factory=lambda: RegisterConfig(address=3, scale=0.01),
        description="Charging current in A (after scale).")
    power: RegisterConfig = Field(
        default_factory=lambda: RegisterConfig(address=4, type="uint32"),
        description="Active power in W (after scale).")
    session_energy: RegisterConfig = Field(
        default_factory=lambda: RegisterConfig(address=6, type="uint32"),
        description="Energy of the current or last session in Wh (after scale).")
    meter_total: RegisterConfig = Field(
        default_factory=lambda: RegisterConfig(address=8, type="uint32"),
        description="Meter reading (total energy) in Wh (after scale).")
    state_map: dict[int, ConnectorState] = Field(
        default_factory=lambda: dict(DEFAULT_STATE_MAP),
        description="Raw connector state code -> OCPP 1.6 connector state; a reply with a "
        "code not listed is rejected (bad_value).")
    no_fault_value: int = Field(0, description="Raw fault_code value meaning 'no fault'.")

    def registers(self) -> dict[str, RegisterConfig]:
        return {"connector_state": self.connector_state, "fault_code": self.fault_code,
                "voltage": self.voltage, "current": self.current, "power": self.power,
                "session_energy": self.session_energy, "meter_total": self.meter_total}

    @model_validator(mode="after")
    def _sane(self) -> ModbusProfileConfig:
        if self.connector_state.type == "none":
            raise ValueError("connector_state must be a register (type 'none' not allowed)")
        spans = []
        for name, r in self.registers().items():
            if r.type == "none":
                continue
            n = 2 if r.type in ("uint32", "int32", "float32") else 1
            if r.address + n > 65536:
                raise ValueError(f"{name}: register beyond address 65535")
            spans.append((r.address, r.address + n, name))
        spans.sort()
        for (_a0, a1, n0), (b0, _b1, n1) in itertools.pairwise(spans):
            if b0 < a1:
                raise ValueError(f"registers {n0} and {n1} overlap at address {b0}")
        return self


class ModbusSettings(_Section):
    port: str = Field("/dev/ttyUSB1", description="Serial device of the RS-485 adapter; devices "
                      "on the same port share the bus (distinct unit_id, same line settings).")
    baudrate: int = Field(9600, gt=0, description="Line speed in baud.")
    parity: Literal["N", "E", "O"] = Field("N", description="Parity: N, E or O.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    unit_id: int = Field(1, ge=1, le=247, description="Modbus unit (slave) address.")
    profile: Annotated[str, Field(pattern=PROFILE_NAME_RE)] = Field(
        "default", description="Register map: 'default' or a [[peripherals.modbus_profiles]] "
        "name.")
    timeout_s: float = Field(0.5, gt=0, le=10, description="Time to wait for a reply.")


CP_ID_RE = r"^[A-Za-z0-9._:-]{1,48}$"  # OCPP 1.6: identity is CiString48, URL-safe here
ENV_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class ChargePointAuth(_Section):
    """One charger allowed to connect, and where its OCPP password is kept."""

    id: Annotated[str, Field(pattern=CP_ID_RE)] = Field(
        "cp-1", description="Charge point id: the last URL path segment the charger connects "
        "to (ws://pole:port/<id>) and its HTTP Basic user name.")
    password_file: str | None = Field(
        None, description="File holding this charger's password (security profile 1 and 2; "
        "its first line, 16-40 characters, OCPP's AuthorizationKey). Keep it mode 0600.")
    password_env: str | None = Field(
        None, pattern=ENV_RE,
        description="Environment variable holding the password instead of a file.")

    @model_validator(mode="after")
    def _one_source(self) -> ChargePointAuth:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError(f"charge point {self.id}: give password_file or password_env, "
                             "not both")
        return self


class OcppSettings(_Section):
    listen_host: str = Field("127.0.0.1", description="Address the pole's OCPP WebSocket "
                             "server listens on (the charger connects here): loopback by "
                             "default; set the address of the charger's link interface, "
                             "which needs security_profile 1 or 2 (docs/security.md).")
    listen_port: int = Field(9000, ge=0, le=65535, description="TCP port of that server "
                             "(0: any free port, for tests).")
    charge_point_id: str = Field(
        "", description="Charge point id expected as the last URL path segment "
        "(ws://pole:port/<id>); empty accepts any id (loopback only). With charge_points, "
        "leave it empty: that list is the allow-list.")
    charge_points: list[ChargePointAuth] = Field(
        default_factory=list, description="Allow-list of chargers: "
        "[[peripherals.devices.ocpp.charge_points]] tables (id, password_file or "
        "password_env); any other id is refused with HTTP 404.")
    security_profile: Literal[0, 1, 2] = Field(
        0, description="OCPP 1.6 security profile: 0 none (loopback only), 1 HTTP Basic "
        "with a password per charger, 2 TLS (tls_cert_file, tls_key_file) plus HTTP Basic.")
    tls_cert_file: str | None = Field(
        None, description="Profile 2: the pole's server certificate chain (PEM).")
    tls_key_file: str | None = Field(
        None, description="Profile 2: its private key (PEM, mode 0600).")
    connector_id: int = Field(1, ge=1, le=64, description="Connector whose state is relayed "
                              "(connector 0 Faulted/Unavailable overrides it).")
    upstream_url: str | None = Field(
        None, description="Central system to proxy to (ws:// or wss://; the charge point id is "
        "appended as a path segment). Unset: the pole answers the core profile itself.")
    upstream_timeout_s: float = Field(10.0, gt=0, le=120, description="Time to open the "
                                      "upstream connection before refusing the charger.")
    heartbeat_s: int = Field(300, ge=1, le=86400, description="Heartbeat interval given to the "
                             "charger in BootNotification.conf (local answers only).")
    ping_s: float = Field(10.0, gt=0, le=600, description="WebSocket ping interval and pong "
                          "timeout towards the charger: a silent peer is closed after about "
                          "2 x ping_s.")
    accept_id_tags: list[str] = Field(
        default_factory=list, description="Local answers: id tags accepted by Authorize and "
        "StartTransaction; empty accepts every tag.")

    def allowed_ids(self) -> list[str]:
        """Ids that may connect; empty: any (loopback without a profile only)."""
        if self.charge_points:
            return [c.id for c in self.charge_points]
        return [self.charge_point_id] if self.charge_point_id else []

    def auth_for(self, cp_id: str) -> ChargePointAuth | None:
        return next((c for c in self.charge_points if c.id == cp_id), None)

    @model_validator(mode="after")
    def _secure(self) -> OcppSettings:
        ids = [c.id for c in self.charge_points]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"charge_points: ids must be unique: {', '.join(dupes)}")
        if self.charge_points and self.charge_point_id:
            raise ValueError("give charge_point_id or charge_points, not both "
                             "(charge_points is the allow-list)")
        if self.security_profile >= 1:
            if not self.charge_points:
                raise ValueError(f"security_profile {self.security_profile} needs "
                                 "charge_points, each with password_file or password_env")
            bare = [c.id for c in self.charge_points
                    if c.password_file is None and c.password_env is None]
            if bare:
                raise ValueError(f"security_profile {self.security_profile}: charge points "
                                 f"{', '.join(bare)} have no password_file or password_env")
        if self.security_profile == 2 and (not self.tls_cert_file or not self.tls_key_file):
            raise ValueError("security_profile 2 (TLS) needs tls_cert_file and tls_key_file")
        if self.security_profile < 2 and (self.tls_cert_file or self.tls_key_file):
            raise ValueError("tls_cert_file/tls_key_file apply to security_profile 2 only")
        if self.security_profile == 0 and not is_loopback(self.listen_host):
            # An id is no secret: anyone on the charger's network could connect as it.
            raise ValueError(f"listen_host {self.listen_host!r} is reachable from the network: "
                             "set security_profile 1 (HTTP Basic per charger) or 2 (TLS), or "
                             "listen on 127.0.0.1")
        return self

    @field_validator("upstream_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlsplit(v)
        if u.scheme not in ("ws", "wss") or not u.hostname:
            raise ValueError("must look like ws://host:port/path or wss://host/path")
        return v.rstrip("/")


class ScreenSettings(_Section):
    address: str = Field("tcp:192.168.10.50:5200", description="'tcp:HOST:PORT' or "
                         "'serial:/dev/ttyXXX' of the screen controller.")
    baudrate: int = Field(9600, gt=0, description="Serial line speed (serial addresses only).")
    profile: Annotated[str, Field(pattern=PROFILE_NAME_RE)] = Field(
        "smartpole-ascii-v1", description="Screen protocol profile (docs/peripherals.md).")
    timeout_s: float = Field(1.0, gt=0, le=30, description="Time to wait for a reply.")
    text_enabled: bool = Field(True, description="Accept show_text commands for this screen.")
    max_text_len: int = Field(64, ge=1, le=512, description="Longest text show_text accepts.")
    max_text_s: float = Field(600.0, gt=0, le=86400, description="Longest display time "
                              "show_text accepts.")
    cols: int = Field(32, ge=1, le=1024, description="Screen width in columns (a CJK "
                      "character takes two), for profiles whose device does not report its "
                      "size (smartpole-ascii-v1).")
    rows: int = Field(2, ge=1, le=256, description="Screen height in text rows, for "
                      "profiles whose device does not report its size.")

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if v not in SCREEN_PROFILES:
            raise ValueError(
                f"unknown screen profile (known: {', '.join(sorted(SCREEN_PROFILES))})")
        return v

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        kind, _, rest = v.partition(":")
        if kind == "serial" and rest:
            return v
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            if host and port.isdigit() and 0 < int(port) < 65536:
                return v
        raise ValueError("must be 'tcp:HOST:PORT' or 'serial:/dev/PATH'")


_KIND_SECTION = {"modbus_charger": "modbus", "ocpp_charger": "ocpp", "led_screen": "screen"}


class DeviceConfig(_Section):
    id: Annotated[str, Field(pattern=DEVICE_ID_RE)] = Field(
        "device-1", description="Device id, the MQTT topic level periph/<id>/status "
        "(lowercase letters, digits, _ and -).")
    kind: DeviceKind = Field("modbus_charger", description="Adapter: modbus_charger, "
                             "ocpp_charger or led_screen.")
    enabled: bool = Field(True, description="Run this device's adapter.")
    poll_s: float = Field(1.0, ge=0.05, le=3600, description="Poll period (Modbus and screen; "
                          "OCPP chargers report by themselves).")
    lost_after_s: float = Field(10.0, gt=0, le=3600, description="No answer (or no connection) "
                                "for this long makes the device 'lost'.")
    modbus: ModbusSettings | None = Field(None, description="Settings for kind modbus_charger.")
    ocpp: OcppSettings | None = Field(None, description="Settings for kind ocpp_charger.")
    screen: ScreenSettings | None = Field(None, description="Settings for kind led_screen.")

    @model_validator(mode="before")
    @classmethod
    def _fill_section(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("kind", "modbus_charger")
            sec = _KIND_SECTION.get(kind) if isinstance(kind, str) else None
            if sec is not None and data.get(sec) is None:
                data = {**data, sec: {}}
        return data

    @model_validator(mode="after")
    def _one_section(self) -> DeviceConfig:
        want = _KIND_SECTION[self.kind]
        for sec in _KIND_SECTION.values():
            if sec != want and getattr(self, sec) is not None:
                raise ValueError(f"section '{sec}' does not apply to kind '{self.kind}'")
        return self


class PeripheralsConfig(_Section):
    devices: list[DeviceConfig] = Field(
        default_factory=list, description="Peripherals relayed by this pole: "
        "[[peripherals.devices]] tables (id, kind and the kind's settings section).")
    modbus_profiles: list[ModbusProfileConfig] = Field(
        default_factory=list, description="Extra Modbus register maps; every field defaults to "
        "the built-in 'default' profile.")
    refresh_s: float = Field(60.0, ge=1, le=86400, description="Republish an unchanged status "
                             "this often (it is retained; this refreshes its ts).")
    degraded_hold_s: float = Field(30.0, ge=0, le=3600, description="A device stays 'degraded' "
                                   "this long after its last rejected or failed exchange.")
    deadband_pct: float = Field(5.0, ge=0, le=100, description="Change-of-value threshold for "
                                "measured values (voltage, current, power, energy, "
                                "temperature), in % of the last published value; states, codes "
                                "and health always publish on change.")

    def profile(self, name: str) -> ModbusProfileConfig:
        for p in self.modbus_profiles:
            if p.name == name:
                return p
        if name == "default":
            return DEFAULT_PROFILE
        raise KeyError(name)

    @model_validator(mode="after")
    def _consistent(self) -> PeripheralsConfig:
        ids = [d.id for d in self.devices]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"device ids must be unique: {', '.join(dupes)}")
        names = [p.name for p in self.modbus_profiles]
        if "default" in names:
            raise ValueError("modbus profile name 'default' is built in; pick another name")
        pd = sorted({n for n in names if names.count(n) > 1})
        if pd:
            raise ValueError(f"modbus profile names must be unique: {', '.join(pd)}")
        buses: dict[str, ModbusSettings] = {}
        units: set[tuple[str, int]] = set()
        ports: set[int] = set()
        for d in self.devices:
            if d.modbus is not None and d.enabled:
                m = d.modbus
                if m.profile != "default" and m.profile not in names:
                    raise ValueError(f"device {d.id}: unknown modbus profile {m.profile!r}")
                first = buses.setdefault(m.port, m)
                if (first.baudrate, first.parity, first.stopbits) != (
                        m.baudrate, m.parity, m.stopbits):
                    raise ValueError(f"device {d.id}: devices on {m.port} must share baudrate, "
                                     "parity and stopbits")
                if (m.port, m.unit_id) in units:
                    raise ValueError(f"device {d.id}: unit_id {m.unit_id} is used twice on "
                                     f"{m.port}")
                units.add((m.port, m.unit_id))
            if d.ocpp is not None and d.enabled and d.ocpp.listen_port != 0:
                if d.ocpp.listen_port in ports:
                    raise ValueError(f"device {d.id}: listen_port {d.ocpp.listen_port} is used "
                                     "twice")
                ports.add(d.ocpp.listen_port)
        return self


DEFAULT_PROFILE = ModbusProfileConfig(name="default")
