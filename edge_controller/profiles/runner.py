"""The I/O side of a backend profile: its connection, its durable queue, its commands.

One `ProfileRunner` per profile named in `[mqtt] profiles` (besides native). It
sees every native record through the uplink's tap, has the profile translate it,
and keeps what to publish:

- retained messages (platform state, discovery): the latest per topic, in memory,
  re-sent on every connect; they are state, and a newer one replaces an older one;
- everything else in a `RecordStore` of its own (its own SQLite file): durable,
  strictly in order, removed only after the platform's broker acknowledged it.

So a platform whose broker is down loses nothing and delays no other platform;
when it is back it gets the backlog in order. The connection is the profile's
own (`Profile.connection`; its url None: the native broker with the native TLS
files and credentials) or the native one (`Uplink.publish_now`/`listen`). A
profile whose records belong to one connection (`Profile.session_scoped`,
Sparkplug) has the backlog dropped when a new connection starts; every profile
hears `on_disconnect` when its connection is lost, and the native `offline`
state (reason `shutdown`) when the pole stops cleanly, before the last drain.

Commands from the platform go through the native `CommandDispatcher` (its trust
rules, replay cache and handlers, unchanged). Unsigned ones run only for the
types the profile's `accept_unsigned` allows; every other is answered on the
platform, counted and logged. Whatever a platform sends, the runner answers or
drops it with a counter and a log line; it never raises into the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast, get_args
from urllib.parse import urlsplit

import aiomqtt

from edge_controller.backoff import backoff_delays
from edge_controller.clock import utc_iso
from edge_controller.profiles.base import Connection, Inbound, Native, NativeKind, Out, Profile
from edge_controller.profiles.settings import ProfileSettings
from edge_controller.tlsctx import client_context
from edge_controller.uplink.dispatcher import CommandDispatcher
from edge_controller.uplink.mqtt import Uplink
from edge_controller.uplink.store import RecordStore

log = logging.getLogger(__name__)

Publish = Callable[[Out], Awaitable[None]]
MAX_RETAINED_TOPICS = 4096  # a profile's retained topics are few; this only bounds a bug
MAX_COMMANDS_IN_FLIGHT = 16  # a platform flooding commands is answered "busy", not queued


class ProfileRunner:
    def __init__(self, profile: Profile, settings: ProfileSettings, uplink: Uplink,
                 dispatcher: CommandDispatcher, store: RecordStore,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.profile = profile
        self.name = profile.name
        self.settings = settings
        self.uplink = uplink
        self.dispatcher = dispatcher
        self.store = store
        self._clock = clock
        self._delay = backoff_delays(reconnect_min_s, reconnect_max_s, random.Random())
        self._retained: dict[str, Out] = {}
        self._dirty: dict[str, None] = {}  # retained topics not yet sent on this connection
        self._have = asyncio.Event()
        self._drained = asyncio.Event()  # nothing left to send on this connection
        self._up = asyncio.Event()  # shared connection: the uplink (re)connected
        self._boot = uuid.uuid4().hex[:8]
        self._cmd_seq = 0
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.own = profile.connection(clock()) is not None
        self.connected = False
        self.connects = 0
        self.published = 0
        self.stale_dropped = 0  # a session-scoped profile's backlog dropped on reconnect
        self.translate_errors = 0  # a translator bug on one native message
        self.received = 0  # messages on the profile's subscriptions
        self.inbound_refused = 0  # platform messages refused (bad input, not allowed)
        self.commands = 0  # platform commands handed to the dispatcher
        uplink.add_tap(self.feed)
        if not self.own:
            for flt in profile.subscriptions():
                uplink.listen(flt, self.on_message)
            uplink.on_connected(self._uplink_connected)

    def _uplink_connected(self) -> None:
        # A new native connection is a new session for a profile sharing it (on_connect,
        # retained state again): wake the running session so that it ends.
        self._up.set()
        self._have.set()

    # ---- in: native records and platform messages (sans-I/O apart from the queue) ----

    def feed(self, kind: str, payload: dict[str, Any], device_id: str | None = None) -> None:
        """The uplink's tap: one native record."""
        try:
            outs = self.profile.translate(Native(_kind(kind), payload, device_id),
                                          self._clock())
        except Exception:
            self.translate_errors += 1
            log.exception("profile %s: translating a %s record failed", self.name, kind)
            return
        self._enqueue(outs, kind)

    def _enqueue(self, outs: list[Out], kind: str) -> None:
        for o in outs:
            if o.retain:
                if o.topic not in self._retained and len(self._retained) >= MAX_RETAINED_TOPICS:
                    log.error("profile %s: over %d retained topics; %s not kept", self.name,
                              MAX_RETAINED_TOPICS, o.topic)
                    continue
                self._retained[o.topic] = o
                self._dirty[o.topic] = None
            else:
                self.store.append_raw(o.topic, o.payload, o.qos, kind)
        if outs:
            self._drained.clear()
            self._have.set()

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on one of the profile's subscriptions."""
        self.received += 1
        now = self._clock()
        try:
            r = self.profile.inbound(topic, payload, now)
        except Exception:
            self.inbound_refused += 1
            log.exception("profile %s: inbound message on %s failed", self.name, topic)
            return
        if isinstance(r, list):
            self._enqueue(r, "result")
        elif isinstance(r, Inbound):
            self._command(r)
        else:
            self.inbound_refused += 1
            log.warning("profile %s: refused a message on %s: %s", self.name, topic, r.reason)
            self._enqueue(r.replies, "result")

    def _command(self, cmd: Inbound) -> None:
        allowed = self.settings.allowed_unsigned
        ctype = cmd.body.get("type")
        if cmd.signed_envelope is None and ctype not in allowed:
            self.inbound_refused += 1
            why = (f"{self.name} commands are not run unsigned ([mqtt.{self.name}] "
                   f"accept_unsigned = {self.settings.accept_unsigned!r})")
            log.warning("profile %s: %s refused: %s", self.name, ctype, why)
            self._reply(cmd, {"id": None, "status": "rejected", "reason": "signature",
                              "detail": why})
            return
        if self._inflight >= MAX_COMMANDS_IN_FLIGHT:
            self.inbound_refused += 1
            log.warning("profile %s: %d commands in flight; %s refused", self.name,
                        self._inflight, ctype)
            self._reply(cmd, {"id": None, "status": "rejected", "reason": "bad_value",
                              "detail": "too many commands in flight"})
            return
        if cmd.signed_envelope is not None:
            payload = cmd.signed_envelope
        else:
            self._cmd_seq += 1
            # An id of ours: unique per boot, so the replay cache never answers a new one.
            payload = json.dumps({"id": f"{self.name[:20]}-{self._boot}-{self._cmd_seq}",
                                  "issued_at": utc_iso(), "body": cmd.body}).encode()
        self.commands += 1
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._dispatch(cmd, payload, allowed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, cmd: Inbound, payload: bytes, allowed: frozenset[str]) -> None:
        try:
            await self.dispatcher.handle(payload, reply=lambda res: self._reply(cmd, res),
                                         allow_unsigned=allowed)
        except Exception:
            log.exception("profile %s: command failed", self.name)
            self._reply(cmd, {"id": None, "status": "failed", "reason": "device_error",
                              "detail": "internal error"})
        finally:
            self._inflight -= 1

    def _reply(self, cmd: Inbound, result: dict[str, Any]) -> None:
        try:
            outs = self.profile.result(cmd.context, result, self._clock())
        except Exception:
            self.translate_errors += 1
            log.exception("profile %s: translating a result failed", self.name)
            return
        self._enqueue(outs, "result")

    # ---- out: the connection --------------------------------------------------------

    def is_connected(self) -> bool:
        return self.connected

    @property
    def queued(self) -> int:
        return len(self.store)

    async def run(self) -> None:
        """Task body: forever connected (own or shared), sending what is queued."""
        if self.own:
            await self._run_own()
        else:
            await self._run_shared()

    async def _run_shared(self) -> None:
        async def publish(o: Out) -> None:
            await self.uplink.publish_now(o.topic, o.payload, o.qos, o.retain)

        while True:
            await self._up.wait()
            self._up.clear()
            try:
                await self._session(publish, restart=self._up)
            except aiomqtt.MqttError as e:
                log.info("profile %s: native connection lost (%s); waiting", self.name, e)
            finally:
                self._lost()

    async def _run_own(self) -> None:
        attempt = 0
        while True:
            conn = self.profile.connection(self._clock())
            assert conn is not None
            client = self._client(conn)
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as e:
                wait = self._delay(attempt)
                attempt += 1
                log.warning("profile %s: connect to %s failed (%s); retry in %.1f s",
                            self.name, conn.url or self.uplink.cfg.url, e, wait)
                await asyncio.sleep(wait)
                continue
            attempt = 0
            self._own_client = client
            log.info("profile %s: connected to %s", self.name, conn.url or self.uplink.cfg.url)

            async def publish(o: Out, client: aiomqtt.Client = client) -> None:
                await client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain)

            try:
                for flt in self.profile.subscriptions():
                    await client.subscribe(flt, qos=1)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._session(publish))
                    tg.create_task(self._receive(client))
            except* aiomqtt.MqttError as eg:
                log.warning("profile %s: connection lost (%s)", self.name, eg.exceptions[0])
            finally:
                self._lost()
                self._own_client = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.__aexit__(None, None, None), 2)
            await asyncio.sleep(self._delay(0))

    _own_client: aiomqtt.Client | None = None

    def _lost(self) -> None:
        was, self.connected = self.connected, False
        if was:
            try:
                self.profile.on_disconnect(self._clock())
            except Exception:
                log.exception("profile %s: on_disconnect failed", self.name)

    def _client(self, conn: Connection) -> aiomqtt.Client:
        will = None if conn.will is None else aiomqtt.Will(
            conn.will.topic, conn.will.payload, qos=conn.will.qos, retain=conn.will.retain)
        if conn.url is None:
            # The native broker: its URL, TLS files and credentials (the password read now,
            # as the uplink does at each connect), with this profile's client id and will.
            n = self.uplink.cfg
            url, ca, cert, key = n.url, n.ca_file, n.cert_file, n.key_file
            user, password = n.username, n.secret()
        else:
            s = self.settings
            url, ca, cert, key = conn.url, s.ca_file, s.cert_file, s.key_file
            user, password = conn.username, conn.password
        u = urlsplit(url)
        tls = client_context(ca, cert, key) if u.scheme == "mqtts" else None
        return aiomqtt.Client(
            u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883),
            identifier=conn.client_id, username=user, password=password,
            protocol=aiomqtt.ProtocolVersion.V311, will=will, keepalive=30, timeout=10,
            tls_context=tls, clean_session=conn.clean_start)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            raw = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            self.on_message(msg.topic.value, raw)

    async def _session(self, publish: Publish, restart: asyncio.Event | None = None) -> None:
        """One connection: what the profile says on connect, every retained message,
        then the queue in order as it fills; until the connection fails or `restart`
        (a shared connection's reconnect) is set."""
        if self.profile.session_scoped:
            stale = self.store.discard()
            if stale:
                self.stale_dropped += stale
                log.info("profile %s: new session; %d records of the last one dropped",
                         self.name, stale)
        self.connected = True
        self.connects += 1
        self._dirty = dict.fromkeys(self._retained)
        for o in self.profile.on_connect(self._clock()):
            await publish(o)
        while True:
            if restart is not None and restart.is_set():
                return
            while self._dirty:
                topic = next(iter(self._dirty))
                await publish(self._retained[topic])
                self._dirty.pop(topic, None)
                self.published += 1
            recs = self.store.peek(1)
            if recs:
                r = recs[0]
                await publish(Out(r.topic, r.payload, r.qos))
                self.store.ack(r.seq)  # after the PUBACK: the broker has it
                self.published += 1
                continue
            self._drained.set()
            self._have.clear()
            await self._have.wait()
            self._drained.clear()

    async def shutdown(self, within_s: float = 2.0) -> None:
        """Clean stop (the controller calls it before the uplink's): the profile hears the
        native `offline` state (reason `shutdown`), what it says about that goes out with
        the rest of its queue (within `within_s`), then its `on_shutdown` (on its own
        connection: what the will would say; on the shared one: e.g. ThingsBoard's device
        disconnects), published at once, before the native connection says offline.

        Disconnected, it hears nothing: what it would say could only go out at the next
        start, after that start's births, and undo them. Likewise what is said here and
        not sent in time is dropped, not kept for the next start."""
        if not self.connected:
            return
        first = self.store.next_seq
        self.feed("state", self.uplink.state_payload("offline", "shutdown"))
        drained = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), within_s)
            drained = True
        if not drained:
            self.store.discard(first)
        client = self._own_client
        if not self.connected or (self.own and client is None):
            return
        try:
            outs = self.profile.on_shutdown(self._clock())
        except Exception:
            log.exception("profile %s: on_shutdown failed", self.name)
            return
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            for o in outs:
                if client is not None:
                    sent = client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain)
                else:
                    sent = self.uplink.publish_now(o.topic, o.payload, o.qos, o.retain)
                await asyncio.wait_for(sent, within_s)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "connects": self.connects,
                "published": self.published, "queued": len(self.store),
                "dropped": self.store.dropped, "stale_dropped": self.stale_dropped,
                "commands": self.commands, "received": self.received,
                "inbound_refused": self.inbound_refused,
                "translate_errors": self.translate_errors}


def _kind(kind: str) -> NativeKind:
    if kind not in get_args(NativeKind):
        raise ValueError(f"not a native kind: {kind}")
    return cast(NativeKind, kind)
