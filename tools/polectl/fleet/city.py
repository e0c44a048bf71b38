"""`run_fleet`: connect N simulated poles, run them for a while, shut them down cleanly,
and report what each sent and what the broker acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polectl.fleet.mqtt import MqttProtocolError
from polectl.fleet.pole import FleetConfig, SimFleetPole


@dataclass
class FleetReport:
    poles: int
    connected: int
    seconds: float
    per_pole: dict[str, dict[str, Any]]
    connect_s: float
    connect_errors: list[str]
    total_s: float = 0.0  # from the first connect on (seconds: from the last one)

    def totals(self) -> dict[str, Any]:
        sent: Counter[str] = Counter()
        acked: Counter[str] = Counter()
        failed = 0
        for p in self.per_pole.values():
            sent.update(p["sent"])
            acked.update(p["acked"])
            failed += p["failed"]
        n = sum(sent.values())
        return {"sent": dict(sent), "acked": dict(acked), "failed": failed,
                "messages": n, "msgs_per_s": round(n / (self.total_s or self.seconds), 1)
                if (self.total_s or self.seconds) else 0}

    def as_dict(self) -> dict[str, Any]:
        return {"poles": self.poles, "connected": self.connected,
                "seconds": round(self.seconds, 2), "connect_s": round(self.connect_s, 2),
                "connect_errors": self.connect_errors[:20], **self.totals(),
                "per_pole": self.per_pole}


# Long: connect, run and shut down share the fleet's tasks, counters and progress callbacks.
async def run_fleet(cfg: FleetConfig, stop: asyncio.Event | None = None,
                    on_progress: Callable[[str, float, float], None] | None = None,
                    ready: Callable[[list[SimFleetPole]], None] | None = None) -> FleetReport:
    """Connect the fleet, run it for `duration_s` (0: until `stop`), shut down cleanly."""
    stop = stop or asyncio.Event()
    rng = random.Random(cfg.seed)
    poles = [SimFleetPole(i, cfg, random.Random(rng.getrandbits(64))) for i in range(cfg.poles)]
    sem = asyncio.Semaphore(cfg.connect_concurrency)
    errors: list[str] = []
    done = 0
    t_conn = time.monotonic()
    loop = asyncio.get_running_loop()
    t_start = loop.time()  # scripted steps count from here, for every pole
    tasks: list[asyncio.Task[None]] = []

    async def up(p: SimFleetPole) -> None:
        nonlocal done
        async with sem:
            for attempt in range(5):
                try:
                    await p.connect(clean_start=True)
                    break
                except (ConnectionError, OSError, TimeoutError, MqttProtocolError) as e:
                    if attempt == 4:
                        errors.append(f"{p.pole_id}: {e}")
                    await asyncio.sleep(0.2 * (attempt + 1))
        if p.client is not None:
            # Live at once: a pole that is connected reports and answers commands while
            # the rest of the fleet is still connecting.
            tasks.append(asyncio.create_task(p.run(loop.time(), stop, t_start)))
        done += 1
        if on_progress is not None:
            on_progress("connect", done, cfg.poles)

    await asyncio.gather(*(up(p) for p in poles))
    connect_s = time.monotonic() - t_conn
    live = [p for p in poles if p.client is not None]
    if ready is not None:
        ready(live)
    t0 = loop.time()
    if cfg.duration_s > 0:
        loop.call_later(cfg.duration_s, stop.set)
    if on_progress is not None:
        async def tick() -> None:
            while not stop.is_set():
                on_progress("run", min(loop.time() - t0, cfg.duration_s or math.inf),
                            cfg.duration_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        ticker = asyncio.create_task(tick())
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    seconds = loop.time() - t0
    total_s = loop.time() - t_start
    if on_progress is not None:
        ticker.cancel()
    await asyncio.gather(*(p.shutdown() for p in live), return_exceptions=True)
    per_pole = {p.pole_id: {"sent": dict(p.counts.sent), "acked": dict(p.counts.acked),
                            "failed": p.counts.failed, "commands": p.counts.commands,
                            "commands_rejected": p.counts.commands_rejected,
                            "outages": p.counts.outages, "reconnects": p.counts.reconnects}
                for p in poles}
    return FleetReport(cfg.poles, len(live), seconds, per_pole, connect_s, errors, total_s)

