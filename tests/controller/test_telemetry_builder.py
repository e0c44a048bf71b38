"""The telemetry message is assembled from what each part contributes, and validated."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edge_controller.uplink.telemetry import SECTIONS, TelemetryBuilder

TS = "2026-11-28T23:10:07.123Z"
CORE: dict[str, Any] = {
    "clock": {"synced": True, "source": "adjtimex"},
    "lamp": None, "sensors": None, "digital_inputs": None,
    "link": {"up": False, "port": "/dev/x", "rtt_ms": None, "tx_frames": 0, "rx_frames": 0,
             "crc_errors": 0, "framing_errors": 0, "oversize": 0, "resyncs": 0,
             "naks_received": 0, "retries": 0, "timeouts": 0, "firmware_stats": None},
    "process": {"uptime_s": 1.5, "cpu_percent": 2, "rss_mb": 40.1,
                "tasks": {"link": {"healthy": True, "restarts": 0, "state": "running"}}},
    "mqtt": {"protocol": "5", "reconnects": 0, "commands_received": 0,
             "commands_rejected": 0, "queued": 0, "dropped": 0, "refused": 0},
}


def core() -> dict[str, Any]:
    return dict(CORE)


def test_sections_off_are_null_and_order_follows_the_schema() -> None:
    b = TelemetryBuilder()
    b.contribute(tuple(CORE), core)
    b.contribute(("crossing",), lambda: {"crossing": {"tracks": 3}})
    p = b.build("pole-0042", TS).payload()
    assert list(p) == ["v", "pole_id", "ts", *SECTIONS]
    assert p["crossing"] == {"tracks": 3} and p["camera"] is None and p["dimming"] is None
    assert p["process"]["cpu_percent"] == 2 and isinstance(p["process"]["cpu_percent"], int)
    assert "seq" not in p


def test_a_missing_core_section_is_a_bug() -> None:
    b = TelemetryBuilder()
    b.contribute(("clock",), lambda: {"clock": CORE["clock"]})
    with pytest.raises(ValidationError):
        b.build("pole-0042", TS)


def test_contributors_own_their_sections() -> None:
    b = TelemetryBuilder()
    b.contribute(("camera",), lambda: {"camera": None})
    with pytest.raises(ValueError, match="already"):
        b.contribute(("camera",), lambda: {"camera": None})
    with pytest.raises(ValueError, match="unknown"):
        b.contribute(("weather",), lambda: {"weather": 1})
    b.contribute(("crossing",), lambda: {"crossing": None, "dimming": None})
    with pytest.raises(ValueError, match="owns"):
        b.sections()
