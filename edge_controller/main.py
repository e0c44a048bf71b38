"""`pole-controller`: the edge controller daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from edge_controller.config import Config, ConfigError, load
from edge_controller.version import __version__


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pole-controller", description=__doc__)
    p.add_argument("--config", "-c", help="pole TOML config (defaults apply when omitted)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--version", action="version", version=f"pole-controller {__version__}")
    return p.parse_args(argv)


async def _run(cfg: Config, path: str | None) -> int:
    from edge_controller.app import Controller  # heavy imports after config is valid

    ctl = Controller(cfg, path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctl.supervisor.stop, 0)
    return await ctl.run()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(args.config) if args.config else Config()
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    return asyncio.run(_run(cfg, args.config))


if __name__ == "__main__":
    sys.exit(main())
