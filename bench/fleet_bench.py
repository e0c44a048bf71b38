"""Fleet scale on this machine: the largest number of simulated poles a local mosquitto
carries for `--duration` seconds with 0 loss and publish-to-consume p99 < 1 s.

    python bench/fleet_bench.py              # 5 minutes per step: 1000, 2000, 5000, ...
    python bench/fleet_bench.py --quick      # 20 s per step, for a smoke run
    python bench/fleet_bench.py --n 3000 --duration 600

Per step: a fresh mosquitto, `polectl ingest` (shared subscription, its own process)
and `polectl fleet-sim -n N` (one process, one MQTT 5 connection per pole), both from
`tools/polectl/fleet/`. Loss is counted per pole and per kind: every message the
broker acknowledged (PUBACK) to a pole must reach the consumer once. Steps stop at the
first N that fails. CPU is measured from /proc over the steady state (after every
pole connected) for the broker, the simulator and the consumer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from polesim.broker import start_mosquitto  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
FULL_STEPS = [1000, 2000, 5000, 10000, 15000, 19000]
QUICK_STEPS = [1000, 2000, 5000, 10000]
# A backend consumer may briefly fall behind: let the broker queue for it rather
# than drop (mosquitto's default is 1000 queued QoS 1 messages per client).
BROKER_CONF = "max_queued_messages 200000\nmax_inflight_messages 100\n"


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK  # utime + stime


def wait_file(path: Path, within_s: float, procs: list[subprocess.Popen[bytes]]) -> None:
    end = time.monotonic() + within_s
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[3] if len(p.args) > 3 else p.args} exited "  # type: ignore[index, arg-type]
                                   f"with {p.returncode} before {path.name}")
        if time.monotonic() > end:
            raise TimeoutError(f"{path.name} not written within {within_s} s")
        time.sleep(0.1)


def compare(sim: dict[str, Any], ing: dict[str, Any]) -> dict[str, int]:
    """Messages the broker acknowledged to a pole that the consumer never got."""
    lost = {"telemetry": 0, "events": 0, "cmd/result": 0}
    got_per = ing.get("per_pole", {})
    for pid, p in sim["per_pole"].items():
        g = got_per.get(pid, {})
        got = {"telemetry": g.get("telemetry", 0), "events": sum(g.get("events", {}).values()),
               "cmd/result": sum(g.get("results", {}).values())}
        for kind in lost:
            lost[kind] += max(0, p["acked"].get(kind, 0) - got[kind])
    return lost


def step(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    broker = start_mosquitto(extra_conf=BROKER_CONF)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tools")])}
    ing_rep, sim_rep = work / f"ingest-{n}.json", work / f"fleet-{n}.json"
    b = f"127.0.0.1:{broker.port}"
    py = [sys.executable, "-m", "polectl.fleet"]
    ingest = subprocess.Popen(
        [*py, "ingest", "--broker", b, "--workers", str(args.workers), "--command-rate",
         str(args.command_rate), "--report", str(ing_rep), "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / f"ingest-{n}.log", "wb"))  # noqa: SIM115
    sim: subprocess.Popen[bytes] | None = None
    try:
        wait_file(ing_rep.with_suffix(".ready"), 30, [ingest])
        sim = subprocess.Popen(
            [*py, "fleet-sim", "-n", str(n), "--broker", b, "--duration", str(args.duration),
             "--interval", str(args.interval), "--events-per-hour", str(args.events_per_hour),
             "--report", str(sim_rep), "--json"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(work / f"fleet-{n}.log", "wb"))  # noqa: SIM115
        t_start = time.monotonic()
        # Connecting is the slow part on a busy machine: allow for it per pole.
        wait_file(sim_rep.with_suffix(".running"), 120 + n / 50, [sim, ingest])
        connect_s = time.monotonic() - t_start
        pids = {"broker": broker.proc.pid, "sim": sim.pid, "ingest": ingest.pid}
        c0 = {k: cpu_s(p) for k, p in pids.items()}
        t0 = time.monotonic()
        # Sample just before the fleet shuts down: steady state only.
        end = t0 + args.duration - 0.5
        while time.monotonic() < end and sim.poll() is None:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        c1 = {k: cpu_s(p) for k, p in pids.items()}
        steady = time.monotonic() - t0
        sim_rc = sim.wait(120 + n / 100)
        time.sleep(args.grace)
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(60)
    finally:
        for p in (sim, ingest):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        broker.stop()
    s = json.loads(sim_rep.read_text())
    i = json.loads(ing_rep.read_text())
    lost = compare(s, i)
    cpu = {k: round(100 * (c1[k] - c0[k]) / steady, 1) for k in c0}
    p99 = i["latency_ms"]["p99"]
    ok = (sim_rc == 0 and s["connected"] == n and s["failed"] == 0 and sum(lost.values()) == 0
          and p99 < 1000)
    return {
        "poles": n, "ok": ok, "seconds": s["seconds"], "connect_s": round(connect_s, 1),
        "connected": s["connected"], "acked": sum(s["acked"].values()), "unacked": s["failed"],
        "received": sum(i["unique"].values()), "duplicates": i["duplicates"], "lost": lost,
        "msgs_per_s": s["msgs_per_s"], "latency_ms": i["latency_ms"],
        "commands": i["commands"], "cpu_percent": cpu,
        "cpu_per_pole_percent": {k: round(v / n, 5) for k, v in cpu.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="20 s per step over 1000, 2000, 5000, 10000 poles")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds each step must hold (default 300; 20 with --quick)")
    ap.add_argument("--n", default=None, help="comma-separated pole counts to try, ascending")
    ap.add_argument("--interval", type=float, default=10.0,
                    help="telemetry interval per pole, s (a pole's default: 10)")
    ap.add_argument("--events-per-hour", type=float, default=6.0)
    ap.add_argument("--command-rate", type=float, default=2.0,
                    help="commands per second the consumer sends to random poles")
    ap.add_argument("--workers", type=int, default=2, help="consumer group members")
    ap.add_argument("--grace", type=float, default=3.0,
                    help="seconds the consumer gets to drain after the fleet stops")
    ap.add_argument("--keep-going", action="store_true", help="try every N even after a fail")
    ap.add_argument("--json", action="store_true", help="one JSON object per step")
    ap.add_argument("--profile-cpu", nargs="?", default="", metavar="PROFILES",
                    const="homeassistant,thingsboard,sparkplug_b,huawei_iotda",
                    help="also: CPU per message of these backend profiles (comma-separated; "
                    "alone: all four) against native, in one run (bench/profile_cpu.py); "
                    "with --n 0 only that")
    ap.add_argument("--profile-cpu-poles", type=int, default=200,
                    help="poles in each --profile-cpu run")
    ap.add_argument("--profile-cpu-seconds", type=float, default=30.0,
                    help="steady-state seconds of each --profile-cpu run")
    args = ap.parse_args()
    if args.profile_cpu:
        import profile_cpu
        profile_cpu.report(profile_cpu.measure(args.profile_cpu_poles, args.profile_cpu_seconds,
                                               1.0, args.profile_cpu.split(",")))
        if args.n == "0":
            return 0
    if args.duration is None:
        args.duration = 20.0 if args.quick else 300.0
    steps = ([int(x) for x in args.n.split(",")] if args.n else
             QUICK_STEPS if args.quick else FULL_STEPS)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    best = 0
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as d:
        for n in steps:
            if n + 100 > hard:
                print(f"skip N={n}: the open-file limit is {hard} (ulimit -n)")
                continue
            r = step(n, args, Path(d))
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                lat, cpu, per = r["latency_ms"], r["cpu_percent"], r["cpu_per_pole_percent"]
                print(f"N={n:>6} {'HOLDS' if r['ok'] else 'FAILS'} for {r['seconds']:.0f} s: "
                      f"{r['msgs_per_s']} msg/s in, {r['received']}/{r['acked']} received, "
                      f"lost {sum(r['lost'].values())}, unacked {r['unacked']}, "
                      f"dup {r['duplicates']}; p50 {lat['p50']} ms p99 {lat['p99']} ms "
                      f"max {lat['max']} ms; connect {r['connect_s']} s; CPU % broker "
                      f"{cpu['broker']} sim {cpu['sim']} ingest {cpu['ingest']}; per pole "
                      f"broker {per['broker']} sim {per['sim']} %; commands "
                      f"{r['commands']['answered']}/{r['commands']['sent']} answered",
                      flush=True)
            if r["ok"]:
                best = max(best, n)
            elif not args.keep_going:
                break
    print(f"largest N that held {args.duration:.0f} s with 0 loss and p99 < 1 s: "
          f"{best or 'none'}")
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
