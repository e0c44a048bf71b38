"""Peripheral relay benchmarks: polling cost (CPU, RS-485 bus utilisation at the configured
rate) and status latency from a peer's change to the publish callback (and, when the
controller runs the `peripherals` task, to MQTT). Prints figures; asserts nothing.

1. CPU: the peers run in a child process, so this process's CPU time is the relay's own:
   a Modbus charger (default profile) and a screen polled at the configured rate, and an
   OCPP charger connected (WebSocket pings only), for `CPU_S` seconds; then the same at
   10 Hz to get a per-poll cost.
2. Bus utilisation: bytes per Modbus poll counted at the client, converted to line time at
   9600 baud 8N1 (10 bits per character) plus the 3.5-character silent interval that ends
   each RTU frame. (A pty has no baud rate: this is computed, not timed on a wire.)
3. Latency: N scripted changes at random phases of the poll period; time from the change
   at the peer to the status reaching the publish callback (peers in-process).
4. MQTT (only when the controller has the `peripherals` config section): the same on a
   simulated pole, change at the peer -> status message at a subscriber.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polesim.peripherals.demo import run_demo_peers  # noqa: E402

from edge_controller.peripherals import PeripheralHub, PeripheralsConfig  # noqa: E402
from edge_controller.peripherals.modbus_charger import ModbusBus, read_plan  # noqa: E402

CPU_S = float(os.environ.get("PERIPH_BENCH_CPU_S", "20"))
N_LATENCY = int(os.environ.get("PERIPH_BENCH_N", "20"))
BAUD = 9600


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


# ---- peers in a child process --------------------------------------------------------------

def _peer_main(conn: Any) -> None:
    async def body() -> None:
        peers = await run_demo_peers(script=False)
        conn.send(peers.devices())
        await asyncio.to_thread(conn.recv)  # "connect" once the hub listens
        await peers.charge_point.connect_retrying(within_s=10)
        await peers.charge_point.boot()
        await peers.charge_point.status("Available")
        conn.send("connected")
        await asyncio.to_thread(conn.recv)  # "stop"
        await peers.aclose()

    asyncio.run(body())


def _devices(devs: list[dict[str, Any]], poll_s: float) -> list[dict[str, Any]]:
    out = []
    for d in devs:
        d = {**d, "lost_after_s": 10.0}
        if d["kind"] != "ocpp_charger":
            d["poll_s"] = poll_s
        out.append(d)
    return out


async def cpu_phase() -> None:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_peer_main, args=(child,), daemon=True)
    proc.start()
    devs = parent.recv()
    published: list[str] = []
    rates: list[tuple[float, float]] = []  # (polls per s, CPU s per s)
    for poll_s, label in ((1.0, "configured rate (1 Hz Modbus, 1 Hz screen, OCPP idle)"),
                          (0.1, "10 Hz Modbus and screen (per-poll cost)")):
        cfg = PeripheralsConfig.model_validate({"devices": _devices(devs, poll_s)})
        hub = PeripheralHub(cfg, lambda d, p, r: published.append(d), lambda n, d: None)
        task = asyncio.create_task(hub.run())
        if poll_s == 1.0:
            parent.send("connect")
            await asyncio.to_thread(parent.recv)
        await asyncio.sleep(2.0)  # settle: ports open, first statuses out
        mb = hub.adapters["charger-1"]
        bus: ModbusBus = mb.bus  # type: ignore[attr-defined]
        polls0 = mb.polls + hub.adapters["screen-1"].polls  # type: ignore[attr-defined]
        tx0, rx0, req0 = bus.tx_bytes, bus.rx_bytes, bus.requests
        c0, w0 = _cpu(), time.monotonic()
        await asyncio.sleep(CPU_S if poll_s == 1.0 else CPU_S / 2)
        cpu, wall = _cpu() - c0, time.monotonic() - w0
        polls = mb.polls + hub.adapters["screen-1"].polls - polls0  # type: ignore[attr-defined]
        reqs = bus.requests - req0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        rates.append((polls / wall, cpu / wall))
        print(f"  {label}: CPU {100 * cpu / wall:.2f} % of one core over {wall:.0f} s "
              f"({polls} polls)")
        if poll_s == 1.0:
            per_poll = (bus.tx_bytes - tx0 + bus.rx_bytes - rx0) / max(reqs, 1)
            plan = read_plan(cfg.profile("default"))
            line_s = (per_poll + 2 * 3.5) * 10 / BAUD
            print(f"  Modbus default profile: {len(plan)} request(s) per poll, "
                  f"{per_poll:.0f} bytes per poll (request + reply); at {BAUD} baud 8N1 "
                  f"that is {1000 * line_s:.1f} ms of line time -> bus utilisation "
                  f"{100 * line_s / 1.0:.1f} % at 1 Hz, {100 * line_s / 0.1:.1f} % at 10 Hz")
    (r1, c1), (r2, c2) = rates
    per_poll = (c2 - c1) / max(r2 - r1, 1e-9)
    fixed = max(0.0, c1 - r1 * per_poll)
    print(f"  -> {1000 * per_poll:.2f} ms CPU per poll (Modbus or screen, status evaluation "
          f"included); fixed cost {100 * fixed:.2f} % of a core (hub tick every 0.1 s, "
          "OCPP WebSocket keepalive)")
    parent.send("stop")
    proc.join(10)


# ---- latency to the callback ------------------------------------------------------------------

async def latency_phase() -> None:
    peers = await run_demo_peers(script=False)
    seen: list[tuple[float, str, dict[str, Any]]] = []
    devs = _devices(peers.devices(), 1.0)
    hub = PeripheralHub(PeripheralsConfig.model_validate({"devices": devs}),
                        lambda d, p, r: seen.append((time.monotonic(), d, p)),
                        lambda n, d: None)
    task = asyncio.create_task(hub.run())
    await peers.charge_point.connect_retrying(within_s=10)
    await peers.charge_point.boot()
    await asyncio.sleep(1.5)

    async def wait(dev: str, pred: Any, after: float) -> float:
        while True:
            for t, d, p in seen:
                if d == dev and t >= after and pred(p):
                    return t
            await asyncio.sleep(0.001)

    rng = random.Random(7)
    results: dict[str, list[float]] = {"modbus (poll 1 s)": [], "screen (poll 1 s)": [],
                                       "ocpp (push)": []}
    states = ["Preparing", "Available"]
    for i in range(N_LATENCY):
        await asyncio.sleep(rng.uniform(0.05, 1.0))
        want = states[i % 2]
        t0 = time.monotonic()
        peers.modbus.set_state(want)  # type: ignore[arg-type]
        t = await wait("charger-1", lambda p, w=want: p["charger"]
                       and p["charger"]["connector_state"] == w, t0)
        results["modbus (poll 1 s)"].append(t - t0)
        await asyncio.sleep(rng.uniform(0.05, 1.0))
        content = f"c{i}"
        t0 = time.monotonic()
        peers.screen.set(content_id=content)
        t = await wait("screen-1", lambda p, c=content: p["screen"]
                       and p["screen"]["content_id"] == c, t0)
        results["screen (poll 1 s)"].append(t - t0)
        t0 = time.monotonic()
        await peers.charge_point.status(want)
        t = await wait("charger-2", lambda p, w=want: p["charger"]
                       and p["charger"]["connector_state"] == w, t0)
        results["ocpp (push)"].append(t - t0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await peers.aclose()
    for name, xs in results.items():
        ms = [1000 * x for x in xs]
        print(f"  {name}: median {statistics.median(ms):.1f} ms, p95 {pct(ms, 95):.1f} ms, "
              f"max {max(ms):.1f} ms (n={len(ms)})")


# ---- latency to MQTT on a simulated pole --------------------------------------------------------

def mqtt_phase() -> None:
    from edge_controller.config import Config

    if "peripherals" not in Config.model_fields:
        print("  skipped: the controller has no [peripherals] section yet (not wired)")
        return
    from polesim.broker import start_broker
    from polesim.firmware import DEFAULT_BUILD
    from polesim.peripherals.demo import start_demo_peers
    from polesim.pole import SimPole

    from hil_tests.capture import Capture

    if not (DEFAULT_BUILD / "main.mpy").exists():
        print("  skipped: no firmware build (make firmware)")
        return
    broker = start_broker("auto")
    peers = start_demo_peers(script=False)
    assert peers.peers is not None
    ov = peers.overrides()
    for d in ov["peripherals.devices"]:
        if d["kind"] != "ocpp_charger":
            d["poll_s"] = 1.0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pole = SimPole(Path(tmp), broker.url, pole_id="bench-periph", overrides=ov).start()
            cap = Capture("127.0.0.1", broker.port, "smartpole/v1/bench-periph/periph/#")
            try:
                cap.wait_for(lambda m: m.kind == "periph/charger-1/status", 20)
                peers.call(peers.peers.charge_point.connect_retrying(within_s=15))
                peers.call(peers.peers.charge_point.boot())
                rng = random.Random(3)
                mb_lat, ocpp_lat = [], []
                for i in range(N_LATENCY):
                    time.sleep(rng.uniform(0.05, 1.0))
                    want = ["Preparing", "Available"][i % 2]
                    t0 = time.monotonic()
                    peers.do(lambda w=want: peers.peers.modbus.set_state(w))  # type: ignore
                    m = cap.wait_for(lambda m, w=want: m.kind == "periph/charger-1/status"
                                     and m.json()["charger"]["connector_state"] == w, 5, t0)
                    mb_lat.append(1000 * (m.t - t0))
                    t0 = time.monotonic()
                    peers.call(peers.peers.charge_point.status(want))
                    m = cap.wait_for(lambda m, w=want: m.kind == "periph/charger-2/status"
                                     and (m.json()["charger"] or {}).get("connector_state")
                                     == w, 5, t0)
                    ocpp_lat.append(1000 * (m.t - t0))
                for name, ms in (("modbus (poll 1 s)", mb_lat), ("ocpp (push)", ocpp_lat)):
                    print(f"  {name} -> MQTT: median {statistics.median(ms):.1f} ms, "
                          f"p95 {pct(ms, 95):.1f} ms, max {max(ms):.1f} ms (n={len(ms)})")
            finally:
                cap.close()
                pole.stop()
    finally:
        peers.stop()
        broker.stop()


def main() -> int:
    print("== peripheral relay: polling cost", flush=True)
    asyncio.run(cpu_phase())
    print("== peripheral relay: status latency, peer change -> publish callback", flush=True)
    asyncio.run(latency_phase())
    print("== peripheral relay: status latency, peer change -> MQTT subscriber", flush=True)
    mqtt_phase()
    return 0


if __name__ == "__main__":
    sys.exit(main())
