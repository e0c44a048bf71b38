"""Controller soak: a whole simulated pole for a chosen time, with the figures that a
month of operation multiplies (`make soak-controller`, `make soak-controller-fast`).

The pole: the firmware on the MicroPython unix port behind a pty, real mosquitto,
the Modbus/OCPP chargers and the LED screen as real simulated peers, and the
controller with camera (the bundled clip, looping), crossing (a zone, a plan, audio
to ALSA `null`), visibility and dimming, telemetry every 2 s. The driver restarts
the broker every `--outage-every-s` (the pole reconnects) and sends a `lamp.set`
command every `--command-every-s`.

`--accelerated` runs the camera as fast as analysis takes frames instead of in
real time, so an hour's worth of frames and tracks passes in minutes.

The controller runs under bench/soak_probe.py (tasks, loop lag, tracemalloc). This
driver samples /proc every `--sample-s`: RSS and PSS (smaps_rollup), open file
descriptors, threads, CPU. After `--warmup-s` it fits straight lines and prints the
slopes with their standard errors, per hour and per unit of work (1,000 frames,
1,000 tracks, 100 reconnects), and a verdict against `--bound-mb-h`.

    python bench/soak_controller.py --minutes 60
    python bench/soak_controller.py --accelerated --minutes 10 --outage-every-s 30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polesim.broker import start_broker  # noqa: E402
from polesim.firmware import DEFAULT_BUILD  # noqa: E402
from polesim.pole import SAMPLE_VIDEO, SimPole, demo_crossing  # noqa: E402

from tests.visibility.conftest import (  # noqa: E402
    PETS_HEIGHT_M,
    PETS_ROLL_DEG,
    PETS_TILT_DEG,
    PETS_VFOV_DEG,
)

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


class ProbedPole(SimPole):
    """A SimPole whose controller runs under the soak probe."""

    probe_out: Path

    def start_controller(self) -> None:
        self._log_fh = open(self.controller_log, "ab")  # noqa: SIM115 - lives with the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SOAK_PROBE_OUT": str(self.probe_out)}
        self.controller = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "soak_probe.py"), "--config",
             str(self.config_path), "--log-level", "WARNING"],
            stdout=self._log_fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def proc_sample(pid: int) -> dict[str, float]:
    p = Path(f"/proc/{pid}")
    out: dict[str, float] = {}
    for line in (p / "smaps_rollup").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Rss", "Pss"):
            out[k.lower() + "_mb"] = int(v.split()[0]) / 1024
    out.update(smaps_split(p / "smaps"))
    out["fds"] = len(os.listdir(p / "fd"))
    for line in (p / "status").read_text().splitlines():
        if line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    st = (p / "stat").read_text().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(st[11]) + int(st[12])) / TICK
    return out


def smaps_split(path: Path) -> dict[str, float]:
    """Resident MB by kind of mapping, to tell where growth is: `[heap]` (glibc's main
    heap), file-backed (libraries, models), glibc's thread arenas (anonymous mappings
    starting on a 64 MiB boundary: each arena's heap is reserved 64 MiB-aligned) and other
    anonymous mappings (Python's object arenas, mmapped malloc blocks, buffers that
    onnxruntime or OpenCV map themselves). Stacks and the vdso are not counted."""
    out = {"rss_heap_mb": 0.0, "rss_file_mb": 0.0, "rss_arenas_mb": 0.0,
           "rss_anon_other_mb": 0.0}
    kind = "rss_anon_other_mb"
    try:
        text = path.read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        head = line.split(None, 6)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            lo = int(head[0].split("-")[0], 16)
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "rss_heap_mb"
            elif name.startswith("/"):
                kind = "rss_file_mb"
            elif name.startswith("["):
                kind = ""  # stacks, vdso: not counted
            else:
                kind = ("rss_arenas_mb" if lo % (64 << 20) == 0 else "rss_anon_other_mb")
        elif line.startswith("Rss:") and kind:
            out[kind] += int(line.split()[1]) / 1024
    return {k: round(v, 3) for k, v in out.items()}


class Backend:
    """Sends the commands a backend would (paho in its own thread, reconnecting)."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(0.5, 2)
        self.client.connect(host, port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y over t and its standard error."""
    if len(t) < 3:
        return float("nan"), float("nan")
    a = np.vstack([t, np.ones_like(t)]).T
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    s2 = float(resid @ resid) / max(len(t) - 2, 1)
    se = (s2 / float(((t - t.mean()) ** 2).sum())) ** 0.5
    return float(coef[0]), se


def overrides(accelerated: bool, peers: Any, replay_cache: int | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {**peers.overrides(refresh_s=5.0), **demo_crossing("null")}
    if replay_cache is not None:
        o["commands"] = {"replay_cache": replay_cache}
    o["camera"] = {"enabled": True, "source": f"file:{SAMPLE_VIDEO}", "on_end": "loop",
                   "realtime": not accelerated}
    o["telemetry"] = {"interval_s": 2.0, "lamp_poll_s": 2.0}
    o["dimming"] = {"enabled": True, "interval_s": 1.0}
    o["visibility"] = {"enabled": True, "interval_s": 2.0, "reference_frames": 3,
                       "reference_gap_s": 1.0,
                       "calibration": {"mounting_height_m": PETS_HEIGHT_M,
                                       "tilt_deg": PETS_TILT_DEG, "vfov_deg": PETS_VFOV_DEG,
                                       "roll_deg": PETS_ROLL_DEG}}
    return o


def run(args: argparse.Namespace) -> int:
    if not (DEFAULT_BUILD / "main.mpy").exists():
        print("no firmware build: run `make firmware` first", file=sys.stderr)
        return 2
    from polesim.peripherals import start_demo_peers

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    broker = start_broker("mosquitto")
    peers = start_demo_peers()
    pole = ProbedPole(work, broker.url, pole_id="soak-1", overrides=overrides(
        args.accelerated, peers, args.replay_cache))
    pole.probe_out = work / "probe.jsonl"
    host, port = broker.url.split("://")[1].split(":")
    samples: list[dict[str, float]] = []
    reconnects = 0
    duration = args.minutes * 60
    try:
        pole.start()
        assert pole.controller is not None
        pid = pole.controller.pid
        tel = Backend(host, int(port))
        t0 = time.monotonic()
        next_sample = next_outage = next_cmd = t0
        next_outage += args.outage_every_s
        k = 0
        print(f"soak: {args.minutes} min, {'accelerated' if args.accelerated else 'real time'}"
              f", logs in {work}; MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX')}, "
              f"POLE_MALLOC_TRIM_S={os.environ.get('POLE_MALLOC_TRIM_S', '(default)')}",
              flush=True)
        while (now := time.monotonic()) - t0 < duration:
            if pole.controller.poll() is not None:
                print(f"controller exited {pole.controller.returncode}:\n"
                      f"{pole.controller_log_tail()}")
                return 1
            if now >= next_sample:
                s = {"t": now - t0, **proc_sample(pid), "reconnects": reconnects,
                     "queue_kb": sum(f.stat().st_size for f in work.glob("queue.sqlite3*"))
                     / 1024}
                s.update(probe_latest(pole.probe_out))
                samples.append(s)
                next_sample += args.sample_s
                if len(samples) % max(1, int(60 / args.sample_s)) == 0:
                    print(f"  t={s['t']:.0f}s rss {s['rss_mb']:.1f} MB, pss "
                          f"{s['pss_mb']:.1f} MB, fds {s['fds']:.0f}, threads "
                          f"{s['threads']:.0f}, frames {s.get('frames', 0):.0f}, tracks "
                          f"{s.get('tracks_created', 0):.0f}", flush=True)
            if args.outage_every_s > 0 and now >= next_outage:
                broker.restart(down_s=args.outage_s)
                reconnects += 1
                next_outage += args.outage_every_s
            if args.command_every_s > 0 and now >= next_cmd:
                k += 1
                cmd = {"id": f"soak-{k}", "issued_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "body": {"type": "lamp.set", "level": 40 + k % 50, "fade_ms": 200}}
                tel.client.publish(f"smartpole/v1/{pole.pole_id}/cmd", json.dumps(cmd), qos=1)
                next_cmd += args.command_every_s
            time.sleep(0.2)
        tel.close()
    finally:
        code, stop_s = stop_probed(pole, 20.0, 60.0)
        pole.stop()
        peers.stop()
        broker.stop()
    with open(work / "samples.jsonl", "w") as fh:
        fh.writelines(json.dumps(s) + "\n" for s in samples)
    report(samples, pole.probe_out, args, reconnects, code, stop_s)
    return 0


def stop_probed(pole: ProbedPole, within_s: float, probe_s: float) -> tuple[int | None, float]:
    """SIGTERM, and systemd's TimeoutStopSec: a controller whose run has not ended
    `within_s` after it is SIGKILLed, as on a pole (exit -9). Once the probe says the
    run ended ("stopped"), its final tracemalloc diff (not the pole's work) gets up to
    `probe_s` more. Returns the exit code and the seconds to the end of the run."""
    p = pole.controller
    t0 = time.monotonic()
    stopped: float | None = None
    if p is not None and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        while p.poll() is None:
            now = time.monotonic() - t0
            if stopped is None and pole.probe_out.exists() and \
                    '"stopped"' in pole.probe_out.read_text():
                stopped = now
            if now > (within_s if stopped is None else within_s + probe_s):
                break
            time.sleep(0.1)
    code = pole.stop_controller(signal.SIGKILL, within_s=5)  # if still running; the log
    return code, stopped if stopped is not None else time.monotonic() - t0


def probe_latest(path: Path) -> dict[str, float]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        rec = json.loads(line)
        if "tasks" in rec:
            return {k: float(v) for k, v in rec.items() if k != "t"}
    return {}


def report(samples: list[dict[str, float]], probe: Path, args: argparse.Namespace,
           reconnects: int, code: int | None, stop_s: float) -> None:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                  if line.startswith("Model name")), "?")
    vnni = "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    warm = [s for s in samples if s["t"] >= args.warmup_s]
    print(f"\nsoak figures ({model}, AVX-512 VNNI {'yes' if vnni else 'no'}; "
          f"{len(samples)} samples, {len(warm)} after {args.warmup_s:.0f} s warm-up; "
          f"controller exit {code}; its run ended {stop_s:.1f} s after SIGTERM)")
    if len(warm) < 3:
        print("too short to fit slopes")
        return
    t = np.array([s["t"] for s in warm])
    hours = (t[-1] - t[0]) / 3600
    frames = warm[-1].get("frames", 0) - warm[0].get("frames", 0)
    tracks = warm[-1].get("tracks_created", 0) - warm[0].get("tracks_created", 0)
    recon = warm[-1]["reconnects"] - warm[0]["reconnects"]
    cpu_pct = 100 * (warm[-1]["cpu_s"] - warm[0]["cpu_s"]) / (t[-1] - t[0])
    print(f"work after warm-up: {frames:.0f} frames, {tracks:.0f} tracks, {recon:.0f} "
          f"reconnects in {hours * 60:.1f} min; CPU {cpu_pct:.1f} % of one core")
    for key, unit in (("rss_mb", "MB"), ("pss_mb", "MB"), ("rss_heap_mb", "MB"),
                      ("rss_arenas_mb", "MB"), ("rss_anon_other_mb", "MB"),
                      ("rss_file_mb", "MB"), ("malloc_used_mb", "MB"),
                      ("malloc_free_mb", "MB"), ("malloc_heap_mb", "MB"),
                      ("malloc_mmapped_mb", "MB"), ("pymalloc_arenas", "MiB"),
                      ("pymalloc_blocks_mb", "MB"), ("tracemalloc_self_mb", "MB"),
                      ("traced_bytes", "B"),
                      ("queue_kb", "KB"), ("tracks_held", ""),
                      ("fds", ""), ("threads", ""), ("tasks", ""), ("loop_lag_ms", "ms")):
        if key not in warm[0]:
            continue
        y = np.array([s.get(key, np.nan) for s in warm])
        slope, se = fit(t / 3600, y)
        per = []
        for n, label, scale in ((frames, "1,000 frames", 1000), (tracks, "1,000 tracks", 1000),
                                (recon, "100 reconnects", 100)):
            if n > 0:
                per.append(f"{slope * hours / n * scale:+.3g} {unit} per {label}")
        print(f"  {key}: {y[0]:.4g} -> {y[-1]:.4g} (min {np.nanmin(y):.4g}, max "
              f"{np.nanmax(y):.4g}); slope {slope:+.3g} +- {se:.2g} {unit}/h; "
              + "; ".join(per))
    rss = np.array([s["rss_mb"] for s in warm])
    rss_slope, rss_se = fit(t / 3600, rss)
    # Native allocators grow in steps (a new thread's malloc arena, a larger buffer) and
    # then stay: a slope over a window with one step in it is not a leak rate. The
    # verdict is judged on the second half of the window, and both are printed.
    half = len(t) // 2
    tail_slope, tail_se = fit(t[half:] / 3600, rss[half:])
    steps = [(float(t[i]), float(rss[i] - rss[i - 1])) for i in range(1, len(rss))
             if rss[i] - rss[i - 1] > 5.0]
    flat = tail_slope - 2 * tail_se <= args.bound_mb_h
    if steps:  # the creep proper: from the last step to the end
        after = [s for s in warm if s["t"] > steps[-1][0]]
        if len(after) >= 3:
            ta = np.array([s["t"] for s in after])
            fa = np.array([s.get("frames", 0) for s in after]) / 1000
            for key in ("rss_mb", "pss_mb"):
                y = np.array([s[key] for s in after])
                sh, seh = fit(ta / 3600, y)
                sf, sef = fit(fa, y) if fa[-1] > fa[0] else (float("nan"), float("nan"))
                print(f"{key} after the last step ({ta[-1] - ta[0]:.0f} s, "
                      f"{(fa[-1] - fa[0]) * 1000:.0f} frames): {y[0]:.1f} -> {y[-1]:.1f} MB; "
                      f"{sh:+.2f} +- {seh:.2f} MB/h; {sf:+.3f} +- {sef:.3f} MB per 1,000 frames")
    print("RSS steps over 5 MB after warm-up: "
          + (", ".join(f"+{d:.0f} MB at {at:.0f} s" for at, d in steps) or "none"))
    print(f"verdict: RSS {'flat' if flat else 'GROWING'} over the second half "
          f"({tail_slope:+.2f} +- {tail_se:.2f} MB/h, bound {args.bound_mb_h} MB/h; whole "
          f"window {rss_slope:+.2f} +- {rss_se:.2f} MB/h)")
    try:
        final = [json.loads(x) for x in probe.read_text().splitlines() if '"final"' in x]
    except OSError:
        final = []
    if final:
        print("tracemalloc, largest growth since the warm-up baseline (diff took "
              f"{final[-1].get('took_s', float('nan')):.1f} s):")
        for row in final[-1]["top"][:10]:
            print(f"  {row['size_diff'] / 1024:+9.1f} KiB {row['count_diff']:+7d} blocks  "
                  f"{row['site']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--accelerated", action="store_true")
    p.add_argument("--warmup-s", type=float, default=None)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--outage-every-s", type=float, default=None)
    p.add_argument("--outage-s", type=float, default=3.0)
    p.add_argument("--command-every-s", type=float, default=2.0)
    p.add_argument("--bound-mb-h", type=float, default=1.0)
    p.add_argument("--replay-cache", type=int, default=None,
                   help="[commands] replay_cache for the run: small enough that the bounded "
                   "cache fills during the warm-up, so that what it holds is not counted as "
                   "growth (the default 10,000 fills after 5.5 h at a command every 2 s)")
    p.add_argument("--no-tracemalloc", action="store_true",
                   help="run the controller without tracemalloc, as on a pole (no allocation "
                   "diff; Python's object arenas are counted instead)")
    args = p.parse_args()
    if args.warmup_s is None:
        args.warmup_s = min(600.0, args.minutes * 60 / 4)
    if args.outage_every_s is None:
        args.outage_every_s = 30.0 if args.accelerated else 300.0
    os.environ.setdefault("SOAK_WARMUP_S", str(args.warmup_s))
    if args.no_tracemalloc:
        os.environ["SOAK_TRACEMALLOC"] = "0"
    # The controller's allocator as deploy/pole-controller.service sets it (override by
    # setting MALLOC_ARENA_MAX, or POLE_MALLOC_TRIM_S=0 to turn the heap trimming off).
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
