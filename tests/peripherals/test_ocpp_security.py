"""Issue 18, OCPP: who may connect to the pole's charger port, tested with the real
`ocpp` peers (tests/peripherals/peers.py) over websockets, with real TLS.

Before: the server listened on 0.0.0.0 over plain ws://, took any charge point
id unless one was configured, and asked for no credentials, so anyone on the
pole's network could replace the real charger's connection, feed fake meter
values into city telemetry, or pose as any charge point to the central system.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from websockets.exceptions import InvalidMessage, InvalidStatus

from edge_controller.peripherals.config import OcppSettings, PeripheralsConfig
from edge_controller.peripherals.hub import PeripheralHub
from edge_controller.peripherals.ocpp_proxy import (
    OcppProxyAdapter,
    basic_credentials,
)

from .conftest import running_hub
from .peers import CentralSystem16, ChargePoint16

PW_7 = "cp7-secret-0123456789"  # 21 characters: inside OCPP's 16-40
PW_8 = "cp8-other-secret-98765"


def basic(user: str, password: str) -> dict[str, Any]:
    tok = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"additional_headers": {"Authorization": f"Basic {tok}"}}


def cfg(upstream_url: str | None = None, **ocpp: Any) -> dict[str, Any]:
    return {"devices": [{"id": "charger-2", "kind": "ocpp_charger", "lost_after_s": 2.0,
                         "ocpp": {"listen_port": 0, "upstream_url": upstream_url,
                                  "ping_s": 2.0, **ocpp}}],
            "degraded_hold_s": 0.5}


def adapter(hub: PeripheralHub) -> OcppProxyAdapter:
    ad = hub.adapters["charger-2"]
    assert isinstance(ad, OcppProxyAdapter)
    return ad


async def url_of(hub: PeripheralHub) -> str:
    ad = adapter(hub)
    await ad.listening.wait()
    return ad.url


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Two chargers on the allow-list: cp-7's password in a file, cp-8's in the env."""
    f = tmp_path / "cp-7.key"
    f.write_text(PW_7 + "\n")
    f.chmod(0o600)
    monkeypatch.setenv("SMARTPOLE_OCPP_CP8", PW_8)
    return [{"id": "cp-7", "password_file": str(f)},
            {"id": "cp-8", "password_env": "SMARTPOLE_OCPP_CP8"}]


# ---- listening ------------------------------------------------------------------------


def _lan_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP connect
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ipaddress.ip_address(addr).is_loopback else addr


async def test_listens_on_loopback_by_default() -> None:
    assert OcppSettings().listen_host == "127.0.0.1"
    conf = cfg()
    del conf["devices"][0]["ocpp"]["ping_s"]
    async with running_hub(conf) as (hub, _cap):
        await url_of(hub)
        server = adapter(hub)._server
        assert server is not None
        hosts = {s.getsockname()[0] for s in server.sockets}
        assert hosts == {"127.0.0.1"}
        lan = _lan_address()
        if lan is not None:  # from the network, nothing answers on that port
            with pytest.raises(OSError):
                await asyncio.wait_for(asyncio.open_connection(lan, adapter(hub).port), 2.0)


def test_network_facing_port_needs_a_security_profile(secrets: list[dict[str, str]]) -> None:
    # Before: listen_host 0.0.0.0 with no credentials was the default.
    with pytest.raises(ValidationError, match="security_profile 1"):
        OcppSettings(listen_host="0.0.0.0")
    with pytest.raises(ValidationError, match="needs charge_points"):
        OcppSettings(listen_host="0.0.0.0", security_profile=1)
    with pytest.raises(ValidationError, match="no password_file or password_env"):
        OcppSettings(security_profile=1, charge_points=[{"id": "cp-7"}])
    with pytest.raises(ValidationError, match="tls_cert_file and tls_key_file"):
        OcppSettings(security_profile=2, charge_points=secrets)
    with pytest.raises(ValidationError, match="not both"):
        OcppSettings(charge_point_id="cp-7", charge_points=secrets)
    with pytest.raises(ValidationError, match="unique"):
        OcppSettings(charge_points=[secrets[0], secrets[0]])
    ok = OcppSettings(listen_host="0.0.0.0", security_profile=1, charge_points=secrets)
    assert ok.allowed_ids() == ["cp-7", "cp-8"]
    PeripheralsConfig.model_validate(cfg(security_profile=1, charge_points=secrets))


# ---- allow-list ----------------------------------------------------------------------


async def test_unknown_id_refused_and_counted(secrets: list[dict[str, str]]) -> None:
    ids = [{"id": "cp-7"}, {"id": "cp-8"}]
    async with running_hub(cfg(charge_points=ids)) as (hub, _cap):
        url = await url_of(hub)
        for who in ("cp-9", "", "cp-7x"):
            with pytest.raises(InvalidStatus) as e:
                await ChargePoint16(url, who).connect()
            assert e.value.response.status_code == 404
        assert adapter(hub).refused["unknown_id"] == 3
        for who in ("cp-7", "cp-8"):  # the allow-list, without a profile (loopback)
            cp = await ChargePoint16(url, who).connect()
            assert await cp.boot() == "Accepted"
            await cp.close()


async def test_unknown_id_never_reaches_the_central_system(
        secrets: list[dict[str, str]]) -> None:
    # Before: any id was proxied upstream, so anyone could pose as any charge point there.
    cs = await CentralSystem16().start()
    try:
        async with running_hub(cfg(cs.url, security_profile=1,
                                   charge_points=secrets)) as (hub, _cap):
            url = await url_of(hub)
            with pytest.raises(InvalidStatus):
                await ChargePoint16(url, "cp-99").connect(**basic("cp-99", PW_7))
            with pytest.raises(InvalidStatus):  # a known id without its password
                await ChargePoint16(url, "cp-8").connect(**basic("cp-8", PW_7))
            assert cs.connections == 0
            cp = await ChargePoint16(url, "cp-7").connect(**basic("cp-7", PW_7))
            assert await cp.boot() == "Accepted"
            await cp.close()
            assert cs.connections == 1
    finally:
        await cs.stop()


# ---- profile 1: HTTP Basic per charger ------------------------------------------------


async def test_profile1_wrong_or_missing_password_refused(
        secrets: list[dict[str, str]]) -> None:
    async with running_hub(cfg(security_profile=1, charge_points=secrets)) as (hub, cap):
        url = await url_of(hub)
        attempts = [
            ({}, "no_credentials"),
            (basic("cp-7", "wrong-password-000000"), "bad_credentials"),
            (basic("cp-7", PW_8), "bad_credentials"),  # another charger's password
            (basic("cp-8", PW_8), "bad_credentials"),  # its own, for cp-7's id
            ({"additional_headers": {"Authorization": "Basic !!notbase64"}}, "no_credentials"),
            ({"additional_headers": {"Authorization": "Bearer abc"}}, "no_credentials"),
        ]
        for ws, _why in attempts:
            with pytest.raises(InvalidStatus) as e:
                await ChargePoint16(url, "cp-7").connect(**ws)
            assert e.value.response.status_code == 401
            assert "Basic" in e.value.response.headers.get("WWW-Authenticate", "")
        ad = adapter(hub)
        assert ad.refused["no_credentials"] == 3 and ad.refused["bad_credentials"] == 3
        assert cap.of("charger-2") == [] or all(p["charger"] is None
                                                for p in cap.of("charger-2"))
        for who, pw in (("cp-7", PW_7), ("cp-8", PW_8)):  # file and environment
            cp = await ChargePoint16(url, who).connect(**basic(who, pw))
            assert await cp.boot() == "Accepted"
            await cp.close()


async def test_profile1_impostor_cannot_replace_the_charger(
        secrets: list[dict[str, str]]) -> None:
    # Before: a second connection with the same id superseded the real charger's, and
    # its MeterValues went into city telemetry.
    async with running_hub(cfg(security_profile=1, charge_points=secrets)) as (hub, cap):
        url = await url_of(hub)
        real = await ChargePoint16(url, "cp-7").connect(**basic("cp-7", PW_7))
        try:
            assert await real.boot() == "Accepted"
            await real.status("Available")
            await cap.wait_status("charger-2", lambda p: p["charger"] is not None)
            with pytest.raises(InvalidStatus):
                await ChargePoint16(url, "cp-7").connect(**basic("cp-7", "guessed-password-1"))
            await asyncio.sleep(0.2)
            assert real.ws is not None and real.ws.close_code is None  # still connected
            await real.meter(1234.0, None)
            await cap.wait_status("charger-2", lambda p: p["charger"] is not None
                                  and p["charger"]["meter_total_wh"] == 1234.0)
            assert adapter(hub).refused["bad_credentials"] == 1
        finally:
            await real.close()


async def test_missing_secret_refuses_with_503_not_a_crash(tmp_path: Path) -> None:
    cps = [{"id": "cp-7", "password_file": str(tmp_path / "absent.key")},
           {"id": "cp-8", "password_env": "SMARTPOLE_OCPP_UNSET_FOR_TEST"}]
    short = tmp_path / "short.key"
    short.write_text("tooshort\n")
    cps.append({"id": "cp-9", "password_file": str(short)})
    async with running_hub(cfg(security_profile=1, charge_points=cps)) as (hub, _cap):
        url = await url_of(hub)
        for who in ("cp-7", "cp-8", "cp-9"):
            with pytest.raises(InvalidStatus) as e:
                await ChargePoint16(url, who).connect(**basic(who, "tooshort"))
            assert e.value.response.status_code == 503
        assert adapter(hub).refused["secret_unavailable"] == 3
        # The server is still up: a later fix of the file takes effect without a restart.
        (tmp_path / "absent.key").write_text(PW_7)
        cp = await ChargePoint16(url, "cp-7").connect(**basic("cp-7", PW_7))
        assert await cp.boot() == "Accepted"
        await cp.close()


def test_basic_credentials_parser() -> None:
    tok = base64.b64encode(b"cp-7:pa:ss").decode()
    assert basic_credentials(f"Basic {tok}") == ("cp-7", "pa:ss")
    assert basic_credentials(f"basic  {tok} ") == ("cp-7", "pa:ss")
    for bad in (None, "", "Basic", "Basic ***", "Digest x", "Basic " +
                base64.b64encode(b"nocolon").decode(), "Basic " +
                base64.b64encode(b"\xff\xfe:x").decode()):
        assert basic_credentials(bad) is None


# ---- profile 2: TLS -------------------------------------------------------------------


def make_tls(d: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it (cryptography)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smartpole test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pole")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_p, cert_p, key_p = d / "ca.pem", d / "pole.crt", d / "pole.key"
    ca_p.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_p.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    key_p.chmod(0o600)
    return ca_p, cert_p, key_p


async def test_profile2_tls_required(secrets: list[dict[str, str]], tmp_path: Path) -> None:
    ca, cert, key = make_tls(tmp_path)
    conf = cfg(security_profile=2, charge_points=secrets, tls_cert_file=str(cert),
               tls_key_file=str(key))
    client_tls = ssl.create_default_context(cafile=str(ca))
    async with running_hub(conf) as (hub, cap):
        url = await url_of(hub)
        assert url.startswith("wss://")
        plain = "ws://" + url.removeprefix("wss://")
        # A plain connection, even with the right password: the TLS handshake fails.
        with pytest.raises((InvalidMessage, OSError, EOFError)):
            await asyncio.wait_for(
                ChargePoint16(plain, "cp-7").connect(**basic("cp-7", PW_7), open_timeout=3),
                5.0)
        # TLS with a wrong password: refused all the same.
        with pytest.raises(InvalidStatus) as e:
            await ChargePoint16(url, "cp-7").connect(ssl=client_tls,
                                                     **basic("cp-7", "wrong-password-000000"))
        assert e.value.response.status_code == 401
        # A client that does not trust the pole's certificate does not connect.
        with pytest.raises(ssl.SSLCertVerificationError):
            await ChargePoint16(url, "cp-7").connect(ssl=ssl.create_default_context(),
                                                     **basic("cp-7", PW_7))
        cp = await ChargePoint16(url, "cp-7").connect(ssl=client_tls, **basic("cp-7", PW_7))
        try:
            assert await cp.boot() == "Accepted"
            await cp.status("Charging")
            await cap.wait_status("charger-2", lambda p: p["charger"] is not None and
                                  p["charger"]["connector_state"] == "Charging")
            assert cp.ws is not None and cp.ws.transport.get_extra_info("ssl_object") \
                .version() in ("TLSv1.2", "TLSv1.3")
        finally:
            await cp.close()


async def test_profile2_bad_certificate_is_an_adapter_error(
        secrets: list[dict[str, str]], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Never a fallback to plain ws://: no certificate, no server (and a clear log line).
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    conf = cfg(security_profile=2, charge_points=secrets, tls_cert_file=str(junk),
               tls_key_file=str(junk))
    async with running_hub(conf) as (hub, _cap):
        for _ in range(100):
            if "cannot be loaded" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert f"TLS certificate {junk}" in caplog.text and "adapter_error" in caplog.text
        assert not adapter(hub).listening.is_set() and adapter(hub)._server is None
