"""`polectl`: the installer's command line (typer + rich)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edge_controller.config import ConfigError, load

app = typer.Typer(help="Install, commission and watch smartpole poles.", no_args_is_help=True)
config_app = typer.Typer(help="Work with a pole's TOML config.", no_args_is_help=True)
app.add_typer(config_app, name="config")
# soft_wrap: a file path or key must never be broken across lines.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The pole's TOML config file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate a config file exactly as the controller does at start-up."""
    try:
        cfg = load(file)
    except ConfigError as e:
        if as_json:
            out.print_json(json.dumps({"ok": False, "file": str(file), "problems": [
                {"key": k, "reason": r} for k, r in e.problems]}))
        else:
            for k, r in e.problems:
                err.print(f"[red]{file}[/]: [bold]{k}[/]: {r}")
            err.print("Fix the keys above; docs/config.md lists every key with its default.")
        raise typer.Exit(2) from None
    if as_json:
        out.print_json(json.dumps({"ok": True, "file": str(file), "pole_id": cfg.pole.id}))
    else:
        out.print(f"[green]OK[/] {file}: pole {cfg.pole.id}, broker {cfg.mqtt.url}, "
                  f"link {cfg.link.port}")


@config_app.command("doc")
def config_doc() -> None:
    """Print the config reference (docs/config.md) generated from the models."""
    from polectl.configdoc import render

    print(render(), end="")


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
) -> None:
    """Run a whole simulated pole (firmware on the MicroPython unix port, broker, controller)
    on a recorded clip, with a live view of what it publishes; exits when the clip ends."""
    from edge_controller.sim.pole import run_sim

    code = run_sim(video=video, broker=broker, allow_apt=allow_apt, live=live, workdir=workdir)
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
