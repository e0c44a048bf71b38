"""The health task talks to systemd's notify socket like systemd expects."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from edge_controller.health import Health, sd_notify


def test_sd_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False


def test_ready_then_watchdog_pings_stop_when_a_task_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    state = {"link": {"healthy": True, "state": "running", "restarts": 0}}
    h = Health(lambda: state, interval_s=0.05)

    async def go() -> None:
        task = asyncio.create_task(h.run())
        await asyncio.sleep(0.2)
        state["link"] = {"healthy": False, "state": "failed", "restarts": 20}
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(go())
    got = []
    srv.settimeout(0.2)
    try:
        while True:
            got.append(srv.recv(100).decode())
    except TimeoutError:
        pass
    srv.close()
    assert got[0] == "READY=1" and "WATCHDOG=1" in got
    assert not h.healthy and h.unhealthy == ["link"]
    assert got.count("WATCHDOG=1") == h.pings
