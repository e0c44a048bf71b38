"""UTC timestamps for every report, and whether the system clock is trustworthy."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from datetime import UTC, datetime

_STA_UNSYNC = 0x0040  # kernel: clock not synchronised (linux/timex.h)
_TIME_ERROR = 5


def utc_iso(t: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds and 'Z', e.g. 2026-11-28T23:10:07.123Z."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (x86_64/aarch64 glibc): we read `status`
    # only, but the kernel writes the whole struct, so size it generously.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def clock_status() -> dict[str, object]:
    """Ask the kernel (adjtimex, read-only) whether NTP/PTP has synchronised the clock.

    This is what chrony, ntpd and systemd-timesyncd all report through; it needs
    no daemon-specific client. Where the call is unavailable we say so rather
    than claim a synchronised clock.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        rc = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return {"synced": False, "source": "unavailable"}
    synced = rc >= 0 and rc != _TIME_ERROR and not (tx.status & _STA_UNSYNC)
    return {"synced": bool(synced), "source": "adjtimex"}
