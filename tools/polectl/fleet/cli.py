"""The `polectl fleet-sim` and `polectl ingest` commands (python -m polectl.fleet runs
them on their own, for the benchmark)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edge_controller.config import POLE_ID_RE
from edge_controller.uplink.trust import load_public_key
from polectl.broker import BrokerAddr, tls_context
from polectl.commands import Signer, load_signer
from polectl.console import err, out
from polectl.fleet.city import FleetReport, run_fleet
from polectl.fleet.ingest import Ingest, IngestConfig, run_ingest
from polectl.fleet.mqtt import MqttProtocolError
from polectl.fleet.pole import DEFAULT_ROOT, FleetConfig, SimFleetPole
from polectl.fleet.script import load_script
from polectl.keyfile import PUBLIC, broker_password, write_file


def _broker_or_exit(s: str) -> BrokerAddr:
    try:
        return BrokerAddr.parse(s)
    except ValueError as e:
        err.print(f"[red]--broker[/]: {e}")
        raise typer.Exit(2) from None


def _test_signer(public_out: Path) -> Signer:
    """A test command key made now: its public half written to `public_out` (for
    fleet-sim --command-key), the private half only in this process."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    write_file(public_out, key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), PUBLIC)
    return key.sign


def _signer_or_exit(sign_key: Path | None, test_key_out: Path | None) -> Signer | None:
    try:
        if sign_key is not None:
            return load_signer(sign_key)
        return _test_signer(test_key_out) if test_key_out is not None else None
    except (OSError, ValueError) as e:
        err.print(f"[red]{'--sign-key' if sign_key else '--test-key-out'}[/]: {e}")
        raise typer.Exit(2) from None


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


BrokerOpt = Annotated[str, typer.Option(
    help="Broker: host:port, mqtt://host:port or mqtts://host:port.")]
RootOpt = Annotated[str, typer.Option(help="Topic root (mqtt.topic_root of the poles).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
ReportOpt = Annotated[Path | None, typer.Option(
    help="Also write the full report (per pole) as JSON to this file.")]
UserOpt = Annotated[str | None, typer.Option(help="Broker user name.")]
PassOpt = Annotated[Path | None, typer.Option(
    "--password-file", help="File whose first line is the broker password (else "
    "$SMARTPOLE_MQTT_PASSWORD); passwords are never taken on the command line.")]
CaOpt = Annotated[Path | None, typer.Option(help="CA bundle for mqtts://.")]


# Long: most of it is the option list typer turns into the command line.
def fleet_sim_command(
    poles: Annotated[int, typer.Option("--poles", "-n", min=1, max=100_000,
                                       help="How many poles to simulate.")] = 10,
    broker: BrokerOpt = "127.0.0.1:1883",
    duration: Annotated[float, typer.Option(help="Run this long in seconds (0: until "
                                            "Ctrl-C).")] = 60.0,
    interval: Annotated[float, typer.Option(min=0.2, help="Telemetry interval per pole, "
                                            "seconds (a pole's default is 10).")] = 10.0,
    events_per_hour: Annotated[float, typer.Option(min=0, help="Random events (door, tilt, "
                                                   "mains, faults) per pole per hour.")] = 1.0,
    script: Annotated[Path | None, typer.Option(help="JSON list of scripted steps: "
                                                "{\"at\": 5, \"poles\": \"0-9\", \"do\": "
                                                "\"event\"|\"outage\"|\"lamp\"|\"sensors\", "
                                                "...}.")] = None,
    prefix: Annotated[str, typer.Option(help="Pole ids are PREFIX-00000, PREFIX-00001, ...")]
        = "sim",
    root: RootOpt = DEFAULT_ROOT,
    session_expiry: Annotated[int, typer.Option(help="MQTT 5 session expiry per pole, "
                                                "seconds: the broker keeps its cmd "
                                                "subscription and queued commands that "
                                                "long.")] = 600,
    seed: Annotated[int, typer.Option(help="Random seed (phases, sensors, events).")] = 1,
    username: UserOpt = None,
    password: PassOpt = None,
    ca_file: CaOpt = None,
    command_key: Annotated[Path | None, typer.Option(
        help="The city's public command key (PEM): every pole then requires signed "
        "commands and verifies them like a provisioned pole (ingest --sign-key or "
        "--test-key-out signs them); without it the poles run unsigned commands.")] = None,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate N poles (no cameras) against a broker: retained state and birth, telemetry,
    scripted events, answers to commands; for load tests."""
    addr = _broker_or_exit(broker)
    if len(prefix) > 50 or not re.fullmatch(POLE_ID_RE, f"{prefix}-00000"):
        err.print(f"[red]--prefix[/] {prefix!r}: use lowercase letters, digits and '-' "
                  "(it becomes part of the pole id)")
        raise typer.Exit(2)
    try:
        steps = load_script(script) if script else []
    except ValueError as e:
        err.print(f"[red]--script[/]: {e}")
        raise typer.Exit(2) from None
    try:
        key = load_public_key(command_key) if command_key is not None else None
    except (OSError, ValueError) as e:
        err.print(f"[red]--command-key[/]: {e}")
        raise typer.Exit(2) from None
    cfg = FleetConfig(addr, poles, prefix, root, interval, duration, events_per_hour, steps,
                      session_expiry, seed=seed, username=username,
                      password=broker_password(password),
                      tls=tls_context(addr.tls, ca_file), command_key=key)

    def ready(_live: list[SimFleetPole]) -> None:
        if report is not None:  # for benchmarks: the fleet is connected, steady state begins
            report.with_suffix(".running").write_text("running\n")

    async def go() -> FleetReport:
        stop = asyncio.Event()
        _install_stop(stop)
        if as_json:
            return await run_fleet(cfg, stop, ready=ready)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                      TimeElapsedColumn(), console=err, transient=False) as prog:
            conn = prog.add_task("connecting poles", total=poles)
            run = prog.add_task("running (s)", total=duration or None, start=False)

            def on_progress(phase: str, done: float, total: float) -> None:
                if phase == "connect":
                    prog.update(conn, completed=done)
                else:
                    prog.start_task(run)
                    prog.update(run, completed=done)

            return await run_fleet(cfg, stop, on_progress, ready)

    try:
        rep = asyncio.run(go())
    except OSError as e:
        err.print(f"[red]cannot reach the broker at {addr.host}:{addr.port}[/]: {e}. "
                  "Start one (mosquitto -p PORT) or pass --broker.")
        raise typer.Exit(1) from None
    data = rep.as_dict()
    if report is not None:
        report.write_text(json.dumps(data, indent=1))
    summary = {k: v for k, v in data.items() if k != "per_pole"}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"{rep.connected}/{rep.poles} poles connected in {rep.connect_s:.1f} s; "
                  f"{summary['messages']} messages in {rep.seconds:.1f} s "
                  f"({summary['msgs_per_s']}/s), {summary['failed']} unacknowledged")
        for line in rep.connect_errors[:5]:
            err.print(f"[red]{line}[/]")
    if rep.connected < rep.poles or summary["failed"]:
        if rep.connect_errors:
            err.print("Some poles could not connect: check the broker's connection limit "
                      "(max_connections) and the open-file limit (ulimit -n).")
        raise typer.Exit(1)


# Long: most of it is the option list typer turns into the command line.
def ingest_command(
    broker: BrokerOpt = "127.0.0.1:1883",
    group: Annotated[str, typer.Option(help="Shared-subscription group: workers with the "
                                       "same group split the fleet's messages.")] = "ingest",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Group members to run in this "
                                         "process (each its own connection).")] = 1,
    root: RootOpt = DEFAULT_ROOT,
    duration: Annotated[float, typer.Option(help="Stop after this long in seconds (0: until "
                                            "Ctrl-C).")] = 0.0,
    client_id: Annotated[str, typer.Option(help="Client id prefix; keep it stable so a "
                                           "restarted worker resumes its session.")]
        = "smartpole-ingest",
    session_expiry: Annotated[int, typer.Option(help="MQTT 5 session expiry, seconds: the "
                                                "broker queues for a stopped worker that "
                                                "long.")] = 300,
    command_rate: Annotated[float, typer.Option(min=0, help="Also send this many commands "
                                                "per second (ping, lamp.set) to online poles "
                                                "and match their results.")] = 0.0,
    command_expiry: Annotated[int, typer.Option(min=1, help="expires_at and MQTT 5 message "
                                                "expiry of those commands, seconds.")] = 30,
    limit: Annotated[int, typer.Option(help="Poles shown in the table.")] = 30,
    sign_key: Annotated[Path | None, typer.Option(
        help="The city's private command key (Ed25519 PEM): commands are signed with it "
        "and bound to their pole.")] = None,
    test_key_out: Annotated[Path | None, typer.Option(
        help="Sign with a test key made at start; its public half is written here for "
        "fleet-sim --command-key.")] = None,
    username: UserOpt = None,
    password: PassOpt = None,
    ca_file: CaOpt = None,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reference backend consumer: read a fleet through a shared subscription
    ($share/GROUP/ROOT/+/telemetry|events|cmd/result), follow retained state and birth,
    print per-pole summaries and publish-to-consume latency."""
    addr = _broker_or_exit(broker)
    if "/" in group or "+" in group or "#" in group or not group:
        err.print(f"[red]--group[/] {group!r}: a plain name without / + #")
        raise typer.Exit(2)
    cfg = IngestConfig(addr, group, root, workers, client_id, session_expiry, command_rate,
                       command_expiry, username, broker_password(password),
                       tls_context(addr.tls, ca_file), _signer_or_exit(sign_key, test_key_out))

    async def go() -> Ingest:
        stop = asyncio.Event()
        _install_stop(stop)
        if duration > 0:
            asyncio.get_running_loop().call_later(duration, stop.set)

        def ready() -> None:
            if not as_json:
                err.print(f"ingest: subscribed as group {group!r} ({workers} worker(s)); "
                          "Ctrl-C to stop")
            if report is not None:
                report.with_suffix(".ready").write_text("ready\n")

        return await run_ingest(cfg, stop, ready)

    try:
        st = asyncio.run(go())
    except (OSError, MqttProtocolError) as e:
        err.print(f"[red]cannot consume from {addr.host}:{addr.port}[/]: {e}. Check --broker "
                  "and that the broker speaks MQTT 5 (shared subscriptions need it).")
        raise typer.Exit(1) from None
    summ = st.summary()
    if report is not None:
        report.write_text(json.dumps({**summ, "per_pole": {k: v.as_dict() for k, v in
                                                           st.poles.items()}}, indent=1))
    if as_json:
        out.print_json(json.dumps(summ))
    else:
        out.print(st.table(limit))
        lat = summ["latency_ms"]
        out.print(f"{summ['messages']} messages ({summ['msgs_per_s']}/s), "
                  f"{summ['duplicates']} duplicates; publish-to-consume p50 {lat['p50']} ms, "
                  f"p99 {lat['p99']} ms, max {lat['max']} ms")


app = typer.Typer(help="Fleet simulation and the reference consumer.", no_args_is_help=True)
app.command("fleet-sim")(fleet_sim_command)
app.command("ingest")(ingest_command)
