"""The hub around the adapters: restarts, robustness, health, what the lead's task gets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from edge_controller.peripherals import (
    Adapter,
    CommandOutcome,
    DeviceConfig,
    PeripheralHub,
    PeripheralsConfig,
    ScreenStatus,
    Sink,
)

from .conftest import running_hub


class Flaky(Adapter):
    kind = "led_screen"
    runs = 0

    async def run(self) -> None:
        Flaky.runs += 1
        if Flaky.runs < 3:
            raise RuntimeError(f"boom {Flaky.runs}")
        self.sink.reading(ScreenStatus(True, 50, "x", 30.0, None))
        await asyncio.Event().wait()

    async def show_text(self, text: str, seconds: float) -> CommandOutcome:
        return CommandOutcome("ok", "done", text)


def flaky_factory(dev: DeviceConfig, cfg: PeripheralsConfig, sink: Sink,
                  shared: dict[str, Any]) -> Adapter:
    return Flaky(dev, sink)


CFG = {"devices": [{"id": "screen-1", "kind": "led_screen", "lost_after_s": 5.0},
                   {"id": "off", "kind": "led_screen", "enabled": False}]}


async def test_a_failing_adapter_is_restarted_with_its_error_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    Flaky.runs = 0
    with caplog.at_level(logging.WARNING, logger="edge_controller.peripherals"):
        async with running_hub(CFG, factory=flaky_factory, restart_min_s=0.01) as (hub, cap):
            assert list(hub.adapters) == ["screen-1"]  # disabled devices do not run
            await cap.wait_status("screen-1", lambda p: p["screen"] is not None, within_s=3)
            assert Flaky.runs == 3
            assert (await hub.show_text(None, "hi", 1)).status == "ok"
            assert hub.snapshot()["screen-1"]["health"] == "degraded"  # errors are recent
    assert sum("adapter_error: RuntimeError: boom" in r.getMessage()
               for r in caplog.records) == 2


async def test_a_failing_publish_callback_does_not_stop_the_hub(
        caplog: pytest.LogCaptureFixture) -> None:
    Flaky.runs = 2
    calls: list[str] = []

    def publish(dev: str, payload: dict[str, Any], retain: bool) -> None:
        calls.append(dev)
        raise ValueError("uplink broken")

    hub = PeripheralHub(PeripheralsConfig.model_validate(CFG), publish, lambda n, d: None,
                        factory=flaky_factory, tick_s=0.01)
    task = asyncio.create_task(hub.run())
    await asyncio.sleep(0.1)
    assert calls and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "publishing screen-1 failed" in caplog.text


async def test_no_devices_idles_healthy() -> None:
    async with running_hub({}) as (hub, cap):
        await asyncio.sleep(0.05)
        assert hub.healthy and hub.snapshot() == {} and not cap.statuses
