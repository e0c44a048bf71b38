"""`python -m polesim.peripherals`: run the demo peers until interrupted and print
the [peripherals] config that points a controller at them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from polesim.peripherals.demo import run_demo_peers
from polesim.tomlwrite import render_toml


async def _main() -> None:
    peers = await run_demo_peers()
    print(render_toml(peers.overrides()), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await peers.aclose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())


if __name__ == "__main__":
    main()
