"""`polectl`: the installer's command line (typer + rich)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from edge_controller.config import ConfigError, load
from polectl.configfile import load_or_exit
from polectl.console import err, out, print_config_problems

app = typer.Typer(help="Install, commission and watch smartpole poles.", no_args_is_help=True)
config_app = typer.Typer(help="Work with a pole's TOML config.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The pole's TOML config file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate a config file exactly as the controller does at start-up, and warn about
    permissive security settings (unsigned commands, plain MQTT, passwords in the file)."""
    try:
        cfg = load(file)
    except ConfigError as e:
        if as_json:
            out.print_json(json.dumps({"ok": False, "file": str(file), "problems": [
                {"key": k, "reason": r} for k, r in e.problems]}))
        else:
            print_config_problems(e, "Fix the keys above; docs/config.md lists every key "
                                  "with its default.")
        raise typer.Exit(2) from None
    from polectl.hardening import permissive

    warnings = permissive(cfg)
    if as_json:
        out.print_json(json.dumps({"ok": True, "file": str(file), "pole_id": cfg.pole.id,
                                   "warnings": [w.__dict__ for w in warnings]}))
    else:
        out.print(f"[green]OK[/] {file}: pole {cfg.pole.id}, broker {cfg.mqtt.url}, "
                  f"link {cfg.link.port}")
        for w in warnings:
            err.print(f"[yellow]warning[/] {w.key}: {w.problem}.\n  fix: {w.fix}")


@config_app.command("doc")
def config_doc() -> None:
    """Print the config reference (docs/config.md) generated from the models."""
    from polectl.configdoc import render

    print(render(), end="")


@app.command()
def replay(
    video: Annotated[Path, typer.Argument(help="Recorded video (any format OpenCV reads).")],
    config: Annotated[Path, typer.Option("--config", "-c", help="The pole's TOML config "
                                         "(zones, signal, crossing, detector).")],
    events_out: Annotated[Path, typer.Option("--events-out", help="Events, one JSON object "
                                             "per line.")] = Path("events.jsonl"),
    annotate: Annotated[Path | None, typer.Option(help="Also write an annotated video (boxes, "
                                                  "tracks, zones, signal; people blurred).")]
        = None,
    start: Annotated[str | None, typer.Option(help="Wall-clock time of the first frame (ISO "
                                              "8601 or epoch seconds) for the signal plan; "
                                              "default 0 = the plan's epoch.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    save_detections: Annotated[Path | None, typer.Option(
        help="Also save the detector's boxes per frame (.npz) for --detections.")] = None,
    detections: Annotated[Path | None, typer.Option(
        help="Replay boxes saved by --save-detections instead of running the detector "
             "(try zones and plans on the same video in seconds).")] = None,
    regime: Annotated[str | None, typer.Option(
        help="Lighting regime: day, night or auto (judged from the frame); default: the "
             "config's [detector.enhance] regime.")] = None,
    mor: Annotated[float | None, typer.Option(
        help="Visibility (MOR, m) for the fog model, with the config's "
             "[visibility.calibration]; as the pole's visibility task would feed it.")] = None,
) -> None:
    """Run the crossing pipeline over a recorded video as fast as the CPU allows, in video
    time, and write its events (violations and crossings)."""
    from polectl.detect import DetectError
    from polectl.replay import parse_start
    from polectl.replay import replay as run_replay

    cfg = load_or_exit(config)
    if not cfg.zones:
        err.print(f"[red]{config}[/]: [bold]zones[/]: no [[zones]] configured; replay has "
                  "nothing to judge. Draw them with `polectl calibrate` or edit the file.")
        raise typer.Exit(2)
    try:
        summary = run_replay(video, cfg, events_out, annotate, parse_start(start), max_frames,
                             progress=not as_json, save_detections=save_detections,
                             detections=detections, regime=regime, mor_m=mor)
    except (FileNotFoundError, ValueError, DetectError) as e:
        err.print(f"[red]replay failed[/]: {e}")
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"{summary['frames']} frames ({summary['processed']} analysed) in "
                  f"{summary['seconds']} s ({summary['x_realtime']}x real time): "
                  f"{summary['violations']} violations, {summary['crossings']} crossings "
                  f"-> {events_out}")


@app.command()
def detect(
    video: Annotated[Path, typer.Argument(help="Recorded video (any format OpenCV reads).")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The pole's TOML "
                                                "config (its \\[detector] section).")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Detections, one JSON object per "
                                           "analysed frame.")] = Path("detections.jsonl"),
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    regime: Annotated[str | None, typer.Option(
        help="Lighting regime: day, night or auto (judged from the frame); default: the "
             "config's [detector.enhance] regime.")] = None,
    mor: Annotated[float | None, typer.Option(
        help="Visibility (MOR, m) for the fog model, with the config's "
             "[visibility.calibration].")] = None,
) -> None:
    """Run the configured detection pipeline (tiling, motion gating) over a recorded video."""
    from polectl.detect import DetectError, detect_video

    try:
        summary = detect_video(video, config, out_path, progress=True, max_frames=max_frames,
                               regime=regime, mor_m=mor)
    except ConfigError as e:
        print_config_problems(e)
        raise typer.Exit(2) from None
    except (DetectError, FileNotFoundError, ValueError) as e:
        err.print(f"[red]detect failed[/]: {e}")
        raise typer.Exit(1) from None
    out.print_json(json.dumps(summary))


@app.command()
def monitor(
    broker: Annotated[str, typer.Option(help="Broker as host:port.")] = "127.0.0.1:1883",
    pole: Annotated[str, typer.Option(help="Pole id, or + for every pole.")] = "+",
    root: Annotated[str, typer.Option(help="Topic root.")] = "smartpole/v1",
    seconds: Annotated[float, typer.Option(help="Stop after this long (0: until Ctrl-C).")] = 0,
) -> None:
    """Live terminal view of one pole or many, from MQTT."""
    from polectl.monitor import monitor as run_monitor

    host, _, port = broker.rpartition(":")

    async def go() -> None:
        stop = asyncio.Event()
        if seconds > 0:
            asyncio.get_running_loop().call_later(seconds, stop.set)
        await run_monitor(host or "127.0.0.1", int(port), root, pole, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


@app.command()
def sim(
    video: Annotated[Path | None, typer.Option(help="Video for the camera task.")] = None,
    broker: Annotated[str, typer.Option(
        help="auto (mosquitto, else embedded), mosquitto, embedded, or host:port of a "
        "running broker.")] = "auto",
    allow_apt: Annotated[bool, typer.Option(
        help="Install mosquitto with apt-get when missing (root only).")] = False,
    live: Annotated[bool, typer.Option(help="Show the live view.")] = True,
    workdir: Annotated[Path, typer.Option(help="Where logs and the generated config go.")] =
        Path("build/sim"),
    crossing: Annotated[bool, typer.Option(help="Run the red-light crossing pipeline on a "
                                           "demo zone and signal plan.")] = True,
    audio_device: Annotated[str, typer.Option(help="ALSA device for warnings ('null' plays "
                                              "silently; 'default' for a sound card).")]
        = "null",
    profile: Annotated[str | None, typer.Option(
        help="A backend profile beside native ([mqtt] profiles, docs/backends.md): "
        "homeassistant, thingsboard, sparkplug_b or huawei_iotda, all on the sim's broker; "
        "the live view shows its messages too.")] = None,
) -> None:
    """Run a whole simulated pole (firmware on the MicroPython unix port, broker, controller)
    on a recorded clip, with a live view of what it publishes; exits when the clip ends."""
    from polectl.sim import run_sim

    code = run_sim(video=video, broker=broker, allow_apt=allow_apt, live=live, workdir=workdir,
                   crossing=crossing, audio_device=audio_device, profile=profile)
    raise typer.Exit(code)


def _register_installer_commands() -> None:
    # Each module imports its heavy dependencies only when its command runs.
    from polectl import calibrate, flash, provision
    from polectl import visibility as _vis
    from polectl.commission.cli import commission_command
    from polectl.deploy import bundle_app, deploy
    from polectl.fleet.cli import fleet_sim_command, ingest_command

    app.command("flash")(flash.flash_command)
    app.add_typer(provision.provision_app, name="provision")
    app.command("commission")(commission_command)
    app.command("calibrate")(calibrate.calibrate_command)
    app.command("fleet-sim")(fleet_sim_command)
    app.command("ingest")(ingest_command)
    app.command("visibility")(_vis.command)
    app.command()(deploy)
    app.add_typer(bundle_app, name="bundle")


_register_installer_commands()

if __name__ == "__main__":
    app()
