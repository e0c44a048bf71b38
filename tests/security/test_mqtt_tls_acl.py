"""MQTT security with a real mosquitto running the shipped configuration
(deploy/mosquitto/smartpole.conf, with its paths and port moved into a temp dir) and
the shipped per-pole ACL (deploy/mosquitto/acl): per-pole client certificates over
TLS, a certificate revocation list. A wrong or revoked certificate is refused; a pole
publishing outside its own topics is refused (MQTT 5 reason code, counted by the
controller) and the message never reaches a subscriber; one pole's certificate
cannot take over another pole's session by sending its client id."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from polesim.broker import free_port, mosquitto_path, wait_port

from edge_controller.config import MqttConfig
from edge_controller.uplink.mqtt import Record, Uplink
from edge_controller.uplink.topics import Topics
from tests.support import need

ROOT = Path(__file__).resolve().parents[2]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, ca: bool = False,
          san: str | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san),
                            x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if mosquitto_path() is None:
        need("mosquitto is not installed")
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("smartpole test CA", ca_key, _name("smartpole test CA"), ca_key, ca=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cn in ("server", "pole-a", "pole-b", "city-backend", "signal-feed"):
        k = _key()
        _write(d, cn, _cert(cn, k, ca.subject, ca_key, san="localhost" if cn == "server"
                            else None), k)
    rogue_key = _key()
    rogue_ca = _cert("rogue CA", rogue_key, _name("rogue CA"), rogue_key, ca=True)
    k = _key()
    _write(d, "rogue", _cert("pole-a", k, rogue_ca.subject, rogue_key), k)
    # A pole certificate from the right CA, then revoked.
    k = _key()
    revoked = _cert("pole-c", k, ca.subject, ca_key)
    _write(d, "pole-c", revoked, k)
    now = dt.datetime.now(dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
           .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                    .serial_number(revoked.serial_number)
                                    .revocation_date(now - dt.timedelta(minutes=1)).build())
           .sign(ca_key, hashes.SHA256()))
    (d / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(shipped_conf(port, d))
    proc = subprocess.Popen([mosquitto_path() or "mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 10, proc)
        yield port, d
    finally:
        proc.terminate()
        proc.wait(5)


def shipped_conf(port: int, d: Path) -> str:
    """deploy/mosquitto/smartpole.conf with its files in `d`, on a loopback port."""
    text = (ROOT / "deploy" / "mosquitto" / "smartpole.conf").read_text()
    text = text.replace("/etc/mosquitto/smartpole/acl", str(ROOT / "deploy/mosquitto/acl"))
    text = text.replace("/etc/mosquitto/smartpole/", f"{d}/")
    text = text.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    text = text.replace("persistence true", "persistence false")
    assert f"listener {port}" in text and "crlfile" in text and "use_username_as_clientid" in text
    # As root, mosquitto drops to its own user, which cannot read our 0700 temp dir.
    head = "user root\n" if os.geteuid() == 0 else ""
    return head + text + f"\nlog_dest file {d}/mosquitto.log\n"


def _client(port: int, d: Path, who: str, received: list[tuple[str, bytes]] | None = None,
            client_id: str = "") -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                    client_id=client_id)
    c.tls_set(ca_certs=str(d / "ca.pem"), certfile=str(d / f"{who}.pem"),
              keyfile=str(d / f"{who}.key"))
    if received is not None:
        c.on_message = lambda _c, _u, m: received.append((m.topic, bytes(m.payload)))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _accepted(port: int, d: Path, cert: str | None) -> bool:
    """True if the broker completes an MQTT CONNECT with this client certificate."""
    ok = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(d / "ca.pem"),
              certfile=str(d / f"{cert}.pem") if cert else None,
              keyfile=str(d / f"{cert}.key") if cert else None)
    c.on_connect = lambda _c, _u, _f, rc, _p: ok.set() if not rc.is_failure else None
    try:
        c.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError):
        return False  # refused during the handshake
    c.loop_start()
    try:
        # TLS 1.3 checks the client certificate after the client's side of the
        # handshake, so a refusal can also arrive as a closed connection here.
        return ok.wait(3)
    finally:
        c.loop_stop()
        c.disconnect()


def test_wrong_certificate_is_refused(tls_broker: tuple[int, Path]) -> None:
    port, d = tls_broker
    assert _accepted(port, d, "pole-a")  # the fixture works: a good cert gets in
    assert not _accepted(port, d, "rogue")  # right CN, wrong CA
    assert not _accepted(port, d, None)  # no client certificate at all


def test_revoked_certificate_is_refused(tls_broker: tuple[int, Path]) -> None:
    port, d = tls_broker
    assert not _accepted(port, d, "pole-c")  # signed by our CA, but on the CRL
    assert _accepted(port, d, "pole-b")


def test_a_pole_certificate_cannot_take_over_another_poles_session(
    tls_broker: tuple[int, Path]
) -> None:
    port, d = tls_broker
    gone = threading.Event()
    got_b: list[tuple[str, bytes]] = []
    ready = threading.Event()
    b = _client(port, d, "pole-b", got_b, client_id="smartpole-pole-b")
    b.on_disconnect = lambda *a: gone.set()
    b.on_subscribe = lambda *a: ready.set()
    b.subscribe("smartpole/v1/pole-b/cmd", qos=1)
    assert ready.wait(5)
    intruder = _client(port, d, "pole-a", client_id="smartpole-pole-b")
    backend = _client(port, d, "city-backend")
    try:
        time.sleep(0.5)
        assert not gone.is_set(), "pole-b was kicked off by a certificate for pole-a"
        backend.publish("smartpole/v1/pole-b/cmd", b'{"for": "b"}', qos=1).wait_for_publish(5)
        for _ in range(30):
            if got_b:
                break
            time.sleep(0.1)
        assert got_b == [("smartpole/v1/pole-b/cmd", b'{"for": "b"}')]
    finally:
        for c in (intruder, backend, b):
            c.loop_stop()
            c.disconnect()


def test_acl_keeps_a_pole_to_its_own_topics(tls_broker: tuple[int, Path]) -> None:
    port, d = tls_broker
    got: list[tuple[str, bytes]] = []
    backend = _client(port, d, "city-backend", got)
    ready = threading.Event()
    backend.on_subscribe = lambda *a: ready.set()
    backend.subscribe("smartpole/v1/#", qos=1)
    assert ready.wait(5)
    pole = _client(port, d, "pole-a")
    try:
        time.sleep(0.3)
        assert pole.publish("smartpole/v1/pole-a/events", b'{"own": 1}', qos=1) \
            .wait_for_publish(5) is None
        pole.publish("smartpole/v1/pole-b/events", b'{"forged": 1}', qos=1).wait_for_publish(5)
        pole.publish("smartpole/v1/pole-a/cmd", b'{"self-command": 1}', qos=1) \
            .wait_for_publish(5)
        time.sleep(1.0)
    finally:
        pole.loop_stop()
        pole.disconnect()
        backend.loop_stop()
        backend.disconnect()
    topics = [t for t, _ in got]
    assert "smartpole/v1/pole-a/events" in topics
    assert "smartpole/v1/pole-b/events" not in topics  # never reached a subscriber
    assert "smartpole/v1/pole-a/cmd" not in topics  # a pole cannot command itself


def test_controller_uplink_over_tls_counts_refused_publishes(
    tls_broker: tuple[int, Path]
) -> None:
    port, d = tls_broker
    cfg = MqttConfig(url=f"mqtts://localhost:{port}", ca_file=d / "ca.pem",
                     cert_file=d / "pole-a.pem", key_file=d / "pole-a.key",
                     reconnect_min_s=0.2)
    got: list[tuple[str, bytes]] = []
    backend = _client(port, d, "city-backend", got)
    backend.subscribe("smartpole/v1/#", qos=1)

    async def noop(_: bytes) -> None:
        return None

    async def go() -> Uplink:
        up = Uplink(cfg, Topics("smartpole/v1", "pole-a"), lambda: {"x": 1}, noop)
        task = asyncio.create_task(up.run())
        for _ in range(100):
            if up.connected:
                break
            await asyncio.sleep(0.05)
        up.event("door_opened", {})
        # A record for another pole's topic: the broker refuses it with a reason code.
        up.publish(Record("smartpole/v1/pole-b/events", up.stamp({"event": "forged"})))
        up.event("door_closed", {})
        await up.flush(5)
        task.cancel()
        return up

    try:
        up = asyncio.run(go())
        time.sleep(0.5)
    finally:
        backend.loop_stop()
        backend.disconnect()
    assert up.protocol == "5"
    assert up.refused == 1 and up.published >= 2
    events = [json.loads(p)["event"] for t, p in got if t.endswith("/events")]
    assert events == ["door_opened", "door_closed"]


def test_only_the_signal_feed_identity_writes_a_poles_signal_topic(
    tls_broker: tuple[int, Path]
) -> None:
    # Before: the signal feed (audio warnings) was unauthenticated; the backend identity
    # could write it too. Now only the signal-feed certificate can, and the pole reads
    # only its own.
    port, d = tls_broker
    got: list[tuple[str, bytes]] = []
    pole = _client(port, d, "pole-a", got)
    ready = threading.Event()
    pole.on_subscribe = lambda *a: ready.set()
    pole.subscribe("smartpole/v1/pole-a/signal", qos=1)
    assert ready.wait(5)
    senders = {who: _client(port, d, who) for who in ("city-backend", "pole-b", "signal-feed")}
    try:
        time.sleep(0.3)
        for who, c in senders.items():
            c.publish("smartpole/v1/pole-a/signal", json.dumps({"from": who}).encode(),
                      qos=1).wait_for_publish(5)
        time.sleep(1.0)
    finally:
        for c in (*senders.values(), pole):
            c.loop_stop()
            c.disconnect()
    assert [json.loads(p)["from"] for _, p in got] == ["signal-feed"]
