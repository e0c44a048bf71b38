"""OCPP 1.6J end to end: the ocpp-package charge point <-> the pole's proxy (answering itself
or forwarding to an ocpp-package central system) <-> hub callback."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from polesim.peripherals.demo import free_port
from polesim.peripherals.ocpp import SimCentralSystem, SimChargePoint
from websockets.exceptions import InvalidStatus

from edge_controller.peripherals.hub import PeripheralHub
from edge_controller.peripherals.ocpp_proxy import OcppProxyAdapter

from .conftest import Captured, running_hub, state

LOST_AFTER_S = 1.0
SLACK_S = 1.0  # the hub's tick, a WebSocket handshake and a loaded 2-core CI machine
SESSION = ["Available", "Preparing", "Charging", "Finishing", "Available"]


def cfg(upstream_url: str | None = None, **ocpp: Any) -> dict[str, Any]:
    return {"devices": [{"id": "charger-2", "kind": "ocpp_charger", "lost_after_s": LOST_AFTER_S,
                         "ocpp": {"listen_host": "127.0.0.1", "listen_port": 0,
                                  "charge_point_id": "cp-7", "upstream_url": upstream_url,
                                  "ping_s": 2.0, **ocpp}}],
            "degraded_hold_s": 0.5}


async def proxy_url(hub: PeripheralHub) -> str:
    ad = hub.adapters["charger-2"]
    assert isinstance(ad, OcppProxyAdapter)
    await ad.listening.wait()
    return ad.url


async def run_session(cp: SimChargePoint, cap: Captured) -> dict[str, Any]:
    assert await cp.boot() == "Accepted"
    await cp.status("Available")
    wh = await cp.session(power_w=7400.0, hours=0.5)
    assert wh == pytest.approx(3700.0)
    _, p = await cap.wait_status("charger-2", lambda p: p["charger"] is not None
                                 and p["charger"]["connector_state"] == "Available"
                                 and p["charger"]["session_energy_wh"] == 3700.0)
    assert cap.states("charger-2") == SESSION
    charging = [p["charger"] for p in cap.of("charger-2")
                if p["charger"] and p["charger"]["connector_state"] == "Charging"]
    metered = [c for c in charging if c["power_w"]]
    assert metered and metered[-1]["power_w"] == 7400.0 and metered[-1]["voltage_v"] == 230.0
    assert metered[-1]["current_a"] == pytest.approx(32.17)
    assert charging[-1]["power_w"] == 0.0  # StopTransaction came before Finishing
    energies = [c["session_energy_wh"] for c in charging]
    assert energies == sorted(energies) and energies[-1] == pytest.approx(3700.0)
    return dict(p["charger"])


async def test_session_answered_locally() -> None:
    async with running_hub(cfg()) as (hub, cap):
        cp = await SimChargePoint(await proxy_url(hub), cp_id="cp-7").connect()
        try:
            final = await run_session(cp, cap)
            tx = {p["charger"]["transaction_id"] for p in cap.of("charger-2")
                  if p["charger"] and p["charger"]["connector_state"] == "Charging"}
            assert tx == {1, None} and cp.transaction_id is None  # None: after StopTransaction
            assert final["transaction_id"] is None
            assert final["meter_total_wh"] == pytest.approx(cp.meter_wh)
            assert hub.healthy and not cap.events
        finally:
            await cp.close()


async def test_session_through_the_proxy_reaches_upstream_unchanged() -> None:
    cs = await SimCentralSystem().start()
    try:
        async with running_hub(cfg(cs.url)) as (hub, cap):
            cp = SimChargePoint(await proxy_url(hub), cp_id="cp-7", auth="Basic Y3AtNzpzZWNyZXQ=")
            await cp.connect()
            try:
                await run_session(cp, cap)
                tx = {p["charger"]["transaction_id"] for p in cap.of("charger-2")
                      if p["charger"] and p["charger"]["connector_state"] == "Charging"}
                assert tx == {1000, None}  # the central system's transaction id
                # A CALL from the central system goes through to the charger and back.
                assert await cs.trigger_status("cp-7") == "Accepted"
                await _until(lambda: len(cs.sent) == 14 and len(cp.sent) == 14
                             and len(cs.received) == len(cp.sent)
                             and len(cp.received) == len(cs.sent))
            finally:
                await cp.close()
            # Every frame, both ways, byte for byte and in order.
            assert cs.received == cp.sent and cp.received == cs.sent
            # 12 CALLs of the session, then the triggered StatusNotification and the
            # charger's CALLRESULT to TriggerMessage.
            assert len(cp.sent) == 14 and all(isinstance(m, str) for m in cp.sent)
            assert cs.paths == ["/ocpp/cp-7"] and cs.auth_headers == ["Basic Y3AtNzpzZWNyZXQ="]
            assert cs.statuses == [*SESSION, "Available"]
            ad = hub.adapters["charger-2"]
            assert isinstance(ad, OcppProxyAdapter) and ad.observer.rejected == 0
    finally:
        await cs.stop()


async def _until(pred: Any, within_s: float = 3.0) -> None:
    import asyncio

    end = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.01)


BAD: list[str | bytes] = ["this is not json", b"\x00binary", '[2, "bad-1", "StatusNotification", '
       '{"connectorId": "one", "errorCode": "NoError", "status": "Available"}]',
       '[2, "bad-2", "Teleport", {}]', '[7, "x"]']


@pytest.mark.parametrize("with_upstream", [False, True], ids=["local", "proxy"])
async def test_malformed_messages_are_rejected_logged_and_survived(
        with_upstream: bool, caplog: pytest.LogCaptureFixture) -> None:
    cs = await SimCentralSystem().start() if with_upstream else None
    try:
        async with running_hub(cfg(cs.url if cs else None)) as (hub, cap):
            cp = await SimChargePoint(await proxy_url(hub), cp_id="cp-7").connect()
            try:
                await cp.boot()
                await cp.status("Available")
                ad = hub.adapters["charger-2"]
                assert isinstance(ad, OcppProxyAdapter)
                with caplog.at_level(logging.WARNING, logger="edge_controller.peripherals"):
                    for frame in BAD:
                        await cp.send_raw(frame)
                    _, p = await cap.wait_status("charger-2",
                                                 lambda p: p["health"] == "degraded")
                    await _until(lambda: ad.observer.rejected == len(BAD))
                assert p["reasons"] == ["malformed_message"]
                logged = " ".join(r.getMessage() for r in caplog.records)
                for why in ("not valid JSON", "binary frame", "connectorId",
                            "unknown OCPP 1.6 action", "isn't valid"):
                    assert why in logged, why
                # Still relaying: the next valid message is seen.
                await cp.status("Preparing")
                await cap.wait_status("charger-2", lambda p: state(p) == "Preparing")
                await cap.wait_status("charger-2", lambda p: p["health"] == "ok", within_s=3)
                assert ad.observer.rejected == len(BAD)
                if cs is not None:  # transparent: the central system got them as they were
                    await _until(lambda: len(cs.received) == len(cp.sent))
                    assert cs.received == cp.sent
                else:  # answering locally, the bad CALLs got a CALLERROR
                    errors = [json.loads(m) for m in cp.received if isinstance(m, str)
                              and m.startswith("[4")]
                    assert {e[1] for e in errors} == {"bad-1", "bad-2"}
            finally:
                await cp.close()
    finally:
        if cs is not None:
            await cs.stop()


async def test_a_closed_websocket_is_lost_in_time_and_restored_on_reconnect() -> None:
    async with running_hub(cfg()) as (hub, cap):
        url = await proxy_url(hub)
        cp = await SimChargePoint(url, cp_id="cp-7").connect()
        await cp.boot()
        await cp.status("Charging")
        await cap.wait_status("charger-2", lambda p: p["health"] == "ok" and p["charger"])
        t_close = time.monotonic()
        await cp.close()
        _, p = await cap.wait_status("charger-2", lambda p: p["health"] == "degraded",
                                     after=t_close)
        assert p["reasons"] == ["disconnected"]
        t_lost, ev = await cap.wait_event("periph_lost", "charger-2", within_s=3)
        assert LOST_AFTER_S <= t_lost - t_close <= LOST_AFTER_S + SLACK_S, t_lost - t_close
        assert ev["reasons"] == ["disconnected"]
        _, p = await cap.wait_status("charger-2", lambda p: p["health"] == "lost")
        assert p["charger"]["connector_state"] == "Charging"  # last known
        t_back = time.monotonic()
        await cp.connect()
        t_rest, _ = await cap.wait_event("periph_restored", "charger-2", within_s=3)
        assert t_rest - t_back <= SLACK_S
        await cp.boot()
        await cp.status("Available")
        await cap.wait_status("charger-2", lambda p: p["health"] == "ok"
                              and state(p) == "Available")
        await cp.close()


async def test_a_fault_shows_as_faulted_with_an_event() -> None:
    async with running_hub(cfg()) as (hub, cap):
        cp = await SimChargePoint(await proxy_url(hub), cp_id="cp-7").connect()
        try:
            await cp.boot()
            await cp.status("Available")
            await cp.status("Faulted", error_code="GroundFailure", vendor_error_code="RCD-30mA")
            _, p = await cap.wait_status("charger-2", lambda p: state(p) == "Faulted")
            assert p["charger"]["error_code"] == "RCD-30mA"
            _, ev = await cap.wait_event("periph_fault_raised", "charger-2")
            assert ev["fault"] == "RCD-30mA"
            await cp.status("Available")
            await cap.wait_event("periph_fault_cleared", "charger-2")
        finally:
            await cp.close()


async def test_unreachable_upstream_refuses_the_charger_until_it_is_back() -> None:
    port = free_port()
    cs = SimCentralSystem(port=port)
    async with running_hub(cfg(cs.url, upstream_timeout_s=1.0)) as (hub, cap):
        cp = SimChargePoint(await proxy_url(hub), cp_id="cp-7")
        with pytest.raises(InvalidStatus) as e:
            await cp.connect()
        assert e.value.response.status_code == 502
        _, p = await cap.wait_status("charger-2", lambda p: "upstream_unreachable"
                                     in p["reasons"])
        assert p["health"] == "lost"
        await cs.start()
        try:
            await cp.connect()
            await cp.boot()
            await cp.status("Available")
            await cap.wait_status("charger-2", lambda p: p["health"] == "ok")
            # The central system going away takes the charger's connection with it.
            await cs.drop_connections()
            await _until(lambda: not cp.connected)
            await cap.wait_status("charger-2", lambda p: p["reasons"] == ["disconnected"])
        finally:
            await cp.close()
            await cs.stop()


async def test_an_unknown_charge_point_id_is_refused() -> None:
    async with running_hub(cfg()) as (hub, _cap):
        cp = SimChargePoint(await proxy_url(hub), cp_id="someone-else")
        with pytest.raises(InvalidStatus) as e:
            await cp.connect()
        assert e.value.response.status_code == 404


async def _malformed_upgrade(url: str) -> bytes:
    """An OCPP upgrade request by hand, without Sec-WebSocket-Key: the proxy answers 400
    after it has already opened the upstream."""
    import asyncio
    from urllib.parse import urlsplit

    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    lines = [f"GET {u.path}/cp-7 HTTP/1.1", f"Host: {u.hostname}:{u.port}",
             "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Protocol: ocpp1.6"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(200), 3.0)
    writer.close()
    return answer


async def test_a_failed_charger_handshake_leaves_no_upstream_open() -> None:
    """The proxy opens the central system's side before it answers the charger; when the
    charger's side of the handshake then fails, that upstream must be closed, not left
    open as a ghost charger (it was, one per failed handshake, before the watcher)."""
    cs = await SimCentralSystem().start()
    try:
        async with running_hub(cfg(cs.url)) as (hub, _cap):
            url = await proxy_url(hub)
            for _ in range(3):
                answer = await _malformed_upgrade(url)
                assert answer.startswith(b"HTTP/1.1 400"), answer
            await _until(lambda: cs.connections == 3)  # each opened its upstream
            await _until(lambda: not cs._conns)
            ad = hub.adapters["charger-2"]
            assert isinstance(ad, OcppProxyAdapter)
            assert not ad._upstreams
            # and the proxy still serves a real charger
            cp = SimChargePoint(url, cp_id="cp-7")
            await cp.connect()
            try:
                assert await cp.boot() == "Accepted"
            finally:
                await cp.close()
    finally:
        await cs.stop()
