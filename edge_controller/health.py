"""The `health` task: one verdict for the whole controller, and systemd's watchdog.

Every `interval_s` it computes the controller's health from the supervisor's task
report and, when running under systemd with `WatchdogSec=` (NOTIFY_SOCKET set),
sends WATCHDOG=1. A wedged event loop stops the pings, so systemd restarts the
process; a task the supervisor gave up on (state `failed`) also stops them, since
only a restart can bring it back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send one sd_notify datagram; False when not under systemd (no NOTIFY_SOCKET)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("sd_notify failed: %s", e)
        return False


class Health:
    def __init__(self, report: Callable[[], dict[str, dict[str, object]]],
                 interval_s: float = 5.0) -> None:
        self.report = report
        self.interval_s = interval_s
        self.healthy = True
        self.unhealthy: list[str] = []
        self.pings = 0

    def check(self) -> bool:
        tasks = self.report()
        self.unhealthy = sorted(n for n, t in tasks.items() if not t["healthy"])
        failed = [n for n, t in tasks.items() if t["state"] == "failed"]
        ok = not failed
        if ok != self.healthy:
            log.warning("health: %s (unhealthy tasks: %s)", "ok" if ok else "FAILED",
                        ", ".join(self.unhealthy) or "none")
        self.healthy = ok
        return ok

    async def run(self) -> None:
        sd_notify("READY=1")
        while True:
            if self.check() and sd_notify("WATCHDOG=1"):
                self.pings += 1
            await asyncio.sleep(self.interval_s)
