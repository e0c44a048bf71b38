"""What an independent integrator found (issue 13), checked with peers written from the
protocol specs (tests/peripherals/peers.py), not with the pole's simulators."""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import serial
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from edge_controller.peripherals.config import ModbusSettings, OcppSettings
from edge_controller.peripherals.hub import PeripheralHub
from edge_controller.peripherals.modbus_charger import ModbusBus, ModbusReject
from edge_controller.peripherals.ocpp_proxy import MAX_FRAME_BYTES, OcppProxyAdapter

from .conftest import running_hub, state
from .peers import (
    CentralSystem16,
    ChargePoint16,
    ModbusSlave,
    PtyCable,
    float32_words,
    free_port,
    int16_word,
)

CP_ID = "cp-indie"


def ocpp_cfg(upstream_url: str | None = None, lost_after_s: float = 1.0,
             degraded_hold_s: float = 0.5, **ocpp: Any) -> dict[str, Any]:
    return {"devices": [{"id": "charger-2", "kind": "ocpp_charger", "lost_after_s": lost_after_s,
                         "ocpp": {"listen_host": "127.0.0.1", "listen_port": 0,
                                  "charge_point_id": CP_ID, "upstream_url": upstream_url,
                                  **ocpp}}],
            "degraded_hold_s": degraded_hold_s}


async def proxy_url(hub: PeripheralHub) -> str:
    ad = hub.adapters["charger-2"]
    assert isinstance(ad, OcppProxyAdapter)
    await ad.listening.wait()
    return ad.url


# ---- 1. a charger that goes silent without closing its socket ------------------------------

# The spec's deadline: the next ping comes at most ping_s after the charger fell silent, its
# pong is waited for ping_s, then the closing handshake (which a hung charger never completes)
# is given CLOSE_S before the socket is dropped. Lost follows lost_after_s after that.
CLOSE_S = 1.0
SLACK_S = 1.0


@pytest.mark.parametrize("ping_s", [None, 1.0], ids=["default-ping", "short-ping"])
async def test_a_silent_charger_is_noticed_and_lost_within_the_stated_deadline(
        ping_s: float | None) -> None:
    extra = {} if ping_s is None else {"ping_s": ping_s}
    ping = OcppSettings(**extra).ping_s
    lost_after_s = 2.0
    noticed_by = 2 * ping + CLOSE_S
    async with running_hub(ocpp_cfg(lost_after_s=lost_after_s, **extra)) as (hub, cap):
        cp = await ChargePoint16(await proxy_url(hub), CP_ID).connect(ping_interval=None)
        try:
            assert await cp.boot() == "Accepted"
            await cp.status("Charging")
            await cap.wait_status("charger-2", lambda p: p["health"] == "ok" and
                                  state(p) == "Charging")
            t_silent = time.monotonic()
            cp.go_silent()
            t_noticed, p = await cap.wait_status(
                "charger-2", lambda p: "disconnected" in p["reasons"], after=t_silent,
                within_s=noticed_by + SLACK_S + 1)
            assert p["health"] == "degraded"
            t_lost, ev = await cap.wait_event("periph_lost", "charger-2", after=t_silent,
                                              within_s=lost_after_s + SLACK_S + 1)
            assert ev["reasons"] == ["disconnected"]
            noticed, lost = t_noticed - t_silent, t_lost - t_silent
            # Not before a ping went unanswered for ping_s, not after the deadline.
            assert ping <= noticed <= noticed_by + SLACK_S, noticed
            assert lost <= noticed_by + lost_after_s + SLACK_S, lost
            assert lost - noticed >= lost_after_s - 0.1, (noticed, lost)
        finally:
            await cp.close()


# ---- 3. a rejected StartTransaction keeps the last session ---------------------------------


async def _until(pred: Any, within_s: float = 3.0) -> None:
    end = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("with_upstream", [False, True], ids=["local", "proxy"])
async def test_a_rejected_start_transaction_keeps_the_last_sessions_energy(
        with_upstream: bool) -> None:
    cs = await CentralSystem16(accept=("TAG-OK",)).start() if with_upstream else None
    c = ocpp_cfg(cs.url if cs else None, accept_id_tags=["TAG-OK"])
    try:
        async with running_hub(c) as (hub, cap):
            cp = await ChargePoint16(await proxy_url(hub), CP_ID).connect()
            try:
                assert await cp.boot() == "Accepted"
                await cp.status("Preparing")
                ok = await cp.start_tx("TAG-OK", meter_start=10_000)
                assert ok.id_tag_info["status"] == "Accepted"
                await cp.status("Charging")
                await cp.meter(11_000, ok.transaction_id)
                await cp.stop_tx(ok.transaction_id, meter_stop=11_500)
                await cp.status("Finishing")
                _, p = await cap.wait_status("charger-2", lambda p: state(p) == "Finishing")
                assert p["charger"]["session_energy_wh"] == 1500.0
                assert p["charger"]["transaction_id"] is None
                t_bad = time.monotonic()
                bad = await cp.start_tx("TAG-BAD", meter_start=11_500)
                assert bad.id_tag_info["status"] == "Invalid"
                assert bad.transaction_id == ok.transaction_id + 1  # an id, but no session
                # The charger ends what it was refused (OCPP 1.6: reason DeAuthorized).
                await cp.stop_tx(bad.transaction_id, meter_stop=11_500)
                await cp.status("Available")
                _, p = await cap.wait_status("charger-2", lambda p: state(p) == "Available")
                after = [q["charger"] for t, d, q in cap.statuses if t >= t_bad]
                assert after and all(c["session_energy_wh"] == 1500.0 and
                                     c["transaction_id"] is None for c in after), after
                assert p["charger"]["meter_total_wh"] == 11_500.0
                assert p["health"] == "ok"
            finally:
                await cp.close()
    finally:
        if cs is not None:
            await cs.stop()


# ---- 4. a charge point that offers no subprotocol -----------------------------------------


@pytest.mark.parametrize("offered", [[], ["ocpp2.0.1"]], ids=["none", "other"])
@pytest.mark.parametrize("with_upstream", [False, True], ids=["local", "proxy"])
async def test_no_ocpp16_subprotocol_is_accepted_then_closed_with_one_log_line(
        offered: list[str], with_upstream: bool, caplog: pytest.LogCaptureFixture) -> None:
    cs = await CentralSystem16().start() if with_upstream else None
    try:
        async with running_hub(ocpp_cfg(cs.url if cs else None)) as (hub, cap):
            url = await proxy_url(hub)
            good = await ChargePoint16(url, CP_ID).connect()
            try:
                await good.boot()
                await good.status("Available")
                await cap.wait_status("charger-2", lambda p: p["health"] == "ok"
                                      and state(p) == "Available")
                with caplog.at_level(logging.DEBUG):
                    caplog.clear()
                    # OCPP-J: the handshake completes (no HTTP 400), then the pole closes.
                    async with connect(f"{url}/{CP_ID}", subprotocols=[
                            Subprotocol(s) for s in offered] or None) as ws:
                        assert ws.subprotocol is None
                        with pytest.raises(ConnectionClosed) as e:
                            await ws.recv()
                        assert e.value.rcvd is not None and e.value.rcvd.code == 1002
                        assert "ocpp1.6" in e.value.rcvd.reason
                    _, p = await cap.wait_status("charger-2", lambda p: "malformed_message"
                                                 in p["reasons"])
                ours = [r for r in caplog.records if r.levelno >= logging.WARNING]
                assert len(ours) == 1, [r.getMessage() for r in ours]
                assert "without offering subprotocol ocpp1.6" in ours[0].getMessage()
                assert not any(r.exc_info for r in caplog.records)
                # The charger that speaks OCPP 1.6J was not superseded by the one that does not.
                assert p["health"] == "degraded" and "disconnected" not in p["reasons"]
                await good.status("Preparing")
                await cap.wait_status("charger-2", lambda p: state(p) == "Preparing")
                if cs is not None:
                    assert cs.connections == 1  # nothing was opened upstream for it
            finally:
                await good.close()
    finally:
        if cs is not None:
            await cs.stop()


# ---- 5. the frame size limit ---------------------------------------------------------------


async def test_frames_up_to_1_mib_are_read_and_a_bigger_one_closes_with_1009(
        caplog: pytest.LogCaptureFixture) -> None:
    async with running_hub(ocpp_cfg()) as (hub, cap):
        cp = await ChargePoint16(await proxy_url(hub), CP_ID).connect()
        try:
            await cp.boot()
            await cp.status("Available")
            assert cp.ws is not None
            ad = hub.adapters["charger-2"]
            assert isinstance(ad, OcppProxyAdapter)
            with caplog.at_level(logging.WARNING, logger="edge_controller.peripherals"):
                await cp.ws.send("x" * MAX_FRAME_BYTES)  # at the limit: read, rejected as JSON
                await _until(lambda: ad.observer.rejected == 1)
                await cp.status("Preparing")  # and the connection goes on
                await cap.wait_status("charger-2", lambda p: state(p) == "Preparing")
                await cp.ws.send("x" * (MAX_FRAME_BYTES + 1))
                await _until(lambda: cp.ws is not None and cp.ws.close_code is not None)
                assert cp.ws.close_code == 1009
                _, p = await cap.wait_status("charger-2", lambda p: "disconnected"
                                             in p["reasons"])
            assert p["reasons"] == ["disconnected", "malformed_message"]
            assert any(f"over {MAX_FRAME_BYTES} bytes; closed with 1009" in r.getMessage()
                       for r in caplog.records)
        finally:
            await cp.close()


# ---- 6. upstream_unreachable is a condition --------------------------------------------------


async def test_upstream_unreachable_clears_as_soon_as_relaying_resumes() -> None:
    cs = await CentralSystem16(port=free_port()).start()
    # Long hold and long lost_after_s: the charger is away for less than lost_after_s (so
    # nothing is forgiven as part of a loss), and a failed exchange would keep the device
    # degraded for the rest of the test.
    c = ocpp_cfg(cs.url, lost_after_s=20.0, degraded_hold_s=30.0, upstream_timeout_s=1.0)
    async with running_hub(c) as (hub, cap):
        url = await proxy_url(hub)
        cp = await ChargePoint16(url, CP_ID).connect()
        try:
            assert await cp.boot() == "Accepted"
            await cp.status("Available")
            await cap.wait_status("charger-2", lambda p: p["health"] == "ok")
            await cs.stop()  # the central system goes away, the charger's connection with it
            await _until(lambda: cp.ws is not None and cp.ws.close_code is not None)
            with pytest.raises(InvalidStatus) as e:  # the charger retries, as chargers do
                await cp.connect()
            assert e.value.response.status_code == 502
            _, p = await cap.wait_status("charger-2", lambda p: "upstream_unreachable"
                                         in p["reasons"])
            assert p["health"] == "degraded"
            await cs.start()
            t_back = time.monotonic()
            await cp.connect()
            await cp.status("Available")
            t_ok, p = await cap.wait_status("charger-2", lambda p: p["health"] == "ok",
                                            after=t_back, within_s=3.0)
            assert p["reasons"] == []
            assert all("upstream_unreachable" not in q["reasons"]
                       for t, _, q in cap.statuses if t >= t_ok)
        finally:
            await cp.close()
            await cs.stop()


# ---- 7. actions the pole does not handle -------------------------------------------------------


@dataclass
class Teleport:  # not an OCPP 1.6 action; ocpp names the CALL after the class
    destination: str = "moon"


async def test_every_16_charge_point_action_is_answered_and_invalid_ones_degrade() -> None:
    async with running_hub(ocpp_cfg(degraded_hold_s=30.0)) as (hub, cap):
        cp = await ChargePoint16(await proxy_url(hub), CP_ID).connect()
        try:
            await cp.boot()
            await cp.status("Available")
            # Valid OCPP 1.6 that the pole has no use for: answered as the spec says, no harm.
            r = await cp.call(call.DataTransfer(vendor_id="com.indie", message_id="x"),
                              suppress=False)
            assert r.status == "UnknownVendorId"
            await cp.call(call.FirmwareStatusNotification(status="Idle"), suppress=False)
            await cp.call(call.DiagnosticsStatusNotification(status="Idle"), suppress=False)
            await cp.status("Preparing")
            _, p = await cap.wait_status("charger-2", lambda p: state(p) == "Preparing")
            assert p["health"] == "ok" and p["reasons"] == []
            # Not OCPP 1.6, or the central system's action sent by the charger: invalid.
            with pytest.raises(OCPPError) as e:
                await cp.call(Teleport(), suppress=False, skip_schema_validation=True)
            assert e.value.code == "NotSupported"
            _, p = await cap.wait_status("charger-2", lambda p: p["health"] == "degraded")
            assert p["reasons"] == ["malformed_message"]
            with pytest.raises(OCPPError) as e:
                await cp.call(call.Reset(type="Soft"), suppress=False)
            assert e.value.code == "NotImplemented"
            ad = hub.adapters["charger-2"]
            assert isinstance(ad, OcppProxyAdapter) and ad.observer.rejected == 2
        finally:
            await cp.close()


# ---- Modbus: an independent RTU slave on a pty cable ---------------------------------------

# A charger whose register map differs from ours in every way a profile allows: input
# registers at 0x1000, float32 with the low word first, signed scaled values.
INDIE_PROFILE = {
    "name": "indie-ac", "table": "input",
    "connector_state": {"address": 0x1000}, "fault_code": {"address": 0x1001},
    "voltage": {"address": 0x1010, "type": "float32", "word_order": "little"},
    "current": {"address": 0x1012, "type": "int16", "scale": 0.01},
    "power": {"address": 0x1014, "type": "int32", "word_order": "little"},
    "session_energy": {"address": 0x1020, "type": "float32", "word_order": "little",
                       "scale": 1000.0},
    "meter_total": {"address": 0x1022, "type": "float32", "word_order": "little",
                    "scale": 1000.0},
    "state_map": {1: "Available", 2: "Preparing", 3: "Charging", 9: "Faulted"},
}


def indie_image(voltage: float, current_ca: int, power: int, session_kwh: float,
                meter_kwh: float, state: int = 3) -> dict[int, int]:
    p = struct.pack("<i", power)  # int32, low word first
    regs = {0x1000: state, 0x1001: 0, 0x1012: int16_word(current_ca),
            0x1014: int.from_bytes(p[0:2], "little"), 0x1015: int.from_bytes(p[2:4], "little")}
    for addr, v in ((0x1010, voltage), (0x1020, session_kwh), (0x1022, meter_kwh)):
        regs[addr], regs[addr + 1] = float32_words(v, low_word_first=True)
    return regs


def modbus_cfg(port: str, **modbus: Any) -> dict[str, Any]:
    return {"devices": [{"id": "charger-1", "kind": "modbus_charger", "poll_s": 0.1,
                         "lost_after_s": 1.0,
                         "modbus": {"port": port, "timeout_s": 0.2, "profile": "indie-ac",
                                    **modbus}}],
            "modbus_profiles": [INDIE_PROFILE], "degraded_hold_s": 0.5}


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The garbage collector may take arbitrarily long to reach a dropped object (in the
    field it never did): a port must be released without its help."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
async def cable() -> AsyncIterator[PtyCable]:
    c = PtyCable()
    yield c
    c.close()


@pytest.fixture
async def slave(cable: PtyCable) -> AsyncIterator[ModbusSlave]:
    s = await ModbusSlave(cable.b).start()
    yield s
    await s.stop()


# ---- 8. float32 values at the meter's resolution ----------------------------------------------


async def test_float32_values_are_published_at_the_meters_resolution(
        cable: PtyCable, slave: ModbusSlave) -> None:
    slave.regs = indie_image(230.7, -1234, -2838, 12.34, 1255.12)
    async with running_hub(modbus_cfg(cable.a)) as (_hub, cap):
        _, p = await cap.wait_status("charger-1", lambda p: state(p) == "Charging")
        c = p["charger"]
        # float32 stores 1255.12 as 1255.1199951171875 and 230.7 as 230.6999969482422.
        assert c["meter_total_wh"] == 1255120.0
        assert c["session_energy_wh"] == 12340.0
        assert c["voltage_v"] == 230.7
        assert c["current_a"] == -12.34 and c["power_w"] == -2838.0  # signed, scaled
        assert p["health"] == "ok"
        # A value float32 holds exactly stays as it is; one past 7 digits keeps what it has.
        slave.regs = indie_image(229.5, 100, 2300, 0.5, 1255.1234, state=1)
        _, p = await cap.wait_status("charger-1", lambda p: state(p) == "Available")
        assert p["charger"]["voltage_v"] == 229.5
        assert p["charger"]["meter_total_wh"] == 1255123.4
        assert p["charger"]["session_energy_wh"] == 500.0


# ---- 2. a failed serial open does not lock the port -----------------------------------------


def _port_is_free(port: str) -> bool:
    try:
        serial.serial_for_url(port, exclusive=True, baudrate=9600).close()
    except serial.SerialException:
        return False
    return True


async def test_a_rejected_line_setting_is_reported_each_retry_and_leaves_the_port_free(
        cable: PtyCable, caplog: pytest.LogCaptureFixture, no_gc: None) -> None:
    # A pty refuses parity: the open fails after pymodbus has locked the port.
    with caplog.at_level(logging.WARNING):
        async with running_hub(modbus_cfg(cable.a, parity="E")) as (hub, cap):
            _, ev = await cap.wait_event("periph_lost", "charger-1", within_s=3)
            assert ev["reasons"] == ["port_error"]
            for n in range(2, 6):
                await _until(lambda n=n: hub.monitors["charger-1"].rejected >= n)
                assert _port_is_free(cable.a), n  # between retries, nothing holds it
    lines = [r.getMessage() for r in caplog.records if "charger-1" in r.getMessage()]
    assert len(lines) == 5, lines  # 5 per minute and reason, then held back
    assert all("rejected the line settings (9600 baud 8E1): [Errno 22]" in m for m in lines)
    assert not any("lock" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


async def test_after_a_failed_open_the_same_port_opens_in_the_same_process(
        cable: PtyCable, slave: ModbusSlave, no_gc: None) -> None:
    slave.regs = indie_image(230.0, 0, 0, 0.0, 10.0, state=1)
    bad = ModbusBus(ModbusSettings(port=cable.a, parity="E", timeout_s=0.2))
    why = []
    for _ in range(2):
        with pytest.raises(ModbusReject) as e:
            await bad.read(1, "input", 0x1000, 2)
        assert e.value.reason == "port_error"
        why.append(str(e.value))
    good = ModbusBus(ModbusSettings(port=cable.a, timeout_s=0.5))
    try:
        assert await good.read(1, "input", 0x1000, 2) == [1, 0]
    finally:
        good.close()
        bad.close()
    assert all("the device rejected the line settings (9600 baud 8E1): [Errno 22] Invalid "
               "argument" in w for w in why), why
