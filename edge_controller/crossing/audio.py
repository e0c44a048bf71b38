"""Audio warnings: when to play (sans-I/O policy) and playing through ALSA (adapter).

Policy: per-zone cooldown, quiet hours and a volume schedule in the pole's local
time. Player: switch the amplifier on through the firmware, scale the clip to
the scheduled volume, pipe it to `aplay -D DEVICE`, record what played and when.
In CI the device is ALSA's `null`, so the real path runs without a sound card.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from edge_controller import resources

log = logging.getLogger(__name__)
DEFAULT_CLIPS = tuple(resources.path(c) for c in resources.WARNING_CLIPS)


def parse_hhmm(s: str) -> dtime:
    h, m = s.split(":")
    return dtime(int(h), int(m))


def in_window(now: dtime, start: dtime, end: dtime) -> bool:
    """[start, end) in local time, wrapping past midnight when end <= start."""
    if start == end:
        return False
    if start < end:
        return start <= now < end
    return now >= start or now < end


@dataclass(frozen=True)
class Play:
    zone: str
    clips: tuple[Path, ...]
    volume: int  # percent


@dataclass(frozen=True)
class Skip:
    zone: str
    reason: str  # "cooldown" | "quiet_hours" | "muted"


@dataclass
class WarningPolicy:
    timezone: str = "UTC"
    cooldown_s: float = 10.0
    quiet_hours: tuple[str, str] | None = None  # ("22:00", "06:00")
    volume_schedule: tuple[tuple[str, int], ...] = (("00:00", 70),)  # from HH:MM, percent
    zone_clips: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)

    def volume_at(self, local: dtime) -> int:
        entries = sorted((parse_hhmm(t), v) for t, v in self.volume_schedule)
        vol = entries[-1][1]  # before the first entry of the day: last one of yesterday
        for start, v in entries:
            if local >= start:
                vol = v
        return vol

    def decide(self, zone: str, t: float) -> Play | Skip:
        """`t` epoch seconds. Records the play so the cooldown starts now."""
        last = self._last.get(zone)
        if last is not None and t - last < self.cooldown_s:
            return Skip(zone, "cooldown")
        local = datetime.fromtimestamp(t, ZoneInfo(self.timezone)).time()
        if self.quiet_hours and in_window(local, *map(parse_hhmm, self.quiet_hours)):
            return Skip(zone, "quiet_hours")
        vol = self.volume_at(local)
        if vol <= 0:
            return Skip(zone, "muted")
        self._last[zone] = t
        return Play(zone, self.zone_clips.get(zone, DEFAULT_CLIPS), vol)


def scaled_wav(path: Path, volume: int) -> bytes:
    """The clip as WAV bytes with samples scaled to `volume` percent."""
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        frames = w.readframes(w.getnframes())
    if params.sampwidth != 2:
        raise ValueError(f"{path}: only 16-bit PCM clips are supported")
    pcm = np.frombuffer(frames, dtype="<i2").astype(np.float32) * (volume / 100.0)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setparams(params)
        w.writeframes(np.clip(pcm, -32768, 32767).astype("<i2").tobytes())
    return out.getvalue()


@dataclass
class Played:
    zone: str
    clip: str
    volume: int
    requested: float  # time.time() when the warning was decided
    started: float  # time.time() when aplay was running with the data
    ended: float
    ok: bool
    detail: str = ""


class AlsaPlayer:
    """Plays clips through `aplay`, one at a time, with the amplifier on around playback."""

    def __init__(self, device: str = "default",
                 amp: Callable[[bool], Awaitable[bool]] | None = None,
                 amp_settle_s: float = 0.05, history_size: int = 200) -> None:
        self.device = device
        self._amp = amp
        self.amp_settle_s = amp_settle_s
        self.history: list[Played] = []
        self.history_size = history_size
        self._lock = asyncio.Lock()
        self.on_started: Callable[[Played], None] | None = None

    async def play(self, p: Play, requested: float | None = None) -> list[Played]:
        requested = time.time() if requested is None else requested
        out: list[Played] = []
        async with self._lock:
            amp_ok = True
            if self._amp is not None:
                amp_ok = await self._amp(True)
                if not amp_ok:
                    log.warning("audio: amplifier did not confirm; playing anyway")
                await asyncio.sleep(self.amp_settle_s)  # amplifier pop settles
            try:
                for clip in p.clips:
                    out.append(await self._one(p, clip, requested))
            finally:
                if self._amp is not None:
                    with contextlib.suppress(Exception):
                        await self._amp(False)
        return out

    async def _one(self, p: Play, clip: Path, requested: float) -> Played:
        data = await asyncio.to_thread(scaled_wav, clip, p.volume)
        proc = await asyncio.create_subprocess_exec(
            "aplay", "-q", "-D", self.device, "-",
            stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        started = time.time()
        rec = Played(p.zone, clip.name, p.volume, requested, started, started, False)
        if self.on_started is not None:
            self.on_started(rec)
        _, err = await proc.communicate(data)
        rec.ended = time.time()
        rec.ok = proc.returncode == 0
        rec.detail = err.decode(errors="replace").strip()[:200]
        if not rec.ok:
            log.error("audio: aplay failed (%s): %s", proc.returncode, rec.detail)
        self.history.append(rec)
        del self.history[:-self.history_size]
        return rec
