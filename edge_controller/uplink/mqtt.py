"""MQTT uplink on aiomqtt: connection, last will, the single publish path, commands in.

Every record the pole reports goes through `Uplink.publish()`: the durable
queue (store.py), drained in order by one sender while connected. Backend
profiles (edge_controller.profiles) see every record there through a tap
(`add_tap`), before it is queued, and keep queues of their own; a profile that
shares this connection publishes through `publish_now` and listens with `listen`.
With `native=False` ([mqtt] profiles without "native") the connection, its state
and last will stay, but no record of the native API is published or queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt

from edge_controller.api.messages import Event, Message, State, StateReason
from edge_controller.api.version import PAYLOAD_VERSION
from edge_controller.backoff import backoff_delays
from edge_controller.clock import utc_iso
from edge_controller.tlsctx import client_context
from edge_controller.uplink.config import MqttConfig
from edge_controller.uplink.store import RecordStore
from edge_controller.uplink.topics import Topics

log = logging.getLogger(__name__)

__all__ = ["Record", "Uplink", "backoff_delays"]


@dataclass(frozen=True)
class Record:
    topic: str
    payload: dict[str, Any]
    qos: int = 1
    retain: bool = False


# A tap sees every record of the native API: (kind, payload, device_id); kind is one of
# state, birth, telemetry, events, result, periph_status (profiles.base.NativeKind). The
# state it sees is `online` after each connect; the clean stop's `offline` is told to
# each profile by its runner's shutdown (it runs before this uplink's), the will by none.
Tap = Callable[[str, dict[str, Any], str | None], None]


class Uplink:
    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        birth: Callable[[], dict[str, Any]],
        on_command: Callable[[bytes], Coroutine[Any, Any, None]],
        store: RecordStore | None = None,
        drain_rate_per_s: float = 50.0,
        native: bool = True,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self._birth = birth
        self._on_command = on_command
        # Without a path (tests, tools) the queue lives in memory: same code, no durability.
        self.store = store if store is not None else RecordStore(":memory:")
        self.drain_rate_per_s = drain_rate_per_s
        self._retained: dict[str, dict[str, Any]] = {}  # state-like records: latest wins
        self._have = asyncio.Event()
        self._drained = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._rng = random.Random()
        self.native = native
        self._extra: dict[str, Callable[[str, bytes], None]] = {}
        self._taps: list[Tap] = []
        self._on_connected: list[Callable[[], None]] = []
        # One publish in flight on the client (the PUBACK watch relies on it), whoever sends.
        self._publishing = asyncio.Lock()
        self._refusal: str | None = None
        self.protocol = "5" if cfg.protocol in ("auto", "5") else "3.1.1"
        self.connected = False
        self.connects = 0
        self.reconnects = 0
        self.published = 0
        self.refused = 0
        self.commands_received = 0
        # Commands run as tasks, held here until they end: the event loop keeps only weak
        # references, so an unheld task can be collected mid-command. Not capped: the
        # receive loop must never wait behind slow commands (the signal feed shares it),
        # and dropping a command would lose its result; their number is the backend's
        # command rate times their length (a lamp fade: seconds).
        self._command_tasks: set[asyncio.Task[None]] = set()

    @property
    def dropped(self) -> int:
        return self.store.dropped

    @property
    def queued(self) -> int:
        return len(self.store)

    # ---- the single publish path ---------------------------------------------

    def header(self) -> dict[str, Any]:
        """The fields every message starts with (api.Message), for a message built now."""
        return {"pole_id": self.topics.pole_id, "ts": utc_iso()}

    def stamp(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"v": PAYLOAD_VERSION, **self.header(), **payload}

    def send(self, topic: str, message: Message, retain: bool = False) -> None:
        """Publish an API message (the usual way in; `publish` takes plain records)."""
        self.publish(Record(topic, message.payload(), retain=retain))

    def publish(self, record: Record) -> None:
        """Every record goes here. Retained records are state (the latest wins, re-sent on
        every connect); all others get a sequence number and are stored durably first."""
        self._tap(record.topic, record.payload)
        if not self.native:
            return
        if record.retain:
            self._retained[record.topic] = record.payload
        else:
            kind = record.topic.rsplit("/", 1)[-1]
            self.store.append(record.topic, record.payload, record.qos, kind)
        self._drained.clear()
        self._have.set()

    def event(self, name: str, detail: dict[str, Any]) -> None:
        self.send(self.topics.events, Event(**self.header(), event=name, detail=detail))

    def refresh_birth(self) -> None:
        self.publish(Record(self.topics.birth, self.stamp(self._birth()), retain=True))

    def state_payload(self, state: Literal["online", "offline"], reason: StateReason,
                      ts: bool = True) -> dict[str, Any]:
        return State(pole_id=self.topics.pole_id, state=state, ts=utc_iso() if ts else None,
                     reason=reason).payload()

    def subscribe(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Also listen to `topic` (e.g. an external signal feed); set before run()."""
        self._extra[topic] = lambda _topic, raw: handler(raw)

    def listen(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None:
        """Like `subscribe`, for a filter with wildcards: the handler gets the topic too."""
        self._extra[topic_filter] = handler

    # ---- backend profiles ------------------------------------------------------

    def add_tap(self, tap: Tap) -> None:
        """`tap` sees every native record as it is published (a profile runner)."""
        self._taps.append(tap)

    def on_connected(self, callback: Callable[[], None]) -> None:
        """`callback` runs after each (re)connect, once state and birth are out."""
        self._on_connected.append(callback)

    def _tap(self, topic: str, payload: dict[str, Any]) -> None:
        if not self._taps:
            return
        kind, device = self.topics.kind_of(topic)
        if kind is None:
            return
        for tap in self._taps:
            try:
                tap(kind, payload, device)
            except Exception:  # a profile's bug must never cost the native API a record
                log.exception("profile tap failed on %s", topic)

    async def publish_now(self, topic: str, payload: bytes, qos: int = 1,
                          retain: bool = False) -> None:
        """Publish on this connection now, for a profile that shares it; raises
        aiomqtt.MqttError while disconnected (the profile keeps the record queued)."""
        async with self._publishing:
            client = self._client
            if client is None or not self.connected:
                raise aiomqtt.MqttError("uplink not connected")
            await client.publish(topic, payload, qos=qos, retain=retain)

    # ---- connection ------------------------------------------------------------

    def _client_for(self, protocol: str) -> aiomqtt.Client:
        cfg = self.cfg
        will = aiomqtt.Will(
            self.topics.state,
            json.dumps(self.state_payload("offline", "connection_lost", ts=False)),
            qos=1,
            retain=True,
        )
        tls = client_context(cfg.ca_file, cfg.cert_file, cfg.key_file) if cfg.tls else None
        v5 = protocol == "5"
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id or f"smartpole-{self.topics.pole_id}",
            username=cfg.username,
            password=cfg.secret(),  # password, password_file or password_env
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            keepalive=cfg.keepalive_s,
            timeout=cfg.timeout_s,
            tls_context=tls,
            # Small, latency-sensitive messages (command results): no Nagle delay.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            clean_session=None if v5 else True,
        )

    async def _connect(self) -> aiomqtt.Client:
        client = self._client_for(self.protocol)
        try:
            await client.__aenter__()
            return client
        except aiomqtt.MqttError as e:
            # Brokers that do not speak 5 either refuse the CONNECT (a CONNACK
            # code) or never answer it; both end here. A broker that is down
            # fails the 3.1.1 try as fast, so trying costs nothing.
            if not (self.cfg.protocol == "auto" and self.protocol == "5"):
                raise
            first = e
        client = self._client_for("3.1.1")
        try:
            await client.__aenter__()
        except aiomqtt.MqttError:
            raise first from None
        log.warning("uplink: broker did not accept MQTT 5 (%r); using 3.1.1", first)
        self.protocol = "3.1.1"
        return client

    async def run(self) -> None:
        """Task body: stay connected; publish the queue; hand commands to the handler."""
        delay = backoff_delays(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, self._rng)
        attempt = 0
        while True:
            try:
                client = await self._connect()
            except aiomqtt.MqttError as e:
                # A refused v5 with a v3 fallback that also failed: try v5 again next time.
                if self.cfg.protocol == "auto":
                    self.protocol = "5"
                wait = delay(attempt)
                attempt += 1
                log.warning("uplink: connect to %s failed (%s); retry in %.1f s",
                            self.cfg.url, e, wait)
                await asyncio.sleep(wait)
                continue
            attempt = 0
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            self._client = client
            self._watch_pubacks(client)
            self.connected = True
            log.info("uplink: connected to %s (MQTT %s)", self.cfg.url, self.protocol)
            try:
                # Subscribe first: once a backend sees `online`, commands reach us.
                if self.native:
                    await client.subscribe(self.topics.command, qos=1)
                for topic in self._extra:
                    await client.subscribe(topic, qos=1)
                online = self.state_payload("online", "connected")
                await client.publish(self.topics.state, json.dumps(online),
                                     qos=1, retain=True)
                self._tap(self.topics.state, online)
                self._retained.pop(self.topics.birth, None)
                birth = self.stamp(self._birth())
                self._tap(self.topics.birth, birth)
                if self.native:
                    await client.publish(self.topics.birth, json.dumps(birth),
                                         qos=1, retain=True)
                for callback in self._on_connected:
                    callback()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._send_loop(client), name="uplink.send")
                    tg.create_task(self._receive_loop(client), name="uplink.receive")
            except* aiomqtt.MqttError as eg:
                log.warning("uplink: connection lost (%s)", eg.exceptions[0])
            finally:
                self.connected = False
                self._client = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.__aexit__(None, None, None), 2)
            await asyncio.sleep(delay(0))

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        """Live records go out at once; the backlog from before this connection drains in
        order at `drain_rate_per_s`, so an outage's backlog never delays a fresh event."""
        live_from = self.store.next_seq
        tokens, last = 1.0, time.monotonic()
        while True:
            for topic in list(self._retained):
                payload = self._retained.pop(topic)
                async with self._publishing:
                    await client.publish(topic, json.dumps(payload, separators=(",", ":")),
                                         qos=1, retain=True)
            live = self.store.peek(1, min_seq=live_from)
            backlog = self.store.peek(1)
            if backlog and backlog[0].seq >= live_from:
                backlog = []
            now = time.monotonic()
            tokens = min(self.drain_rate_per_s, tokens + (now - last) * self.drain_rate_per_s)
            last = now
            rec = live[0] if live else None
            if rec is None and backlog and tokens >= 1:
                rec, tokens = backlog[0], tokens - 1
            if rec is None:
                if not live and not backlog and not self._retained:
                    self._drained.set()
                self._have.clear()
                wait = None if not backlog else (1 - tokens) / self.drain_rate_per_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._have.wait(), wait)
                continue
            async with self._publishing:
                self._refusal = None
                await client.publish(rec.topic, rec.payload, qos=rec.qos)
                refusal = self._refusal
            # Removed only once the broker has it (QoS 1: after PUBACK).
            self.store.ack(rec.seq)
            if refusal is not None:
                # MQTT 5: the broker answered with a failure reason (e.g. not authorised).
                # Retrying cannot help; count it and move on so the queue never wedges.
                self.refused += 1
                log.error("uplink: broker refused seq %d on %s: %s", rec.seq, rec.topic,
                          refusal)
            else:
                self.published += 1

    def _watch_pubacks(self, client: aiomqtt.Client) -> None:
        # aiomqtt does not surface PUBACK reason codes; paho hands them to on_publish.
        # One publish is in flight at a time, so a failure seen now is ours.
        paho = client._client
        original: Any = paho.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
            if getattr(rc, "is_failure", False):
                self._refusal = str(rc)
            original(c, userdata, mid, rc, props)

        paho.on_publish = on_publish

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            if not (self.native and msg.topic.matches(self.topics.command)):
                for topic, handler in self._extra.items():
                    if msg.topic.matches(topic):
                        raw = msg.payload if isinstance(msg.payload, bytes) else b""
                        try:
                            handler(msg.topic.value, raw)
                        except Exception:  # a feed handler bug must not drop the uplink
                            log.exception("handler for %s failed", topic)
                continue
            self.commands_received += 1
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            # Commands run concurrently so a slow one (a lamp fade) never blocks the next.
            task = asyncio.get_running_loop().create_task(self._on_command(payload))
            self._command_tasks.add(task)
            task.add_done_callback(self._command_tasks.discard)
            task.add_done_callback(_log_task_error)

    async def flush(self, within_s: float) -> bool:
        """Wait until the queue is empty or `within_s` passes; True if drained."""
        if self.connected and (len(self.store) or self._retained):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), within_s)
        return not len(self.store)

    async def shutdown(self, reason: StateReason = "shutdown", within_s: float = 3.0) -> None:
        """Clean stop: drain what is queued, then say offline (retained) before leaving."""
        await self.flush(within_s)
        client = self._client
        if client is not None and self.connected:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(
                    client.publish(self.topics.state,
                                   json.dumps(self.state_payload("offline", reason)),
                                   qos=1, retain=True),
                    within_s,
                )


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("command handler failed", exc_info=task.exception())
