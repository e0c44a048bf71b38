"""What the pole itself reports: its birth certificate and the core telemetry sections."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from edge_controller.api.messages import Birth, Firmware
from edge_controller.api.version import API_VERSION
from edge_controller.clock import clock_status, utc_iso
from edge_controller.link.client import LinkClient
from edge_controller.pole_state import PoleState
from edge_controller.supervisor import Supervisor
from edge_controller.uplink.dispatcher import CommandDispatcher
from edge_controller.uplink.mqtt import Uplink
from edge_controller.version import __version__


class ProcessStats:
    """CPU and memory of this process, from os.times() and /proc."""

    def __init__(self) -> None:
        self._last_cpu = self._cpu()
        self._last_wall = time.monotonic()
        self.started = self._last_wall

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    def sample(self) -> dict[str, float]:
        cpu, wall = self._cpu(), time.monotonic()
        pct = 100.0 * (cpu - self._last_cpu) / max(wall - self._last_wall, 1e-6)
        self._last_cpu, self._last_wall = cpu, wall
        return {"uptime_s": round(wall - self.started, 3), "cpu_percent": round(pct, 2),
                "rss_mb": round(_rss_bytes() / 2**20, 2)}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class BirthBuilder:
    """The retained birth message; `extra_caps` are what the configured features add."""

    def __init__(self, link: LinkClient, uplink: Uplink, dispatcher: CommandDispatcher,
                 config_version: str) -> None:
        self.link, self.uplink, self.dispatcher = link, uplink, dispatcher
        self.config_version = config_version
        self.boot_id = uuid.uuid4().hex
        self.started_at = utc_iso()
        self.camera = False
        self.extra_caps: list[str] = []  # since 1.6.0: dimming, peripherals, screen

    def __call__(self) -> dict[str, Any]:
        fw = self.link.session.firmware
        caps = fw.capabilities() if fw.version else []
        if self.camera:
            caps.append("camera")
        if self.uplink.protocol == "5":
            caps.append("mqtt5")
        return Birth(
            **self.uplink.header(), boot_id=self.boot_id, started_at=self.started_at,
            controller_version=__version__,
            firmware=(Firmware(version=fw.version, board_id=fw.board_id,
                               protocol=fw.protocol) if fw.version else None),
            config_version=self.config_version, models={},
            capabilities=caps + self.extra_caps, api_version=API_VERSION,
            commands=self.dispatcher.commands,
            command_signatures=self.dispatcher.policy.mode,  # since 1.8.0
        ).payload()


def core_telemetry(link: LinkClient, port: str, state: PoleState, uplink: Uplink,
                   dispatcher: CommandDispatcher, supervisor: Callable[[], Supervisor],
                   ) -> Callable[[], dict[str, Any]]:
    """The contributor of the sections the core owns (clock, lamp, link, process, mqtt...)."""
    proc = ProcessStats()

    def sections() -> dict[str, Any]:
        s = link.session
        return {
            "clock": clock_status(),
            "lamp": state.lamp,
            "sensors": state.sensors,
            "digital_inputs": state.digital_inputs,
            "link": {"up": s.up, "port": port,
                     "rtt_ms": None if s.last_rtt_s is None else round(s.last_rtt_s * 1000, 3),
                     **s.link_counters(), "firmware_stats": state.firmware_stats},
            "process": {**proc.sample(), "tasks": supervisor().report()},
            "mqtt": {"protocol": uplink.protocol, "reconnects": uplink.reconnects,
                     "commands_received": uplink.commands_received,
                     "commands_rejected": dispatcher.rejected,
                     "queued": uplink.queued, "dropped": uplink.dropped,
                     "refused": uplink.refused},
        }

    return sections


CORE_SECTIONS = ("clock", "lamp", "sensors", "digital_inputs", "link", "process", "mqtt")
