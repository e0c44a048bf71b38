"""`pole-controller`: the edge controller daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from edge_controller import heap
from edge_controller.config import Config, ConfigError, load
from edge_controller.preflight import check_files
from edge_controller.version import __version__


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pole-controller", description=__doc__)
    p.add_argument("--config", "-c", help="pole TOML config (defaults apply when omitted)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--check-config", action="store_true",
                   help="validate the config's keys and values as at start-up, print a verdict "
                   "and exit (0 valid, 2 not); the files it names are checked at start-up")
    p.add_argument("--version", action="version", version=f"pole-controller {__version__}")
    return p.parse_args(argv)


def _config_error(e: ConfigError) -> int:
    print(f"config error:\n{e}", file=sys.stderr)
    return 2


async def _run(cfg: Config, path: str | None) -> int:
    from edge_controller.app import Controller  # heavy imports after config is valid

    ctl = Controller(cfg, path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctl.supervisor.stop, 0)
    # Maintenance beside the supervised tasks: give glibc's free pages back now and
    # then, or RSS creeps (docs/operations.md, "Native memory"). A no-op elsewhere.
    trimmer = asyncio.create_task(heap.trim_every(heap.period_s(), heap.glibc_trim()),
                                  name="malloc-trim")
    try:
        return await ctl.run()
    finally:
        trimmer.cancel()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source = args.config or "(defaults)"
    try:
        cfg = load(args.config) if args.config else Config()
    except ConfigError as e:
        return _config_error(e)
    if args.check_config:
        # Keys and values only: an installer may check a config staged under another
        # root, where the paths it names do not exist yet.
        print(f"OK {source}: pole {cfg.pole.id}, broker {cfg.mqtt.url}, link {cfg.link.port}")
        return 0
    problems = check_files(cfg)
    if problems:
        return _config_error(ConfigError(source, problems))
    return asyncio.run(_run(cfg, args.config))


def entry() -> None:
    """The `pole-controller` command: `main`, then leave without tearing down the
    interpreter. A camera capture or an inference may still be inside OpenCV or
    onnxruntime in a worker thread; finalising Python under them sometimes aborted the
    process ("terminate called without an active exception", exit -6 after a clean
    SIGTERM). Everything that matters is written by now: the last telemetry and the
    offline state are on the broker, the queue is committed, the logs are flushed here."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
