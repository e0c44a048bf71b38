"""Runs `pole-controller` in this process with in-process probes, for the soak
(bench/soak_controller.py starts this instead of `python -m edge_controller.main`).

Every SOAK_PROBE_INTERVAL_S it appends a JSON line to SOAK_PROBE_OUT with the
number of asyncio tasks, the event loop's lag (how late a sleep wakes up), the
bytes Python's allocator holds (tracemalloc) and glibc's malloc figures (mallinfo2:
bytes in use, and bytes free but kept inside the heaps, i.e. fragmentation), Python's
object arenas (pymalloc) and tracemalloc's own memory. After
SOAK_WARMUP_S it takes a tracemalloc snapshot; at exit it writes the 15 allocation
sites that grew most since then. The controller itself runs unchanged.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Coroutine
from typing import Any

OUT = os.environ["SOAK_PROBE_OUT"]
INTERVAL_S = float(os.environ.get("SOAK_PROBE_INTERVAL_S", "5"))
WARMUP_S = float(os.environ.get("SOAK_WARMUP_S", "60"))
# Off, the controller runs on Python's own allocator as on a pole: tracemalloc costs
# tens of MB and its tables grow with what it traces, and while it runs CPython's
# allocator statistics (`_pymalloc`) print nothing.
TRACE = os.environ.get("SOAK_TRACEMALLOC", "1") != "0"
_run = asyncio.run
# The baseline snapshot goes to a file: held in memory it is tens of MB of Python
# objects, which showed up in RSS as a "warm-up step" of 50-63 MB right after every
# soak's warm-up (the soak measuring itself).
_base: list[str] = []
_trackers: list[Any] = []  # the controller's trackers, to count the tracks they made
_pipelines: list[Any] = []  # and its detection pipelines, to count analysed frames


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo() -> dict[str, float]:
    """glibc's heap, all arenas (MB): in use by malloc (brk/heaps and mmapped blocks)
    and held free inside the heaps. Empty elsewhere than glibc >= 2.33."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    m = fn()
    mb = 1024 * 1024
    return {"malloc_used_mb": round((m.uordblks + m.hblkhd) / mb, 3),
            "malloc_free_mb": round(m.fordblks / mb, 3),
            "malloc_heap_mb": round((m.arena + m.hblkhd) / mb, 3),
            "malloc_mmapped_mb": round(m.hblkhd / mb, 3)}


def _pymalloc() -> dict[str, float]:
    """Python's small-object allocator (CPython's `sys._debugmallocstats`, which only
    prints, to the C stderr): its arenas (1 MiB mappings, anonymous memory outside glibc's
    heaps) in use now, and the bytes in their allocated blocks. Arenas far above what the
    blocks need are fragmentation: a few live objects keep an arena mapped. Empty while
    tracemalloc runs (its hooks replace the allocator the statistics read)."""
    if not hasattr(sys, "_debugmallocstats"):
        return {}
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile("w+") as fh:
            os.dup2(fh.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
            fh.seek(0)
            text = fh.read()
    finally:
        os.close(saved)
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key = key.strip()
        value = value.strip().replace(",", "")
        if key == "# arenas allocated current" and value.isdigit():
            out["pymalloc_arenas"] = int(value)
        elif key == "# bytes in allocated blocks" and value.isdigit():
            out["pymalloc_blocks_mb"] = round(int(value) / (1024 * 1024), 3)
    return out


def _register(cls: Any, into: list[Any]) -> None:
    init = cls.__init__

    def registering(self: Any, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        into.append(self)

    cls.__init__ = registering


def _watch() -> None:
    from edge_controller.crossing.tracker import Tracker
    from edge_controller.detect.pipeline import DetectionPipeline

    _register(Tracker, _trackers)
    _register(DetectionPipeline, _pipelines)


def _write(rec: dict[str, Any]) -> None:
    with open(OUT, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _snapshot() -> tracemalloc.Snapshot:
    # Unfiltered: filter_traces runs fnmatch in Python on every trace, which took over
    # 20 s at the end of a soak on a loaded 2-core machine, and the driver SIGKILLed the
    # controller before the final diff was written. tracemalloc's own lines (the baseline
    # snapshot itself) are dropped from the diff's rows instead (`_final`).
    gc.collect()
    return tracemalloc.take_snapshot()


async def _sampler() -> None:
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    while True:
        before = loop.time()
        await asyncio.sleep(INTERVAL_S)
        lag = loop.time() - before - INTERVAL_S
        traced = ({"traced_bytes": tracemalloc.get_traced_memory()[0],
                   "tracemalloc_self_mb": round(tracemalloc.get_tracemalloc_memory() / 2**20, 3)}
                  if TRACE else _pymalloc())
        _write({"t": round(time.monotonic() - t0, 2), "tasks": len(asyncio.all_tasks()) - 1,
                "loop_lag_ms": round(lag * 1000, 2), **traced,
                "tracks_created": sum(tr._next_id - 1 for tr in _trackers),
                "tracks_held": sum(len(tr.ids) for tr in _trackers),
                "frames": sum(p.stats.frames_processed for p in _pipelines),
                **_mallinfo()})
        if TRACE and not _base and time.monotonic() - t0 >= WARMUP_S:
            path = OUT + ".baseline"
            snap = _snapshot()
            snap.dump(path)
            del snap
            gc.collect()
            _base.append(path)
            _write({"event": "baseline", "t": round(time.monotonic() - t0, 2)})


def _final() -> None:
    if not _base:
        return
    t0 = time.monotonic()
    base = tracemalloc.Snapshot.load(_base[0])
    diff = [s for s in _snapshot().compare_to(base, "lineno")
            if s.traceback[0].filename != tracemalloc.__file__]
    top = [{"site": str(s.traceback[0]), "size_diff": s.size_diff, "count_diff": s.count_diff,
            "size": s.size} for s in diff[:15]]
    _write({"event": "final", "top": top, "took_s": round(time.monotonic() - t0, 2)})


def _probed_run(main: Coroutine[Any, Any, int], **kw: Any) -> int:
    async def wrapped() -> int:
        probe = asyncio.create_task(_sampler(), name="soak-probe")
        t0 = time.monotonic()
        try:
            return await main
        finally:
            # When the controller's run ended, apart from the snapshot below (seconds
            # for a large heap), so a slow stop can be told from a slow probe.
            _write({"event": "stopped", "t": round(time.monotonic() - t0, 2)})
            probe.cancel()
            _final()

    return _run(wrapped(), **kw)


if __name__ == "__main__":
    if TRACE:
        tracemalloc.start(1)  # one frame per trace: the allocation site, at modest overhead
    asyncio.run = _probed_run  # type: ignore[assignment]
    _watch()
    from edge_controller.main import main

    sys.exit(main(sys.argv[1:]))
