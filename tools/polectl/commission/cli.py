"""The `polectl commission` command."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge_controller.clock import utc_iso
from edge_controller.config import load
from polectl.commission.checks import Commissioning, Options
from polectl.commission.probe import CommissionError
from polectl.commission.report import write_reports
from polectl.configfile import load_or_exit
from polectl.console import err, out


def commission(config: Path, out_dir: Path, opts: Options,
               on_step: Callable[[str], None] | None = None) -> tuple[dict[str, Any],
                                                                      dict[str, Path]]:
    """Run the checklist and write the reports; returns (report, paths)."""
    cfg = load(config)
    started = utc_iso()
    com = Commissioning(cfg, config, opts, on_step)
    asyncio.run(com.run())
    paths = write_reports(com, out_dir, started)
    return json.loads(paths["json"].read_text()), paths


def _size(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    try:
        w, h = (int(v) for v in s.lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    err.print(f"[red]--frame-size[/] {s!r}: use WIDTHxHEIGHT, e.g. 1920x1080")
    raise typer.Exit(2)


# Long: two thirds of it is the option list typer turns into the command line.
def commission_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The pole's TOML config (its "
                                         "bundle's pole.toml): pole id, broker, camera, "
                                         "zones.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the JSON and HTML reports and "
                                          "the snapshot go.")] = Path("commissioning"),
    broker: Annotated[str | None, typer.Option(help="Broker as host:port or URL, when the "
                                               "laptop reaches it differently from the "
                                               "pole; default: mqtt.url.")] = None,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle (default mqtt.ca_file).")]
        = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (default "
                                              "mqtt.cert_file).")] = None,
    key: Annotated[Path | None, typer.Option(help="Client key (default mqtt.key_file).")]
        = None,
    username: Annotated[str | None, typer.Option(help="Broker user name.")] = None,
    password_file: Annotated[Path | None, typer.Option(
        help="File whose first line is the broker password (else $SMARTPOLE_MQTT_PASSWORD); "
        "passwords are never taken on the command line.")] = None,
    sweep: Annotated[str, typer.Option(help="Dimming sweep levels, percent, comma-separated; "
                                       "the lamp returns to its level afterwards.")]
        = "100,50,10,0",
    frame_size: Annotated[str | None, typer.Option(help="Expected camera frame size WxH "
                                                   "(default: what the camera gives "
                                                   "here).")] = None,
    snapshot_source: Annotated[str | None, typer.Option(help="Grab the snapshot from this "
                                                        "source instead of camera.source.")]
        = None,
    snapshot: Annotated[bool, typer.Option(help="Take the anonymised snapshot.")] = True,
    link_timeout: Annotated[float, typer.Option(help="Seconds to wait for the pole to be "
                                                "online with its firmware.")] = 30.0,
    sign_key: Annotated[Path | None, typer.Option(help="Ed25519 private key (PEM) to sign "
                                                  "the commands, for poles that require "
                                                  "signed commands.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Checklist against a live pole (link and versions, dimming sweep, sensors, camera,
    zones, MQTT round trip, clock); writes a JSON report and an HTML page with an
    anonymised snapshot showing the zones."""
    try:
        levels = tuple(int(v) for v in sweep.split(","))
        if not levels or not all(0 <= v <= 100 for v in levels):
            raise ValueError
    except ValueError:
        err.print(f"[red]--sweep[/] {sweep!r}: percent levels 0-100, e.g. 100,50,10,0")
        raise typer.Exit(2) from None
    from polectl.keyfile import broker_password

    password = broker_password(password_file)
    opts = Options(broker, ca_file, cert, key, username, password, levels, _size(frame_size),
                   snapshot_source, snapshot, link_timeout, sign_key)
    cfg = load_or_exit(config, f"Fix the keys above (`polectl config check {config}`).")
    names = ["link", "mqtt", "clock", "sensors", "lamp", "snapshot", "camera", "zones"]
    try:
        if as_json:
            rep, paths = commission(config, out_dir, opts)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                          console=err, transient=True) as prog:
                task = prog.add_task(f"commissioning {cfg.pole.id}", total=len(names))

                def on_step(name: str) -> None:
                    prog.update(task, completed=names.index(name),
                                description=f"{cfg.pole.id}: {name}")

                rep, paths = commission(config, out_dir, opts, on_step)
    except CommissionError as e:
        err.print(f"[red]commission {cfg.pole.id}[/]: {e}")
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps({**rep, "files": {k: str(v) for k, v in paths.items()}}))
    else:
        t = Table(title=f"pole {rep['pole_id']}: {rep['result'].upper()}")
        for col in ("check", "result", "what we saw", "fix"):
            t.add_column(col)
        colours = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
        for c in rep["checks"]:
            t.add_row(c["title"], f"[{colours[c['status']]}]{c['status']}[/]", c["summary"],
                      c["fix"])
        out.print(t)
        out.print(f"reports: {paths['json']} and {paths['html']}")
    if rep["result"] == "fail":
        raise typer.Exit(1)

