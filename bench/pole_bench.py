"""Simulated-pole benchmarks: link round trip over the pty, MQTT command round trip,
controller idle CPU and memory. Prints figures; asserts nothing.

Each figure comes with a baseline measured in the same run:
- link RTT vs. a CPython echo on the same pty cable (cost of the cable itself);
- lamp command RTT vs. a `ping` command (MQTT + controller cost without the link).
"""

from __future__ import annotations

import json
import os
import select
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polesim.broker import start_broker  # noqa: E402
from polesim.firmware import SimFirmware  # noqa: E402
from polesim.pole import SimPole  # noqa: E402
from polesim.wire import PtyWire  # noqa: E402

from edge_controller.clock import utc_iso  # noqa: E402
from edge_controller.link import codec  # noqa: E402
from hil_tests.capture import Capture  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _open_raw(path: str) -> int:
    import termios
    import tty

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[6][termios.VMIN] = 0
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def _roundtrip(fd: int, wire: bytes, want: Callable[[codec.Frame], bool],
               dec: codec.Decoder) -> float:
    t0 = time.perf_counter()
    os.write(fd, wire)
    while True:
        r, _, _ = select.select([fd], [], [], 2.0)
        if not r:
            raise TimeoutError("no reply")
        for f in dec.feed(os.read(fd, 4096)):
            if want(f):
                return time.perf_counter() - t0


def link_rtt(n: int) -> dict[str, float]:
    # Baseline: an echo thread on the firmware end of the same cable.
    with PtyWire() as w:
        efd = _open_raw(w.fw_path)
        stop = threading.Event()

        def echo() -> None:
            while not stop.is_set():
                r, _, _ = select.select([efd], [], [], 0.1)
                if r:
                    os.write(efd, os.read(efd, 4096))

        th = threading.Thread(target=echo, daemon=True)
        th.start()
        cfd = _open_raw(w.ctl_path)
        dec = codec.Decoder()
        base = []
        for i in range(n):
            wire = codec.pack("lamp_set", i & 0xFF, (i % 101, 0), codec.F_ACK_REQ)
            base.append(_roundtrip(cfd, wire, lambda f: True, dec))
        stop.set()
        th.join()
        os.close(efd)
        os.close(cfd)
    # The real firmware on the unix port at 64K heap.
    with PtyWire() as w, tempfile.TemporaryDirectory() as d:
        fw = SimFirmware(w.fw_path, log_path=Path(d) / "fw.log").start()
        try:
            cfd = _open_raw(w.ctl_path)
            dec = codec.Decoder()
            time.sleep(0.5)
            os.read(cfd, 65536) if select.select([cfd], [], [], 0)[0] else None
            rtt = []
            for i in range(n):
                seq = i & 0xFF
                wire = codec.pack("lamp_set", seq, (i % 101, 0), codec.F_ACK_REQ)
                rtt.append(_roundtrip(
                    cfd, wire, lambda f, s=seq: f.name == "ack" and f.fields()["ack_seq"] == s,
                    dec))
            os.close(cfd)
        finally:
            fw.stop()
    return {"echo_p50_ms": statistics.median(base) * 1e3, "echo_p95_ms": pct(base, 95) * 1e3,
            "fw_p50_ms": statistics.median(rtt) * 1e3, "fw_p95_ms": pct(rtt, 95) * 1e3}


def _proc_cpu_rss(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / ticks
    with open(f"/proc/{pid}/statm") as fh:
        rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def command_rtt(n: int, idle_s: float) -> dict[str, float]:
    b = start_broker("auto")
    try:
        with tempfile.TemporaryDirectory() as d:
            pole = SimPole(Path(d), b.url, pole_id="bench-1",
                           overrides={"telemetry": {"interval_s": 10.0, "lamp_poll_s": 5.0}})
            pole.start()
            cap = Capture("127.0.0.1", b.port, "smartpole/v1/bench-1/#")
            try:
                cap.wait_for(lambda m: m.kind == "birth" and m.json()["firmware"], 20)
                topic = "smartpole/v1/bench-1/cmd"

                def run(i: int, body: dict[str, object]) -> float:
                    cid = f"b{i}"
                    t0 = cap.publish(topic, json.dumps(
                        {"id": cid, "issued_at": utc_iso(), "body": body}))
                    m = cap.wait_for(lambda m: m.kind == "cmd/result"
                                     and m.json()["id"] == cid, 10, t0)
                    assert m.json()["status"] == "ok", m.json()
                    return m.t - t0

                ping = [run(i, {"type": "ping"}) for i in range(n)]
                lamp = []
                assert pole.firmware is not None
                for i in range(n):
                    level = (i * 37) % 101
                    lamp.append(run(n + i, {"type": "lamp.set", "level": level, "fade_ms": 0}))
                    if i % 10 == 0:  # the duty really changed before the result came back
                        assert pole.firmware.panel.get()["lamp"]["level"] == level
                assert pole.controller is not None
                pid = pole.controller.pid
                time.sleep(2.0)
                c0, _ = _proc_cpu_rss(pid)
                time.sleep(idle_s)
                c1, rss = _proc_cpu_rss(pid)
            finally:
                cap.close()
                pole.stop()
    finally:
        b.stop()
    return {"ping_p50_ms": statistics.median(ping) * 1e3, "ping_p95_ms": pct(ping, 95) * 1e3,
            "lamp_p50_ms": statistics.median(lamp) * 1e3, "lamp_p95_ms": pct(lamp, 95) * 1e3,
            "idle_cpu_percent": 100 * (c1 - c0) / idle_s, "rss_mb": rss, "broker": 0.0}


def main() -> None:
    n = int(os.environ.get("BENCH_N", "200"))
    idle = float(os.environ.get("BENCH_IDLE_S", "20"))
    lr = link_rtt(n)
    print(f"link round trip over the pty, n={n}: firmware ack p50 {lr['fw_p50_ms']:.2f} ms, "
          f"p95 {lr['fw_p95_ms']:.2f} ms; echo baseline p50 {lr['echo_p50_ms']:.2f} ms, "
          f"p95 {lr['echo_p95_ms']:.2f} ms; ratio p50 {lr['fw_p50_ms'] / lr['echo_p50_ms']:.1f}x")
    cr = command_rtt(n, idle)
    print(f"MQTT command round trip (command -> lamp duty -> result), n={n}: "
          f"p50 {cr['lamp_p50_ms']:.2f} ms, p95 {cr['lamp_p95_ms']:.2f} ms; ping baseline "
          f"p50 {cr['ping_p50_ms']:.2f} ms, p95 {cr['ping_p95_ms']:.2f} ms; ratio p50 "
          f"{cr['lamp_p50_ms'] / cr['ping_p50_ms']:.1f}x")
    print(f"controller idle over {idle:g} s (telemetry every 10 s, camera off): "
          f"CPU {cr['idle_cpu_percent']:.2f} % of one core, RSS {cr['rss_mb']:.1f} MB")


if __name__ == "__main__":
    main()
