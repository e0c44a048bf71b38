"""Commands run as tasks, concurrently, held by the uplink while they run (the event loop
keeps only weak references: an unheld task can be collected mid-command) and let go when
they end. The receive loop never waits behind slow commands: a signal-feed message that
arrives during a burst of lamp fades is handled at once. Real mosquitto, real paho
publisher."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from polesim.broker import Broker

from edge_controller.config import MqttConfig
from edge_controller.uplink.mqtt import Uplink
from edge_controller.uplink.topics import Topics
from tests.support import mosquitto


@pytest.fixture
def broker() -> Iterator[Broker]:
    yield from mosquitto()


async def test_slow_commands_are_held_while_they_run_and_never_block_the_feed(
        broker: Broker) -> None:
    n = 200
    release = asyncio.Event()
    running = 0
    done: list[bytes] = []
    feed: list[bytes] = []

    async def slow(payload: bytes) -> None:
        nonlocal running
        if payload == b"probe":
            return
        running += 1
        try:
            await release.wait()
        finally:
            running -= 1
        done.append(payload)

    topics = Topics("smartpole/v1", "pole-burst")
    up = Uplink(MqttConfig(url=broker.url, reconnect_min_s=0.2), topics, dict, slow)
    up.subscribe("city/signal/x-1", feed.append)
    task = asyncio.create_task(up.run())
    host, port = broker.url.split("://")[1].split(":")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(host, int(port))
    pub.loop_start()
    try:
        async with asyncio.timeout(20):
            while up.commands_received == 0:  # its subscriptions are in place
                pub.publish(topics.command, "probe", qos=1)
                await asyncio.sleep(0.1)
            probes = up.commands_received
            for i in range(n):
                pub.publish(topics.command, f'{{"id": "c{i}"}}', qos=1)
            while running < n:  # noqa: ASYNC110 - polls a counter
                await asyncio.sleep(0.02)
            gc.collect()  # a task held only weakly would be gone now
            assert len(up._command_tasks) == n
            pub.publish("city/signal/x-1", "red", qos=1)  # behind 200 running commands
            while not feed:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert feed == [b"red"] and not done
            release.set()
            while len(done) < n:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert up.commands_received - probes == n
        assert sorted(done) == sorted(f'{{"id": "c{i}"}}'.encode() for i in range(n))
        await asyncio.sleep(0)
        assert not up._command_tasks  # finished tasks are let go
    finally:
        pub.loop_stop()
        pub.disconnect()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
