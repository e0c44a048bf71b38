"""`polectl sim` (`make run`): a whole simulated pole on a recorded clip, with polectl's live
view of what it publishes, until the clip ends.

The simulated pole itself is `polesim` (it never imports polectl); this module puts it
together with a broker, the demo peripherals, a scripted evening and the live view.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from polesim.broker import Broker, start_broker
from polesim.firmware import DEFAULT_BUILD
from polesim.peripherals import start_demo_peers
from polesim.pole import SAMPLE_VIDEO, SimPole, demo_crossing, scenario
from rich.console import Console

from polectl.monitor import monitor

# What the live view shows besides the native topics, per backend profile.
PROFILE_TOPICS: dict[str, tuple[str, ...]] = {
    "homeassistant": ("homeassistant/#", "smartpole/ha/#"),
    "thingsboard": ("v1/#",),
    "sparkplug_b": ("spBv1.0/#",),
    "huawei_iotda": ("$oc/devices/#",),
}


def sim_profile_settings(profile: str, url: str) -> dict[str, Any]:
    """The `[mqtt.<profile>]` table of the simulated pole: everything on the sim's broker
    (a profile with a platform broker of its own by default gets the local one and dummy
    credentials), platform commands unsigned for the limited set only."""
    s: dict[str, Any] = {"accept_unsigned": "limited"}
    if profile == "huawei_iotda":
        # IoTDA's default url is Huawei's cloud; mosquitto takes any password.
        s.update(url=url, secret="sim-device-secret")
    return s


# Long: broker, peers, pole and live view start and stop in one try/finally.
def run_sim(
    video: Path | None, broker: str, allow_apt: bool, live: bool, workdir: Path,
    crossing: bool = True, audio_device: str = "null", profile: str | None = None,
) -> int:
    """`make run`: a simulated pole plays a clip through its camera task, then exits."""
    console = Console()
    video = (video or SAMPLE_VIDEO).resolve()
    if not video.is_file():
        console.print(f"[red]video {video} not found[/]")
        return 2
    if not (DEFAULT_BUILD / "main.mpy").exists():
        console.print("[red]no firmware build: run `make firmware` first[/]")
        return 2
    own: Broker | None = None
    if ":" in broker and broker not in ("auto", "mosquitto", "embedded"):
        host, _, port_s = broker.rpartition(":")
        url = f"mqtt://{host}:{port_s}"
    else:
        own = start_broker(broker, allow_apt=allow_apt)  # type: ignore[arg-type]
        url = own.url
        console.print(f"broker: {own.kind} on {url}")
    workdir = workdir.resolve()
    # The pole's neighbours as real peers: a Modbus charger on a pty, an OCPP charge
    # point (with the pole as its local central system) and an LED screen.
    peers = start_demo_peers()
    overrides: dict[str, Any] = {**peers.overrides(refresh_s=5.0)}
    if crossing:
        overrides.update(demo_crossing(audio_device))
    if profile is not None and profile != "native":
        # The backend profile beside native; platform commands (HA's lamp and screen
        # text) run unsigned only for the limited set (docs/backends.md).
        overrides["mqtt"] = {"profiles": ["native", profile],
                             profile: sim_profile_settings(profile, url)}
    # Signed like a provisioned pole: a test city key made now signs the scenario's commands.
    pole = SimPole(workdir, url, video=video, overrides=overrides, signed=True)
    host, port = url.split("://")[1].split(":")
    try:
        pole.start()
        fw_path = pole.wire.fw_path if pole.wire else "?"
        pid = pole.controller.pid if pole.controller else "?"
        console.print(f"firmware: MicroPython unix port on {fw_path}; controller pid {pid}; "
                      f"logs in {workdir}")

        async def watch() -> Any:
            stop = asyncio.Event()

            async def wait_controller() -> None:
                if pole.controller is not None:
                    await asyncio.to_thread(pole.controller.wait)
                await asyncio.sleep(0.5)  # let the last messages land in the view
                stop.set()

            waiter = asyncio.create_task(wait_controller())
            story = asyncio.create_task(scenario(pole, host, int(port)))
            view = await monitor(host, int(port), pole=pole.pole_id, stop=stop, live=live,
                                 extra_topics=PROFILE_TOPICS.get(profile or "native", ()))
            await waiter
            story.cancel()
            return view

        t0 = time.monotonic()
        view = asyncio.run(watch())
        code = pole.controller.returncode if pole.controller else 1
        console.print(f"controller exited with {code} after {time.monotonic() - t0:.1f} s; "
                      f"{view.total} messages seen")
        if code != 0:
            console.print(pole.controller_log_tail())
        return int(code or 0)
    finally:
        pole.stop()
        peers.stop()
        if own is not None:
            own.stop()
