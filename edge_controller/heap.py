"""Hand the C allocator's free memory back to the system now and then (glibc only).

glibc's malloc keeps the pages of freed chunks inside its heaps: a heap shrinks only
from its top, so a long-lived block above a hole keeps the hole resident. OpenCV,
onnxruntime and numpy allocate and free large buffers on several threads all the
time, and RSS then creeps by a little per hour although nothing leaks
(docs/operations.md, "Native memory"). `malloc_trim(0)` returns the free pages of
every arena (madvise, also in the middle of a heap) and costs milliseconds.

`trim_every` is the controller's maintenance task; elsewhere than glibc it does
nothing. POLE_MALLOC_TRIM_S in the environment sets its period (seconds, 0: off).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 60.0
ENV = "POLE_MALLOC_TRIM_S"

Trim = Callable[[], bool]


def glibc_trim() -> Trim | None:
    """`malloc_trim(0)` of the running glibc, or None with another C library."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (AttributeError, ValueError, OSError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def trim() -> bool:
        return bool(fn(0))

    return trim


def period_s(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The trimming period from POLE_MALLOC_TRIM_S (default 60 s; 0 or less: off)."""
    raw = environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_PERIOD_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %g", ENV, raw, DEFAULT_PERIOD_S)
        return DEFAULT_PERIOD_S


async def trim_every(interval_s: float, trim: Trim | None,
                     sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
    """Call `trim` every `interval_s` until cancelled; returns at once when there is
    nothing to call (not glibc) or the interval is 0."""
    if trim is None or interval_s <= 0:
        return
    while True:
        await sleep(interval_s)
        trim()
