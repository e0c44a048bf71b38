"""CPU per message of a backend profile against native, on the pole's real publish path.

    python bench/profile_cpu.py --n 200 --duration 30 --profiles homeassistant

One process plays N poles, each with the controller's own `Uplink` (aiomqtt, its
own connection to a local mosquitto, in-memory queue) and, in a profile run, that
profile's `ProfileRunner` (tap -> translate -> queue -> publish) with its default
connection: homeassistant and thingsboard share the native one; sparkplug_b opens
its own to the native broker (its will is the NDEATH); huawei_iotda its own, here to
the same local mosquitto (`settings_for`) instead of Huawei's cloud. Every pole
publishes telemetry every `--interval` seconds (values that change every time, the
worst case for a profile that publishes on change) and an event every tenth period.
Runs: native alone, then native + each profile, in one invocation; CPU is this
process's user+system time over the steady state.
`bench/fleet_bench.py --profile-cpu` runs this too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from edge_controller.api.messages import Event, Telemetry  # noqa: E402
from edge_controller.config import parse  # noqa: E402
from edge_controller.profiles import registry  # noqa: E402
from edge_controller.profiles.runner import ProfileRunner  # noqa: E402
from edge_controller.uplink.dispatcher import CommandDispatcher  # noqa: E402
from edge_controller.uplink.mqtt import Record, Uplink  # noqa: E402
from edge_controller.uplink.store import RecordStore  # noqa: E402
from edge_controller.uplink.topics import Topics  # noqa: E402
from edge_controller.uplink.trust import ResultCache, TrustPolicy  # noqa: E402

ALL = ["homeassistant", "thingsboard", "sparkplug_b", "huawei_iotda"]


def settings_for(profile: str, url: str) -> dict[str, Any]:
    """`[mqtt.<profile>]` for the bench: defaults, except a platform broker of its own
    (IoTDA's default is Huawei's cloud) is the local one, with a dummy secret."""
    if profile == "huawei_iotda":
        return {"url": url, "secret": "bench-secret"}
    return {}


def telemetry(pole: str, k: int) -> dict[str, Any]:
    return Telemetry(
        pole_id=pole, ts="2026-12-06T00:00:00.000Z",
        clock={"synced": True, "source": "ntp"},
        lamp={"level": 40 + k % 20, "target": 40 + k % 20, "duty": 9000, "on": True,
              "failsafe": False},
        sensors={"lux": 3.0 + k % 7, "temp_c": 21.5, "door_open": False, "tilt_deg": 0.4,
                 "power_w": 38.0 + k % 5, "energy_wh": 1000.0 + k, "mains": True},
        digital_inputs=0,
        link={"up": True, "port": "/dev/ttyS1", "rtt_ms": 0.4, "tx_frames": k,
              "rx_frames": k, "crc_errors": 0, "framing_errors": 0, "oversize": 0,
              "resyncs": 0, "naks_received": 0, "retries": 0, "timeouts": 0,
              "firmware_stats": None},
        process={"uptime_s": k, "cpu_percent": 1.0, "rss_mb": 60.0, "tasks": {}},
        camera=None, crossing=None, dimming=None, visibility=None,
        mqtt={"protocol": "5", "reconnects": 0, "commands_received": 0,
              "commands_rejected": 0, "queued": 0, "dropped": 0, "refused": 0},
    ).payload()


def birth(pole: str) -> dict[str, Any]:
    """A pole's birth (the uplink stamps v, pole_id and ts): what profiles read from it."""
    return {"boot_id": f"boot-{pole}", "started_at": "2026-12-06T00:00:00.000Z",
            "controller_version": "bench", "config_version": "bench",
            "firmware": {"version": "1.4.0", "board_id": "bench", "protocol": "1"},
            "models": {},
            "capabilities": ["lamp"], "api_version": "1.8.0",
            "commands": ["lamp.set", "screen.text"], "command_signatures": "off"}


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run(profiles: list[str], n: int, duration: float, interval: float,
              url: str) -> dict[str, Any]:
    poles = []
    for i in range(n):
        pid = f"bench-{i:05d}"
        cfg = parse({"pole": {"id": pid},
                     "mqtt": {"url": url, "profiles": ["native", *profiles],
                              **{p: settings_for(p, url) for p in profiles}}})
        topics = Topics(cfg.mqtt.topic_root, pid)

        async def no_command(_payload: bytes) -> None:
            return None

        up = Uplink(cfg.mqtt, topics, lambda pid=pid: birth(pid), no_command)
        disp = CommandDispatcher(TrustPolicy(), ResultCache(None), lambda r: None)
        runners = []
        for name in profiles:
            spec = registry.spec(name)
            settings = getattr(cfg.mqtt, name)
            runners.append(ProfileRunner(
                spec.create(registry.ProfileContext(pid, topics), settings), settings,
                up, disp, RecordStore(":memory:")))
        poles.append((topics, up, runners))
    tasks = [asyncio.create_task(up.run()) for _, up, _ in poles]
    tasks += [asyncio.create_task(r.run()) for _, _, rs in poles for r in rs]
    end = time.monotonic() + 60
    while not all(up.connected and all(r.connected for r in rs) for _, up, rs in poles):
        if time.monotonic() > end:
            raise TimeoutError("not every pole connected in 60 s")
        await asyncio.sleep(0.2)
    # The connect burst (births, discovery) is not the steady state: wait until it has
    # settled. On one mosquitto the ThingsBoard gateway topics are every pole's (on
    # ThingsBoard they are per connection): each pole's device announcements reach all
    # N poles, which ignore them; N x N messages at connect, none later.
    def activity() -> int:
        return sum(up.published + sum(r.published + r.received for r in rs)
                   for _, up, rs in poles)

    await asyncio.sleep(2)
    last, end = -1, time.monotonic() + 60
    while activity() != last and time.monotonic() < end:
        last = activity()
        await asyncio.sleep(1.0)
    base_native = sum(up.published for _, up, _ in poles)
    base_prof = sum(r.published for _, _, rs in poles for r in rs)
    c0, t0, k = cpu(), time.monotonic(), 0
    while time.monotonic() - t0 < duration:
        tick = time.monotonic()
        for topics, up, _ in poles:
            up.publish(Record(topics.telemetry, telemetry(topics.pole_id, k)))
            if k % 10 == 0:
                up.send(topics.events, Event(pole_id=topics.pole_id,
                                             ts="2026-12-06T00:00:00.000Z",
                                             event="door_opened" if k % 20 else "door_closed",
                                             detail={}))
        k += 1
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
    await asyncio.sleep(1)  # let the queues drain
    c1, t1 = cpu(), time.monotonic()
    native = sum(up.published for _, up, _ in poles) - base_native
    prof = sum(r.published for _, _, rs in poles for r in rs) - base_prof
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"profiles": ["native", *profiles], "poles": n, "seconds": round(t1 - t0, 1),
            "native_msgs": native, "profile_msgs": prof, "cpu_s": round(c1 - c0, 2),
            "cpu_us_per_native_msg": round((c1 - c0) / max(native, 1) * 1e6, 1)}


def measure(n: int, duration: float, interval: float, profiles: list[str]) -> list[dict[str, Any]]:
    """native alone, then native + each profile; each with a fresh mosquitto."""
    from polesim.broker import start_mosquitto
    out = []
    for prof in [[], *([p] for p in profiles)]:
        b = start_mosquitto(extra_conf="max_queued_messages 200000\n")
        try:
            out.append(asyncio.run(run(prof, n, duration, interval, b.url)))
        finally:
            b.stop()
    base = out[0]["cpu_us_per_native_msg"]
    for r in out[1:]:
        r["extra_cpu_us_per_native_msg"] = round(r["cpu_us_per_native_msg"] - base, 1)
    return out


def report(rows: list[dict[str, Any]]) -> None:
    print(f"profile CPU on {platform.processor() or platform.machine()} "
          f"({_cpu_model()}, {os.cpu_count()} CPUs), {rows[0]['poles']} poles x "
          f"{rows[0]['seconds']} s:")
    for r in rows:
        extra = r.get("extra_cpu_us_per_native_msg")
        print(f"  {'+'.join(r['profiles']):<28} {r['native_msgs']:>7} native msgs, "
              f"{r['profile_msgs']:>7} profile msgs, {r['cpu_s']:>6} CPU s, "
              f"{r['cpu_us_per_native_msg']:>6} us CPU per native msg"
              + ("" if extra is None else f" (profile: +{extra} us)"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0, help="telemetry period per pole, s")
    ap.add_argument("--profiles", default=",".join(ALL), help="comma-separated")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = measure(a.n, a.duration, a.interval, [p for p in a.profiles.split(",") if p])
    if a.json:
        print(json.dumps(rows))
    else:
        report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
