"""Commands run as tasks, concurrently, but not without limit: a burst of commands that
all wait (lamp fades) keeps at most COMMANDS_IN_FLIGHT running; the rest wait their turn
and all of them run. Real mosquitto, real paho publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from polesim.broker import Broker

from edge_controller.config import MqttConfig
from edge_controller.uplink import mqtt as uplink_mqtt
from edge_controller.uplink.mqtt import Uplink
from edge_controller.uplink.topics import Topics
from tests.support import mosquitto


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from mosquitto()


async def test_a_burst_of_slow_commands_runs_at_most_the_bound_at_once(broker: Broker) -> None:
    n = uplink_mqtt.COMMANDS_IN_FLIGHT * 3
    release = asyncio.Event()
    running = 0
    peak = 0
    done: list[bytes] = []

    async def slow(payload: bytes) -> None:
        nonlocal running, peak
        if payload == b"probe":
            return
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1
        done.append(payload)

    topics = Topics("smartpole/v1", "pole-burst")
    up = Uplink(MqttConfig(url=broker.url, reconnect_min_s=0.2), topics, dict, slow)
    task = asyncio.create_task(up.run())
    host, port = broker.url.split("://")[1].split(":")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(host, int(port))
    pub.loop_start()
    try:
        async with asyncio.timeout(20):
            while not up.connected:  # noqa: ASYNC110 - the uplink has no event for it
                await asyncio.sleep(0.02)
            while up.commands_received == 0:  # its subscription is in place
                pub.publish(topics.command, "probe", qos=1)
                await asyncio.sleep(0.1)
            probes = up.commands_received
            for i in range(n):
                pub.publish(topics.command, f'{{"id": "c{i}"}}', qos=1)
            while up.commands_received < probes + uplink_mqtt.COMMANDS_IN_FLIGHT:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # the others have had time to arrive
            assert running == peak == uplink_mqtt.COMMANDS_IN_FLIGHT
            release.set()
            while len(done) < n:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert peak == uplink_mqtt.COMMANDS_IN_FLIGHT
        assert sorted(done) == sorted(f'{{"id": "c{i}"}}'.encode() for i in range(n))
        assert not up._command_tasks  # finished tasks are not kept
    finally:
        pub.loop_stop()
        pub.disconnect()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
