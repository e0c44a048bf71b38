"""One asyncio TaskGroup owns every controller task.

Each task has a name (frozen in docs/architecture.md), a restart policy and a
health flag. A task that raises is restarted with backoff; one that fails too
often within a window is marked failed and left stopped (the pole keeps
reporting, the health shows it). `stop()` runs the shutdown hook (last state
upstream) and then cancels everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from edge_controller.backoff import exponential

log = logging.getLogger(__name__)

Policy = Literal["always", "on_failure", "never"]


@dataclass
class TaskSpec:
    name: str
    run: Callable[[], Awaitable[None]]
    restart: Policy = "on_failure"
    # Health probe: the task itself knows best (e.g. link up, camera frames flowing).
    probe: Callable[[], bool] | None = None


@dataclass
class TaskHealth:
    state: Literal["running", "restarting", "stopped", "failed"] = "stopped"
    restarts: int = 0
    last_error: str = ""
    failures: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        specs: list[TaskSpec],
        *,
        restart_min_s: float = 0.5,
        restart_max_s: float = 30.0,
        max_restarts: int = 20,
        restart_window_s: float = 600.0,
        on_failure: Callable[[str, str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate task names: {names}")
        self.specs = specs
        self.health = {s.name: TaskHealth() for s in specs}
        self.restart_min_s = restart_min_s
        self.restart_max_s = restart_max_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self._on_failure = on_failure
        self._sleep = sleep  # a test records the backoff it asks for instead of timing it
        self._stop = asyncio.Event()
        self._exit_code = 0
        self._shutdown_hook: Callable[[], Awaitable[None]] | None = None
        self.started = time.monotonic()

    def set_shutdown_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._shutdown_hook = hook

    def stop(self, exit_code: int = 0) -> None:
        if not self._stop.is_set():
            self._exit_code = exit_code
            self._stop.set()

    def healthy(self, name: str) -> bool:
        h = self.health[name]
        spec = next(s for s in self.specs if s.name == name)
        if h.state != "running":
            return h.state == "stopped" and spec.restart != "always" and not h.last_error
        return spec.probe() if spec.probe else True

    def report(self) -> dict[str, dict[str, object]]:
        return {
            s.name: {
                "healthy": self.healthy(s.name),
                "restarts": self.health[s.name].restarts,
                "state": self.health[s.name].state,
            }
            for s in self.specs
        }

    async def run(self) -> int:
        """Run until stop(); returns the exit code."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._keep(s), name=s.name) for s in self.specs]
            await self._stop.wait()
            if self._shutdown_hook is not None:
                try:
                    await asyncio.wait_for(self._shutdown_hook(), 10)
                except Exception:
                    log.exception("shutdown hook failed")
            for t in tasks:
                t.cancel()
            # Python 3.11's asyncio.wait_for returns its result and drops a cancellation
            # that lands just after the awaited thing completed (fixed in 3.12). A task
            # looping on wait_for (the detector on its frames, the uplink's sender) then
            # loops on, this TaskGroup waits for it forever and systemd SIGKILLs the pole
            # after TimeoutStopSec (the soak saw exit -9). Cancel again until all ended.
            pending = {t for t in tasks if not t.done()}
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.1)
                for t in pending:
                    log.warning("task %s ignored its cancellation; cancelling again",
                                t.get_name())
                    t.cancel()
        return self._exit_code

    async def _keep(self, spec: TaskSpec) -> None:
        h = self.health[spec.name]
        while True:
            h.state = "running"
            try:
                await spec.run()
            except asyncio.CancelledError:
                h.state = "stopped"
                raise
            except Exception as e:
                h.last_error = f"{type(e).__name__}: {e}"
                log.error("task %s failed: %s", spec.name, h.last_error,
                          exc_info=not isinstance(e, (OSError, ConnectionError)))
                if self._on_failure is not None:
                    with contextlib.suppress(Exception):
                        self._on_failure(spec.name, h.last_error)
                if spec.restart == "never":
                    h.state = "failed"
                    return
            else:
                h.last_error = ""  # this run ended cleanly: old failures are history
                if spec.restart != "always":
                    h.state = "stopped"
                    return
            now = time.monotonic()
            h.failures = [t for t in h.failures if now - t < self.restart_window_s] + [now]
            if len(h.failures) > self.max_restarts:
                h.state = "failed"
                log.error("task %s failed %d times in %.0f s; leaving it stopped",
                          spec.name, len(h.failures), self.restart_window_s)
                return
            h.state = "restarting"
            h.restarts += 1
            await self._sleep(exponential(self.restart_min_s, self.restart_max_s,
                                            len(h.failures) - 1))
