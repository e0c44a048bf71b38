"""The device page of a simulated pole in a real Home Assistant, as a PNG for docs/backends.md.

    python -m tests.profiles.ha_screenshot docs/images/homeassistant-device.png

mosquitto, the simulated pole with the demo peripherals and the sample clip
(profile homeassistant), HA 2024.3.3 (tests/profiles/hass.py), then headless
Chromium logged in by putting the long-lived token where the frontend keeps its
tokens (localStorage `hassTokens`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from polesim.broker import start_mosquitto
from polesim.peripherals import start_demo_peers
from polesim.pole import SAMPLE_VIDEO, SimPole, demo_crossing
from selenium import webdriver

from tests.profiles.hass import HomeAssistant, free_port, ha_python, seed
from tests.support import build_firmware


def main(out: Path) -> None:
    py = ha_python()
    assert py is not None, "no Home Assistant 2024.3.3 (make ha-venv)"
    broker = start_mosquitto()
    peers = start_demo_peers()
    with tempfile.TemporaryDirectory(prefix="ha-shot-") as d:
        port = free_port()
        ha = HomeAssistant(Path(d), port, seed(Path(d), "127.0.0.1", broker.port, port))
        ha.start(py)
        ov = {**peers.overrides(refresh_s=5.0), **demo_crossing("null"),
              "camera": {"on_end": "loop"}, "visibility": {"enabled": True},
              "mqtt": {"profiles": ["native", "homeassistant"],
                       "homeassistant": {"accept_unsigned": "limited"}}}
        pole = SimPole(Path(d) / "pole", broker.url, pole_id="pole-0042",
                       video=SAMPLE_VIDEO, overrides=ov, build_dir=build_firmware())
        try:
            ha.wait_running(300)
            pole.start()
            time.sleep(15)
            ha.request("POST", "/api/services/light/turn_on",
                       {"entity_id": "light.pole_0042_lamp", "brightness": 178})
            time.sleep(3)
            dev = ha.request("POST", "/api/template",
                             {"template": "{{ device_id('light.pole_0042_lamp') }}"})
            url = f"http://127.0.0.1:{port}"
            opts = webdriver.ChromeOptions()
            for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
                      "--window-size=1400,1100"):
                opts.add_argument(a)
            drv = webdriver.Chrome(options=opts)
            try:
                drv.get(url + "/auth/authorize")
                tokens = {"access_token": ha.token, "token_type": "Bearer",
                          "expires_in": 315360000, "hassUrl": url, "clientId": url + "/",
                          "expires": int(time.time() * 1000) + 315360000000,
                          "refresh_token": ""}
                drv.execute_script("localStorage.setItem('hassTokens', arguments[0]);",
                                   json.dumps(tokens))
                drv.get(f"{url}/config/devices/device/{dev}")
                time.sleep(12)
                out.parent.mkdir(parents=True, exist_ok=True)
                drv.save_screenshot(str(out))
            finally:
                drv.quit()
        finally:
            pole.stop()
            ha.stop()
            peers.stop()
            broker.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
