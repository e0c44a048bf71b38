"""`polectl fleet-sim` and `polectl ingest` against mosquitto: schema-valid messages,
0 loss through a shared subscription split over workers, retained discovery, commands
answered, stale commands never delivered (message expiry), the will on an outage and a
resumed session (session expiry)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from polectl.broker import BrokerAddr
from polectl.commands import command
from polectl.fleet.city import run_fleet
from polectl.fleet.ingest import IngestConfig, run_ingest
from polectl.fleet.mqtt import MqttSession
from polectl.fleet.pole import CORE_TASKS, FleetConfig
from polectl.fleet.script import Step
from polesim.broker import Broker
from typer.testing import CliRunner

from edge_controller.api import LampSet, Ping
from edge_controller.clock import utc_iso
from edge_controller.version import __version__
from hil_tests.capture import Capture
from tests.api.schemas import validate_message


async def test_small_fleet_zero_loss_split_over_two_workers(broker: Broker) -> None:
    addr = BrokerAddr("127.0.0.1", broker.port)
    cap = Capture("127.0.0.1", broker.port, "smartpole/v1/#")
    stop = asyncio.Event()
    ready = [asyncio.Event(), asyncio.Event()]
    key = Ed25519PrivateKey.generate()  # the backend signs, the poles require signatures
    # Two consumer processes' worth of the same group, each with its own state.
    ing = [asyncio.create_task(run_ingest(
        IngestConfig(addr, group="g1", client_id=f"ingest-{i}", command_rate=4 if i == 0 else 0,
                     signer=key.sign), stop, ready[i].set)) for i in range(2)]
    await asyncio.gather(*(r.wait() for r in ready))
    try:
        cfg = FleetConfig(addr, poles=25, prefix="fs", interval_s=0.5, duration_s=4.0,
                          events_per_hour=1800, script=[Step(1.0, "0-4", "event",
                                                             {"event": "tilt_alarm",
                                                              "detail": {"tilt_deg": 7.5}})],
                          command_key=key.public_key())
        rep = await run_fleet(cfg)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        states = await asyncio.gather(*ing)
        cap.close()
    tot = rep.totals()
    assert rep.connected == 25 and tot["failed"] == 0
    assert tot["sent"]["telemetry"] >= 25 * 6 and tot["sent"]["events"] >= 5
    # Every acknowledged message reached exactly one worker of the group: 0 loss.
    for kind in ("telemetry", "events"):
        got = [s.unique[kind] for s in states]
        assert sum(got) == tot["acked"][kind], (kind, got, tot)
    assert all(s.unique["telemetry"] > 0 for s in states), "the group spreads the load"
    assert sum(s.duplicates for s in states) == 0
    # API 1.2 seq: merged over the group, every pole's records are contiguous.
    seqs: dict[str, set[int]] = {}
    for m in cap.msgs:
        if m.kind in ("telemetry", "events", "cmd/result"):
            seqs.setdefault(m.json()["pole_id"], set()).add(m.json()["seq"])
    assert all(s == set(range(1, max(s) + 1)) for s in seqs.values())
    lat = [s.summary()["latency_ms"]["p99"] for s in states]
    assert max(lat) < 1000, lat
    # Commands from the consumer were answered, through the shared subscription.
    cmds = states[0].summary()["commands"]
    results = sum(s.unique["cmd/result"] for s in states)
    assert cmds["sent"] >= 8 and results >= cmds["sent"] - 2
    # ... signed by the backend and verified by every pole: none refused.
    answered = sum((p.results for s in states for p in s.poles.values()), Counter())
    assert answered["ok"] == results and answered["rejected"] == 0, answered
    # Retained discovery: worker 0 knows every pole, its versions, and that it stopped.
    s0 = states[0]
    assert len(s0.poles) == 25
    assert {p.state for p in s0.poles.values()} == {"offline"}
    assert all(p.controller_version == __version__ for p in s0.poles.values())
    # Everything the poles published follows the real v1 schemas.
    kinds = set()
    for m in cap.msgs:
        if m.kind != "cmd":
            validate_message(m.topic, m.payload)
            kinds.add(m.kind)
    assert kinds == {"state", "birth", "telemetry", "events", "cmd/result"}
    tilt = [m.json() for m in cap.of_kind("events") if m.json()["event"] == "tilt_alarm"]
    assert len({t["pole_id"] for t in tilt if t["detail"] == {"tilt_deg": 7.5}}) == 5


async def test_outage_will_session_and_message_expiry(broker: Broker) -> None:
    addr = BrokerAddr("127.0.0.1", broker.port)
    cap = Capture("127.0.0.1", broker.port, "smartpole/v1/ex-00000/#")
    backend = MqttSession("127.0.0.1", broker.port, "test-backend")
    await backend.connect()
    pole = "smartpole/v1/ex-00000"
    key = Ed25519PrivateKey.generate()

    async def during_outage() -> None:
        # The pole drops off at t=0.5 s for 3 s; meanwhile the backend sends three commands.
        await asyncio.to_thread(cap.wait_for, lambda m: m.kind == "state"
                                and m.json()["reason"] == "connection_lost", 10)
        await backend.publish(f"{pole}/cmd", command("stale", Ping(type="ping"), "ex-00000",
                                                     1, key.sign), message_expiry_s=1)
        await backend.publish(f"{pole}/cmd", command(
            "fresh", LampSet(type="lamp.set", level=40), "ex-00000", 60, key.sign),
            message_expiry_s=60)
        await backend.publish(f"{pole}/cmd", command(
            "unsigned", LampSet(type="lamp.set", level=90), "ex-00000", 60),
            message_expiry_s=60)
        past = json.dumps({"id": "late", "issued_at": utc_iso(time.time() - 120),
                           "expires_at": utc_iso(time.time() - 60), "body": {"type": "ping"}})
        await backend.publish(f"{pole}/cmd", past.encode(), message_expiry_s=60)

    cfg = FleetConfig(addr, poles=1, prefix="ex", interval_s=0.5, duration_s=5.0,
                      events_per_hour=0, session_expiry_s=60,
                      script=[Step(0.5, "*", "outage", {"for_s": 3.0})],
                      command_key=key.public_key())
    sender = asyncio.create_task(during_outage())
    rep = await run_fleet(cfg)
    await sender
    await backend.disconnect()
    await asyncio.sleep(0.3)
    cap.close()
    p = rep.per_pole["ex-00000"]
    assert p["outages"] == 1 and p["reconnects"] == 1
    states = [(m.json()["state"], m.json()["reason"]) for m in cap.of_kind("state")]
    assert states[:4] == [("online", "connected"), ("offline", "connection_lost"),
                          ("online", "connected"), ("offline", "shutdown")], states
    results = {m.json()["id"]: m.json() for m in cap.of_kind("cmd/result")}
    # The session survived the outage, so the queued command arrived after it ...
    assert results["fresh"]["status"] == "ok"
    # ... an unsigned one is refused: fleet-sim's poles require signatures like real ones ...
    assert (results["unsigned"]["status"], results["unsigned"]["reason"]) == \
        ("rejected", "signature")
    # ... the one whose MQTT message expiry ran out never reached the pole ...
    assert "stale" not in results
    # ... and one past its expires_at was refused by the pole itself.
    assert (results["late"]["status"], results["late"]["reason"]) == ("rejected", "expired")
    tel = [m.json() for m in cap.of_kind("telemetry")]
    assert tel[-1]["lamp"]["level"] == 40 and tel[-1]["mqtt"]["reconnects"] == 1


def test_cli_fleet_sim_and_ingest(polectl_app: typer.Typer, broker: Broker,
                                  tmp_path: Path) -> None:
    import threading

    b = f"127.0.0.1:{broker.port}"
    ing_report = tmp_path / "ingest.json"
    holder: dict[str, object] = {}
    pub = tmp_path / "cmd.pub"  # ingest signs with a test key made at start

    def consume() -> None:
        holder["r"] = CliRunner().invoke(polectl_app, [
            "ingest", "--broker", b, "--group", "cli", "--duration", "3.5", "--report",
            str(ing_report), "--json", "--command-rate", "5", "--test-key-out", str(pub)])

    t = threading.Thread(target=consume)
    t.start()
    deadline = time.monotonic() + 10
    while not ing_report.with_suffix(".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sim_report = tmp_path / "fleet.json"
    r = CliRunner().invoke(polectl_app, ["fleet-sim", "-n", "5", "--broker", b, "--prefix",
                                         "cli", "--duration", "1.5", "--interval", "0.5",
                                         "--report", str(sim_report), "--json",
                                         "--command-key", str(pub)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["connected"] == 5 and summary["failed"] == 0
    t.join(20)
    ri = holder["r"]
    assert getattr(ri, "exit_code", None) == 0, getattr(ri, "output", ri)
    ing = json.loads(ing_report.read_text())
    sim = json.loads(sim_report.read_text())
    assert ing["unique"]["telemetry"] == sim["acked"]["telemetry"]
    assert set(ing["per_pole"]) >= {f"cli-{i:05d}" for i in range(5)}
    res = Counter()
    for p in ing["per_pole"].values():
        res.update(p["results"])
    assert res["ok"] >= 2 and res["rejected"] == 0, res
    r = CliRunner().invoke(polectl_app, ["fleet-sim", "--broker", "nowhere"])
    assert r.exit_code == 2 and "host:port" in r.output


def test_core_tasks_are_the_controllers() -> None:
    """fleet-sim reports the controller's always-on tasks by their real names."""
    import ast

    src = (Path(__file__).resolve().parents[2] / "edge_controller" / "app.py").read_text()
    tree = ast.parse(src)
    # The `specs = [...]` list every controller starts with, and the health task it adds.
    core = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "specs" and isinstance(n.value, ast.List))
    calls = [*core.elts, *(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                           and getattr(n.func, "id", "") == "TaskSpec"
                           and getattr(n.args[0], "value", None) == "health")]
    names = [c.args[0].value for c in calls if isinstance(c, ast.Call)
             and isinstance(c.args[0], ast.Constant)]
    assert set(CORE_TASKS) == set(names)
