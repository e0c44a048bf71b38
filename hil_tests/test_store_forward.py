"""Nothing lost: broker outages and controller kills during event bursts, checked by an
independent subscriber process that records every (pole_id, seq)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from polesim.broker import mosquitto_path, start_mosquitto
from polesim.firmware import PanelClient
from polesim.pole import ROOT, SimPole

from tests.support import need

pytestmark = pytest.mark.hil


def _recorder(port: int, pole: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hil_tests.recorder", "--port", str(port),
         "--topic", f"smartpole/v1/{pole}/+", "--out", str(out), "--client-id", f"rec-{pole}"],
        cwd=ROOT, stderr=subprocess.DEVNULL)


def _burst(panel: PanelClient, stop: threading.Event) -> None:
    door = 0
    while not stop.is_set():
        door ^= 1
        with contextlib.suppress(Exception):  # a busy panel: keep going
            panel.set(door=door)
        time.sleep(0.05)


def _queued(db: Path) -> int:
    # Read the controller's queue file directly (WAL allows a concurrent reader).
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
        return int(c.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def _check(rec: Path, db: Path) -> dict[str, Any]:
    seqs = [json.loads(line)["seq"] for line in rec.read_text().splitlines()]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        next_seq = int(c.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
        dropped = int(c.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0])
        left = int(c.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    got = set(seqs)
    missing = sorted(set(range(1, next_seq)) - got)
    return {"sent": next_seq - 1, "received": len(seqs), "unique": len(got),
            "duplicates": len(seqs) - len(got), "missing": missing, "dropped": dropped,
            "left": left}


def _subscribed(rec: Path) -> int:
    p = Path(str(rec) + ".subscribed")
    return len(p.read_text().splitlines()) if p.exists() else 0


def _wait_subscribed(rec: Path, before: int, within_s: float) -> None:
    end = time.monotonic() + within_s
    while time.monotonic() < end and _subscribed(rec) <= before:
        time.sleep(0.05)
    assert _subscribed(rec) > before, "the recorder did not come back"


def _wait_drained(db: Path, within_s: float) -> None:
    end = time.monotonic() + within_s
    while time.monotonic() < end and _queued(db):
        time.sleep(0.2)


@pytest.fixture
def persistent_broker() -> Any:
    if mosquitto_path() is None:
        need("mosquitto is not installed (apt-get install mosquitto)")
    b = start_mosquitto(persistence=True)
    yield b
    b.stop()


def test_broker_outages_lose_nothing(persistent_broker: Any, firmware_build: Path,
                                     tmp_path: Path) -> None:
    b = persistent_broker
    pole = SimPole(tmp_path, b.url, pole_id="sf-broker", build_dir=firmware_build,
                   overrides={"telemetry": {"interval_s": 0.5},
                              "mqtt": {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
                              "queue": {"drain_rate_per_s": 500.0}}).start()
    rec = tmp_path / "rec.jsonl"
    recorder = _recorder(b.port, pole.pole_id, rec)
    db = tmp_path / "queue.sqlite3"
    stop = threading.Event()
    assert pole.firmware is not None
    burst = threading.Thread(target=_burst, args=(pole.firmware.panel, stop), daemon=True)
    try:
        time.sleep(3)
        burst.start()
        backlog = []
        assert pole.controller is not None
        for _ in range(5):
            time.sleep(1.0)
            b.kill()
            time.sleep(1.5)  # events keep coming while the broker is down
            backlog.append(_queued(db))
            # The observer must be listening before the pole is back, or it would miss
            # what the pole drains (mosquitto 2.0.11 does not queue for a persistent
            # session restored from disk): hold the controller until it is.
            subs = _subscribed(rec)
            pole.controller.send_signal(signal.SIGSTOP)
            b.start_again()
            _wait_subscribed(rec, subs, 10)
            pole.controller.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        stop.set()
        burst.join(5)
        _wait_drained(db, 30)
        time.sleep(1.5)  # the recorder's last deliveries
    finally:
        stop.set()
        pole.stop()
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(5)
    r = _check(rec, db)
    print(f"broker outages: backlog at each outage {backlog}; {r}")
    assert all(n > 0 for n in backlog), backlog
    assert r["sent"] >= 20 and r["dropped"] == 0 and r["left"] == 0
    assert r["missing"] == [], r


def test_controller_kills_lose_nothing(broker: Any, firmware_build: Path,
                                       tmp_path: Path) -> None:
    pole = SimPole(tmp_path, broker.url, pole_id="sf-kill", build_dir=firmware_build,
                   overrides={"telemetry": {"interval_s": 0.5}}).start()
    rec = tmp_path / "rec.jsonl"
    recorder = _recorder(broker.port, pole.pole_id, rec)
    db = tmp_path / "queue.sqlite3"
    stop = threading.Event()
    assert pole.firmware is not None
    burst = threading.Thread(target=_burst, args=(pole.firmware.panel, stop), daemon=True)
    try:
        time.sleep(3)
        burst.start()
        for _ in range(3):
            time.sleep(1.5)
            pole.stop_controller(signal.SIGKILL)  # mid-burst, no goodbye
            pole.start_controller()
        time.sleep(2.0)
        stop.set()
        burst.join(5)
        _wait_drained(db, 30)
        time.sleep(1.5)
    finally:
        stop.set()
        pole.stop()
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(5)
    r = _check(rec, db)
    print(f"controller kills: {r}")
    assert r["sent"] >= 10 and r["left"] == 0
    assert r["missing"] == [], r
