"""Supervisor on a real event loop with short timings."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from edge_controller.supervisor import Supervisor, TaskSpec

FAST = {"restart_min_s": 0.01, "restart_max_s": 0.02}


async def wait_until(pred: Callable[[], bool]) -> None:
    """Poll supervisor state (it has no event to wait on) for at most 2 s."""
    async with asyncio.timeout(2.0):
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


async def forever() -> None:
    await asyncio.Event().wait()


async def stop_and_join(sup: Supervisor, task: asyncio.Task[int], code: int = 0) -> int:
    sup.stop(code)
    return await asyncio.wait_for(task, 2.0)


async def test_a_failing_task_is_restarted_and_unhealthy_while_restarting() -> None:
    calls = 0
    seen: list[tuple[str, int, bool]] = []
    sup: Supervisor

    def snapshot() -> None:
        h = sup.health["worker"]
        seen.append((h.state, h.restarts, sup.healthy("worker")))

    async def worker() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            # Runs once the supervisor has handled this failure and started its backoff.
            asyncio.get_running_loop().call_soon(snapshot)
            raise RuntimeError(f"boom {calls}")
        await forever()

    failures: list[tuple[str, str]] = []
    sup = Supervisor([TaskSpec("worker", worker, "on_failure")], **FAST,
                     on_failure=lambda n, e: failures.append((n, e)))
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: calls == 4)
    assert seen == [("restarting", 1, False), ("restarting", 2, False), ("restarting", 3, False)]
    h = sup.health["worker"]
    assert (h.state, h.restarts) == ("running", 3)
    assert sup.healthy("worker")
    assert "RuntimeError: boom 3" in h.last_error
    assert failures == [("worker", f"RuntimeError: boom {i}") for i in (1, 2, 3)]
    assert sup.report() == {"worker": {"healthy": True, "restarts": 3, "state": "running"}}
    assert await stop_and_join(sup, task) == 0


async def test_restart_backoff_grows_from_restart_min_s() -> None:
    """The delays the supervisor asks for, recorded exactly (timing them instead failed
    on a loaded CI machine, where a 20 ms sleep took 66 ms)."""
    asked: list[float] = []

    async def recording_sleep(delay: float) -> None:
        asked.append(delay)
        await asyncio.sleep(0)

    async def worker() -> None:
        raise OSError("port gone")

    sup = Supervisor([TaskSpec("w", worker)], restart_min_s=0.02, restart_max_s=0.08,
                     max_restarts=5, sleep=recording_sleep)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: sup.health["w"].state == "failed")
    assert asked == [0.02, 0.04, 0.08, 0.08, 0.08]
    await stop_and_join(sup, task)


async def test_restarts_wait_at_least_their_backoff_on_a_real_clock() -> None:
    starts: list[float] = []

    async def worker() -> None:
        starts.append(asyncio.get_running_loop().time())
        raise OSError("port gone")

    sup = Supervisor([TaskSpec("w", worker)], restart_min_s=0.02, restart_max_s=0.08,
                     max_restarts=5)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: sup.health["w"].state == "failed")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # A sleep never ends early, however loaded the machine: only lower bounds are safe.
    assert len(gaps) == 5
    assert all(g >= want - 0.001 for g, want in zip(gaps, [0.02, 0.04, 0.08, 0.08, 0.08],
                                                     strict=True))
    await stop_and_join(sup, task)


async def test_policy_never_marks_the_task_failed() -> None:
    calls = 0

    async def worker() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad")

    sup = Supervisor([TaskSpec("once", worker, "never"), TaskSpec("other", forever)], **FAST)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: sup.health["once"].state == "failed")
    await asyncio.sleep(0.05)
    assert calls == 1
    assert sup.health["once"].restarts == 0
    assert not sup.healthy("once")
    assert sup.health["other"].state == "running"  # the others keep going
    assert await stop_and_join(sup, task) == 0


async def test_max_restarts_within_the_window_marks_failed() -> None:
    calls = 0

    async def worker() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("again")

    sup = Supervisor([TaskSpec("flaky", worker, "always")], **FAST, max_restarts=2,
                     restart_window_s=60.0)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: sup.health["flaky"].state == "failed")
    await asyncio.sleep(0.05)
    assert calls == 3  # the first run and two restarts
    assert sup.health["flaky"].restarts == 2
    assert not sup.healthy("flaky")
    assert sup.report()["flaky"] == {"healthy": False, "restarts": 2, "state": "failed"}
    await stop_and_join(sup, task)


async def test_failures_older_than_the_window_do_not_count() -> None:
    calls = 0

    async def worker() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("again")

    # Each restart waits 0.02 s, longer than the 0.01 s window: never two failures in it.
    sup = Supervisor([TaskSpec("w", worker)], restart_min_s=0.02, restart_max_s=0.02,
                     max_restarts=1, restart_window_s=0.01)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: calls >= 5)
    assert sup.health["w"].state != "failed"
    await stop_and_join(sup, task)


async def test_always_restarts_a_task_that_returns() -> None:
    calls = 0

    async def worker() -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            await forever()

    sup = Supervisor([TaskSpec("loop", worker, "always")], **FAST)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: calls == 3)
    assert sup.health["loop"].restarts == 2
    assert sup.healthy("loop")
    await stop_and_join(sup, task)


async def test_on_failure_task_that_returns_is_stopped_and_healthy() -> None:
    calls = 0

    async def worker() -> None:
        nonlocal calls
        calls += 1

    sup = Supervisor([TaskSpec("job", worker, "on_failure")], **FAST)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: calls == 1 and sup.health["job"].state == "stopped")
    await asyncio.sleep(0.05)
    assert calls == 1  # not restarted
    assert sup.health["job"].state == "stopped"
    assert sup.healthy("job") and sup.health["job"].restarts == 0
    await stop_and_join(sup, task)


async def test_task_that_recovered_and_then_finished_cleanly_is_healthy() -> None:
    calls = 0

    async def worker() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("transient")
        # second run: finishes normally (e.g. a video file that ended with on_end="stop")

    sup = Supervisor([TaskSpec("job", worker, "on_failure")], **FAST)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: calls == 2 and sup.health["job"].state == "stopped")
    # Its last run succeeded: an old error must not keep it unhealthy forever.
    assert sup.healthy("job")
    await stop_and_join(sup, task)


async def test_probe_decides_health_of_a_running_task() -> None:
    up = False
    sup = Supervisor([TaskSpec("link", forever, "always", probe=lambda: up),
                      TaskSpec("plain", forever, "always")], **FAST)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: sup.health["link"].state == "running")
    assert not sup.healthy("link") and sup.healthy("plain")
    up = True
    assert sup.healthy("link")
    assert sup.report()["link"]["healthy"] is True
    await stop_and_join(sup, task)


async def test_stop_runs_the_shutdown_hook_before_cancelling_tasks() -> None:
    order: list[str] = []

    async def worker() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            order.append("task cancelled")
            raise

    sup = Supervisor([TaskSpec("a", worker, "always"), TaskSpec("b", worker, "always")], **FAST)

    async def hook() -> None:
        order.append("hook start")
        await asyncio.sleep(0.02)
        assert sup.health["a"].state == "running"  # tasks still alive while the hook runs
        order.append("hook end")

    sup.set_shutdown_hook(hook)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: all(h.state == "running" for h in sup.health.values()))
    assert await stop_and_join(sup, task, 75) == 75
    assert order == ["hook start", "hook end", "task cancelled", "task cancelled"]
    assert {h.state for h in sup.health.values()} == {"stopped"}


async def test_first_stop_code_wins_and_a_failing_hook_does_not_block_shutdown() -> None:
    async def hook() -> None:
        raise RuntimeError("broker gone")

    sup = Supervisor([TaskSpec("a", forever)], **FAST)
    sup.set_shutdown_hook(hook)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: sup.health["a"].state == "running")
    sup.stop(3)
    sup.stop(5)
    assert await asyncio.wait_for(task, 2.0) == 3


def test_duplicate_task_names_raise() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([TaskSpec("link", forever), TaskSpec("uplink", forever),
                    TaskSpec("link", forever)])
