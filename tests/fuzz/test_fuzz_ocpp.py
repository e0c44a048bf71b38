"""Fuzzing the OCPP side of the pole (issue 18): the observer that reads every frame
either way, the HTTP Basic parser of the opening handshake, and the pole's real
WebSocket server, which must survive random frames and keep answering. Only declared
outcomes are allowed (a rejection with a reason, a CALLERROR, a closed connection),
and the rejection counters rise. FUZZ_EXAMPLES sets the count, as in
test_fuzz_entry_points.py; the real-server run takes a 1/200 share of it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_controller.peripherals.ocpp_proxy import (
    CP_ACTIONS,
    OcppObserver,
    basic_credentials,
)

N = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=N, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=12),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=12)
ACTIONS = st.sampled_from([*sorted(CP_ACTIONS), "RemoteStartTransaction", "Reset", "Nope", ""])
FIELDS = st.sampled_from(["connectorId", "status", "errorCode", "meterValue", "idTag",
                          "meterStart", "meterStop", "transactionId", "timestamp",
                          "sampledValue", "value", "unit", "measurand", "phase"])
PAYLOAD = st.dictionaries(FIELDS, JSON, max_size=6)
VALID = [
    [2, "1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                    "status": "Charging"}],
    [2, "2", "MeterValues", {"connectorId": 1, "meterValue": [{
        "timestamp": "2026-11-28T23:10:07Z",
        "sampledValue": [{"value": "1200", "measurand": "Power.Active.Import", "unit": "W"}]}]}],
    [2, "3", "StartTransaction", {"connectorId": 1, "idTag": "TAG", "meterStart": 10,
                                  "timestamp": "2026-11-28T23:10:07Z"}],
]


def _frames() -> st.SearchStrategy[str | bytes]:
    call = st.tuples(st.just(2), st.text(max_size=8), ACTIONS, PAYLOAD).map(
        lambda t: json.dumps(list(t)))
    result = st.tuples(st.sampled_from([3, 4]), st.sampled_from(["1", "2", "3", "x"]),
                       PAYLOAD).map(lambda t: json.dumps(list(t)))
    mutated = st.tuples(st.sampled_from(VALID), st.integers(0, 400), st.text(max_size=3)).map(
        lambda t: (lambda s, i, x: s[:i % (len(s) + 1)] + x + s[i % (len(s) + 1) + 1:])(
            json.dumps(t[0]), t[1], t[2]))
    return st.one_of(call, result, mutated, st.text(max_size=200), st.binary(max_size=50),
                     JSON.map(json.dumps))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["cp", "cs"]), _frames()), min_size=1, max_size=6))
def test_ocpp_observer(frames: list[tuple[str, str | bytes]]) -> None:
    obs = OcppObserver(connector_id=1)
    rejected = 0
    for sender, raw in frames:
        seen = obs.feed(sender, raw)  # type: ignore[arg-type]  # never raises
        if seen.rejected is not None:
            rejected += 1
            assert seen.rejected and not seen.changed
    assert obs.rejected == rejected and obs.messages == len(frames)
    st_ = obs.status()
    if st_ is not None:  # whatever got through is a state the schema allows
        assert st_.connector_state in ("Available", "Preparing", "Charging", "SuspendedEV",
                                       "SuspendedEVSE", "Finishing", "Reserved",
                                       "Unavailable", "Faulted")
        assert st_.session_energy_wh is None or st_.session_energy_wh >= 0
    assert len(obs.pending) <= 256


@FUZZ
@given(st.one_of(
    st.text(max_size=80),
    st.tuples(st.sampled_from(["Basic ", "basic ", "BASIC  ", "Bearer "]),
              st.binary(max_size=60)).map(lambda t: t[0] + base64.b64encode(t[1]).decode()),
))
def test_basic_credentials(header: str) -> None:
    got = basic_credentials(header)  # never raises
    if got is not None:
        user, pw = got
        assert header.strip().lower().startswith("basic")
        assert ":" not in user and isinstance(pw, str)


# ---- the real server ------------------------------------------------------------------


@settings(max_examples=max(30, N // 200), deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(_frames(), min_size=1, max_size=5))
def test_ocpp_server_survives_random_frames(frames: list[str | bytes]) -> None:
    asyncio.run(_server_round(frames))


async def _server_round(frames: list[str | bytes]) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from edge_controller.peripherals.ocpp_proxy import OcppProxyAdapter
    from tests.peripherals.conftest import running_hub
    from tests.peripherals.peers import ChargePoint16

    conf: dict[str, Any] = {"devices": [{"id": "c", "kind": "ocpp_charger", "ocpp": {
        "listen_port": 0, "charge_point_id": "cp-f", "ping_s": 2.0}}]}
    async with running_hub(conf) as (hub, _cap):
        ad = hub.adapters["c"]
        assert isinstance(ad, OcppProxyAdapter)
        await ad.listening.wait()
        try:
            async with connect(f"{ad.url}/cp-f", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                               compression=None, open_timeout=5) as ws:
                for f in frames:
                    await ws.send(f)
                # Whatever it answers, in order and in time (a CALLERROR for a bad CALL).
                for _ in frames:
                    try:
                        await asyncio.wait_for(ws.recv(), 0.05)
                    except TimeoutError:
                        break
        except ConnectionClosed:
            pass  # closed with a reason is a declared outcome (binary frames, size)
        # The server is alive and serves the next charger normally.
        cp = await ChargePoint16(ad.url, "cp-f").connect(open_timeout=5)
        try:
            assert await asyncio.wait_for(cp.boot(), 5.0) == "Accepted"
        finally:
            await cp.close()
