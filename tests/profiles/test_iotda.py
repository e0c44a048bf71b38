"""Huawei Cloud IoTDA profile: IoTDA's side played from its device MQTT documentation
(topics `$oc/devices/{device_id}/sys/...`, the gateway's sub-device reports, commands and
their responses; the connect scheme of huaweicloud/huaweicloud-iot-device-sdk-python)
against mosquitto and the simulated pole. The credentials are checked against values
computed here, independently of the product."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.profiles.platform_pole import (  # noqa: F401 - fixtures
    Msg,
    Platform,
    broker,
    fail_log,
    firmware,
    peers,
    start_pole,
)

SECRET = "s3cr3t-device-secret"
EVENT_TIME = re.compile(r"^\d{8}T\d{6}Z$")
MODEL = Path(__file__).resolve().parents[2] / "edge_controller" / "profiles" / "data" / \
    "huawei_iotda_product_model.json"


def expected_credentials(device_id: str, secret: str, when: float,
                         check_time: bool) -> tuple[str, str, str]:
    """IoTDA's scheme, written from its docs: timestamp YYYYMMDDHH (UTC); client id
    device_id_0_<0|1>_timestamp; password = hex HMAC-SHA256(key=timestamp, msg=secret)."""
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%d%H")
    pw = hmac.new(stamp.encode("utf-8"), secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{device_id}_0_{1 if check_time else 0}_{stamp}", device_id, pw


def _j(m: Msg) -> Any:
    return json.loads(m.payload)


def _check_services(services: list[dict[str, Any]], model: dict[str, Any]) -> None:
    known = {s["service_id"]: {p["property_name"]: p for p in s["properties"]}
             for s in model["service_capabilities"]}
    for svc in services:
        assert set(svc) == {"service_id", "properties", "event_time"}, svc
        assert EVENT_TIME.match(svc["event_time"]), svc["event_time"]
        props = known[svc["service_id"]]
        for k, v in svc["properties"].items():
            assert k in props, f"{svc['service_id']}.{k} not in the product model"
            t = props[k]["data_type"]
            ok = {"int": lambda x: isinstance(x, int) and not isinstance(x, bool),
                  "decimal": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
                  "string": lambda x: isinstance(x, str),
                  "boolean": lambda x: isinstance(x, bool)}[t]
            assert ok(v), f"{svc['service_id']}.{k}={v!r} is not {t}"


def test_credentials_match_an_independent_computation() -> None:
    from edge_controller.profiles.huawei_iotda import IotdaProfile, IotdaSettings

    now = 1_796_540_000.0  # 2026-12-05T... UTC
    for check in (True, False):
        p = IotdaProfile("pole-9", IotdaSettings(device_id="65ab_pole-9", secret=SECRET,
                                                 check_timestamp=check))
        c = p.connection(now)
        assert c is not None
        assert (c.client_id, c.username, c.password) == expected_credentials(
            "65ab_pole-9", SECRET, now, check)


def test_iotda_contract(tmp_path: Path, broker: Any, firmware: Path,  # noqa: F811
                        peers: Any) -> None:  # noqa: F811
    model = json.loads(MODEL.read_text())
    pid_holder: dict[str, str] = {}
    t0 = time.monotonic()
    # IoTDA subscribes to everything under the device: $oc/devices/{device_id}/sys/#.
    iot = Platform(broker.port, ["$oc/devices/+/sys/#"], client_id="iotda")
    pole = start_pole(tmp_path, broker, firmware, peers, "huawei_iotda", {
        "url": broker.url, "secret": SECRET, "accept_unsigned": "limited"})
    dev = pole.pole_id
    pid_holder["id"] = dev
    report, sub_report = f"$oc/devices/{dev}/sys/properties/report", \
        f"$oc/devices/{dev}/sys/gateway/sub_devices/properties/report"
    try:
        # Connected with IoTDA's client id and user name (mosquitto's log names both).
        deadline = time.time() + 20
        cid, user, _pw = expected_credentials(dev, SECRET, time.time(), True)
        while f"as {cid} " not in broker.log_tail(200000) and time.time() < deadline:
            time.sleep(0.2)
        log = broker.log_tail(200000)
        assert f"as {cid} " in log and f"u'{user}'" in log, log[-2000:]

        # Properties of the gateway (Pole, Lamp, Info, Event) and of the sub-devices.
        m = iot.wait_for(lambda m: m.topic == report and any(
            s["service_id"] == "Lamp" for s in _j(m)["services"]), 40, t0, "Lamp report")
        _check_services(_j(m)["services"], model)
        assert {"Pole", "Lamp"} <= {s["service_id"] for s in _j(m)["services"]}
        info = iot.wait_for(lambda m: m.topic == report and _j(m)["services"][0][
            "service_id"] == "Info", 20, t0, "Info report")
        _check_services(_j(info)["services"], model)
        boot = _j(info)["services"][0]["properties"]["boot_id"]
        for sub, sid in ((f"{dev}_charger-1", "Charger"), (f"{dev}_screen-1", "Screen")):
            s = iot.wait_for(lambda m, sub=sub: m.topic == sub_report and _j(m)["devices"][0][
                "device_id"] == sub, 20, t0, sub)
            (d,) = _j(s)["devices"]
            assert set(d) == {"device_id", "services"} and d["services"][0]["service_id"] == sid
            _check_services(d["services"], model)

        # Commands: Lamp.SetLevel on the gateway, Screen.ShowText on a sub-device.
        t1 = iot.publish(f"$oc/devices/{dev}/sys/commands/request_id=r-1", json.dumps(
            {"object_device_id": dev, "service_id": "Lamp", "command_name": "SetLevel",
             "paras": {"level": 35}}))
        r = iot.wait_for(lambda m: m.topic == f"$oc/devices/{dev}/sys/commands/response/"
                         "request_id=r-1", 15, t1, "response r-1")
        assert _j(r)["result_code"] == 0 and _j(r)["response_name"] == "SetLevelResponse"
        assert _j(r)["paras"]["status"] == "ok"
        iot.wait_for(lambda m: m.topic == report and any(
            s["service_id"] == "Lamp" and s["properties"]["level"] == 35
            for s in _j(m)["services"]), 15, t1, "level 35")
        t2 = iot.publish(f"$oc/devices/{dev}/sys/commands/request_id=r-2", json.dumps(
            {"object_device_id": f"{dev}_screen-1", "service_id": "Screen",
             "command_name": "ShowText", "paras": {"text": "雾天慢行", "seconds": 20}}))
        r2 = iot.wait_for(lambda m: m.topic.endswith("request_id=r-2") and "response" in
                          m.topic, 15, t2, "response r-2")
        assert _j(r2)["result_code"] == 0, _j(r2)
        assert any(t == "雾天慢行" for t, _ in peers.peers.screen.texts)
        t3 = iot.publish(f"$oc/devices/{dev}/sys/commands/request_id=r-3", json.dumps(
            {"object_device_id": dev, "service_id": "Lamp", "command_name": "Reboot",
             "paras": {}}))
        r3 = iot.wait_for(lambda m: m.topic.endswith("response/request_id=r-3"), 15, t3)
        assert _j(r3)["result_code"] == 1

        # Broker outage, then reports again.
        t4 = time.monotonic()
        broker.kill()
        time.sleep(2.0)
        broker.start_again()
        iot.wait_for(lambda m: m.topic == report and time.monotonic() > t4 + 2, 40, t4,
                     "report after the outage")

        # Pole restart: a new boot id in Info.
        t5 = time.monotonic()
        pole.stop_controller(signal.SIGTERM)
        pole.start_controller()
        iot.wait_for(lambda m: m.topic == report and _j(m)["services"][0]["service_id"] ==
                     "Info" and _j(m)["services"][0]["properties"]["boot_id"] != boot, 40, t5)
        for m in iot.since(t0):
            if m.topic == report:
                _check_services(_j(m)["services"], model)
    except BaseException:
        print(fail_log(pole))
        raise
    finally:
        pole.stop()
        iot.close()
