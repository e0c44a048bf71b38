"""Exponential backoff, the one copy: reconnects, task restarts, device and camera reopens."""

from __future__ import annotations

import random
from collections.abc import Callable


def exponential(lo: float, hi: float, attempt: int) -> float:
    """The delay before retry `attempt` (0-based): lo doubled per attempt, at most hi."""
    return min(hi, lo * 2.0 ** min(attempt, 30))


def backoff_delays(lo: float, hi: float, rng: random.Random) -> Callable[[int], float]:
    """Jittered exponential backoff: attempt n waits U(lo/2, min(hi, lo * 2**n)).

    The jitter spreads a fleet's reconnects after a broker outage.
    """

    def delay(attempt: int) -> float:
        return rng.uniform(lo / 2, exponential(lo, hi, attempt))

    return delay
