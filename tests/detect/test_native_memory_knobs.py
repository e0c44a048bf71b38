"""The controller's heap maintenance (edge_controller/heap.py): periodic malloc_trim."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest

from edge_controller import heap


class Stop(Exception):
    pass


def fake_sleep(times: int, slept: list[float]) -> Callable[[float], Awaitable[None]]:
    """A sleep that records its argument and raises Stop on call number `times` + 1."""

    async def sleep(s: float) -> None:
        if len(slept) == times:
            raise Stop
        slept.append(s)

    return sleep


def test_trims_once_per_period_until_stopped() -> None:
    slept: list[float] = []
    calls: list[int] = []

    def trim() -> bool:
        calls.append(1)
        return True

    with pytest.raises(Stop):
        asyncio.run(heap.trim_every(30.0, trim, sleep=fake_sleep(3, slept)))
    assert slept == [30.0, 30.0, 30.0]
    assert len(calls) == 3


@pytest.mark.parametrize("interval, trim", [(0.0, lambda: True), (60.0, None)])
def test_nothing_to_do_returns_at_once(interval: float, trim: heap.Trim | None) -> None:
    slept: list[float] = []
    asyncio.run(heap.trim_every(interval, trim, sleep=fake_sleep(5, slept)))
    assert slept == []


@pytest.mark.parametrize("raw, want", [("", 60.0), ("120", 120.0), ("0", 0.0), ("-5", 0.0),
                                       ("soon", 60.0)])
def test_period_from_the_environment(raw: str, want: float) -> None:
    assert heap.period_s({heap.ENV: raw} if raw else {}) == want


def test_glibc_trim_runs_where_there_is_glibc() -> None:
    trim = heap.glibc_trim()
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        glibc = False
    if not glibc:
        assert trim is None
        return
    assert trim is not None
    trim()  # returns whether memory went back; either is fine
