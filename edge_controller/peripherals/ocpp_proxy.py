"""Charging pile over OCPP 1.6J: the pole is a local proxy between charger and central system.

    charger --ws--> pole (this adapter) --ws--> upstream central system (optional)

The charger connects to the pole's WebSocket server (`ws://pole:port/<cp id>`,
subprotocol `ocpp1.6`). With `upstream_url` set, the pole opens a connection to
`<upstream_url>/<cp id>` during the charger's handshake (forwarding its
Authorization header; a charger whose upstream cannot be reached is refused
with HTTP 502 and retries as chargers do) and then forwards every frame both
ways unchanged, in order, observing each. Without an upstream the pole answers
the core profile itself (BootNotification, Heartbeat, StatusNotification,
MeterValues, Authorize, StartTransaction, StopTransaction) with the `ocpp`
package's ChargePoint.

Who may connect (docs/security.md, "OCPP"): the server listens on loopback
unless configured otherwise; only the charge point ids of the allow-list get
a connection (HTTP 404 for any other); with security profile 1 each charger
proves its id with HTTP Basic and its own password (HTTP 401 otherwise), and
profile 2 adds TLS (a plain ws:// connection fails its handshake). All of it
is decided in the opening handshake, before an upstream connection is opened
or an existing charger connection is superseded. Passwords are read from
their file or environment variable at each handshake, so a rotated password
takes effect without a restart and never sits in the config.

`OcppObserver` (sans-I/O) reads the traffic: it validates each message against
the OCPP 1.6 JSON schemas, rejects (with a logged reason) what is not valid,
and keeps the connector state, error code, meter values and transaction.

This module is the adapter and its WebSocket server; the parts live beside it:
ocpp_auth.py (allow-list, credentials, TLS), ocpp_relay.py (the upstream relay),
ocpp_local.py (the local answers), ocpp_observer.py (the observer). Their public
names are importable from here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from http import HTTPStatus

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge_controller.peripherals.adapter import Adapter, Sink
from edge_controller.peripherals.config import DeviceConfig
from edge_controller.peripherals.ocpp_auth import (
    PASSWORD_MAX,
    PASSWORD_MIN,
    Refusal,
    SecretError,
    authorise,
    basic_credentials,
    read_password,
    server_tls,
)
from edge_controller.peripherals.ocpp_compat import SUBPROTOCOL
from edge_controller.peripherals.ocpp_local import LocalCentralSystem, Tap
from edge_controller.peripherals.ocpp_observer import CP_ACTIONS, Observed, OcppObserver, Sender
from edge_controller.peripherals.ocpp_relay import (
    CLOSE_TIMEOUT_S,
    MAX_FRAME_BYTES,
    open_upstream,
    relay,
    upstream_headers,
)

__all__ = ["CLOSE_TIMEOUT_S", "CP_ACTIONS", "MAX_FRAME_BYTES", "PASSWORD_MAX", "PASSWORD_MIN",
           "REFUSAL_LOG_EVERY_S", "LocalCentralSystem", "Observed", "OcppObserver",
           "OcppProxyAdapter", "SecretError", "Sender", "basic_credentials", "read_password",
           "server_tls"]

log = logging.getLogger(__name__)

# Refused handshakes are logged at most this often per reason (a scanner must not flood
# the log); the counters in OcppProxyAdapter.refused count every one.
REFUSAL_LOG_EVERY_S = 60.0


def _close_story(ws: ServerConnection) -> str:
    """Who closed, with what code and reason, for the disconnect log line."""
    proto = ws.protocol
    if proto.close_rcvd is not None and proto.close_rcvd_then_sent is not False:
        return f"closed by the charger: {proto.close_rcvd.code} {proto.close_rcvd.reason}".rstrip()
    if proto.close_sent is not None:
        what = f"{proto.close_sent.code} {proto.close_sent.reason}".rstrip()
        return f"closed by the pole: {what}" + ("" if proto.close_rcvd else ", unanswered")
    return "connection lost without a close frame"


class OcppProxyAdapter(Adapter):
    kind = "ocpp_charger"

    def __init__(self, device: DeviceConfig, sink: Sink) -> None:
        super().__init__(device, sink)
        assert device.ocpp is not None
        self.settings = device.ocpp
        self.observer = OcppObserver(self.settings.connector_id)
        self.listening = asyncio.Event()
        self.port: int | None = None
        self._server: Server | None = None
        self._active: ServerConnection | None = None
        # Upstreams opened for a charger whose handshake is not finished: its handler takes
        # its own; a watcher closes one whose handler never runs (the charger went away
        # mid-handshake, or its upgrade request was malformed and answered 400), which
        # otherwise stayed open to the central system as a ghost charger.
        self._upstreams: dict[ServerConnection, ClientConnection] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._next_tx = itertools.count(1)
        self.forwarded = {"cp": 0, "cs": 0}
        # Handshakes refused, by reason: unknown_id, no_credentials, bad_credentials,
        # secret_unavailable (the pole cannot read the charger's password).
        self.refused: Counter[str] = Counter()
        self._refusal_logged: dict[str, float] = {}

    @property
    def url(self) -> str:
        host = self.settings.listen_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        scheme = "wss" if self.settings.security_profile == 2 else "ws"
        return f"{scheme}://{host}:{self.port}"

    async def run(self) -> None:
        s = self.settings
        # A bad certificate or key is a config problem: raising here restarts the adapter
        # with backoff and logs why, rather than serving without TLS.
        tls = server_tls(s)
        async with serve(self._handle, s.listen_host, s.listen_port, ssl=tls,
                         subprotocols=[Subprotocol(SUBPROTOCOL)],
                         process_request=self._process_request,
                         select_subprotocol=self._select_subprotocol,
                         ping_interval=s.ping_s, ping_timeout=s.ping_s,
                         close_timeout=CLOSE_TIMEOUT_S, max_size=MAX_FRAME_BYTES,
                         compression=None) as server:
            self._server = server
            sock = next(iter(server.sockets))
            self.port = int(sock.getsockname()[1])
            self.listening.set()
            log.info("ocpp %s: listening on %s (%s)", self.device.id, self.url,
                     f"proxy to {s.upstream_url}" if s.upstream_url else "answering locally")
            await asyncio.Event().wait()

    async def close(self) -> None:
        self.listening.clear()
        for up in list(self._upstreams.values()):
            with contextlib.suppress(Exception):
                await up.close()
        self._upstreams.clear()
        for w in list(self._watchers):
            w.cancel()

    # ---- observation --------------------------------------------------------------

    def _observe(self, sender: Sender, raw: str | bytes) -> bool:
        seen = self.observer.feed(sender, raw)
        if seen.rejected is not None:
            who = "charger" if sender == "cp" else "central system"
            self.sink.error("malformed_message", f"from the {who}: {seen.rejected}; "
                            f"frame {str(raw)[:120]!r}")
            return False
        if seen.action == "BootNotification" and sender == "cs":
            self.sink.condition("boot_rejected", self.observer.boot_status == "Rejected")
        status = self.observer.status()
        if status is not None and (sender == "cp" or seen.changed):
            self.sink.reading(status)
        elif sender == "cp":
            self.sink.contact()
        return True

    # ---- connections --------------------------------------------------------------

    def _cp_id(self, path: str) -> str:
        return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    @staticmethod
    def _select_subprotocol(conn: ServerConnection,
                            offered: Sequence[Subprotocol]) -> Subprotocol | None:
        # OCPP-J: a charge point that does not offer the version is accepted without a
        # subprotocol and then closed with a reason (in _handle), not refused with HTTP 400.
        return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None

    @staticmethod
    def _offered(req: Request) -> list[str]:
        return [p.strip() for h in req.headers.get_all("Sec-WebSocket-Protocol")
                for p in h.split(",") if p.strip()]

    def _refuse(self, conn: ServerConnection, refusal: Refusal) -> Response:
        reason, status = refusal.reason, refusal.status
        self.refused[reason] += 1
        now = asyncio.get_running_loop().time()
        if now - self._refusal_logged.get(reason, -REFUSAL_LOG_EVERY_S) >= REFUSAL_LOG_EVERY_S:
            self._refusal_logged[reason] = now
            peer = conn.remote_address[0] if conn.remote_address else "?"
            log.warning("ocpp %s: refused a connection from %s: %s (%s so far)",
                        self.device.id, peer, refusal.detail, self.refused[reason])
        resp = conn.respond(status, refusal.body)
        if status == HTTPStatus.UNAUTHORIZED:
            resp.headers["WWW-Authenticate"] = 'Basic realm="smartpole-ocpp", charset="UTF-8"'
        return resp

    async def _process_request(self, conn: ServerConnection, req: Request) -> Response | None:
        cp_id = self._cp_id(req.path)
        refusal = authorise(self.settings, req.headers, cp_id)
        if refusal is not None:
            return self._refuse(conn, refusal)
        up_url = self.settings.upstream_url
        if up_url is None or SUBPROTOCOL not in self._offered(req):
            return None
        headers = upstream_headers(req)
        try:
            up = await open_upstream(self.settings, cp_id, headers)
        except Exception as e:  # refused, timed out, bad handshake, DNS, TLS
            # A condition, not a failed exchange: it holds exactly until a connection
            # upstream succeeds, with no degraded_hold_s tail after that.
            self.sink.condition("upstream_unreachable", True,
                                f"{up_url}: {type(e).__name__}: {e}")
            return conn.respond(HTTPStatus.BAD_GATEWAY, "central system unreachable\n")
        self.sink.condition("upstream_unreachable", False)
        self._upstreams[conn] = up
        watcher = asyncio.create_task(self._drop_unclaimed(conn),
                                      name=f"ocpp-{self.device.id}-handshake")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return None

    async def _drop_unclaimed(self, conn: ServerConnection) -> None:
        await conn.wait_closed()
        up = self._upstreams.pop(conn, None)
        if up is not None:  # the handler never took it
            log.info("ocpp %s: a charger's handshake failed; closing its upstream connection",
                     self.device.id)
            with contextlib.suppress(Exception):
                await up.close()

    async def _handle(self, ws: ServerConnection) -> None:
        cp_id = self._cp_id(ws.request.path if ws.request else "")
        up = self._upstreams.pop(ws, None)
        if ws.subprotocol != SUBPROTOCOL:
            offered = self._offered(ws.request) if ws.request else []
            self.sink.error("malformed_message", f"charge point {cp_id} connected without "
                            f"offering subprotocol {SUBPROTOCOL} (offered: "
                            f"{', '.join(offered) or 'none'}); closed with 1002")
            with contextlib.suppress(Exception):
                await ws.close(1002, f"OCPP 1.6J: subprotocol {SUBPROTOCOL} required")
            return
        old, self._active = self._active, ws
        if old is not None:
            log.info("ocpp %s: a new connection from %s replaces the old one",
                     self.device.id, cp_id)
            with contextlib.suppress(Exception):
                await old.close(1000, "superseded by a new connection")
        self.sink.connection(True)
        try:
            if up is not None:
                await relay(ws, up, self._observe, self.forwarded, self.device.id)
            else:
                cs = LocalCentralSystem(cp_id, Tap(ws, self._observe), self.settings,
                                        self._next_tx)
                with contextlib.suppress(ConnectionClosed):
                    await cs.start()
        finally:
            if up is not None:
                with contextlib.suppress(Exception):
                    await up.close()
            sent = ws.protocol.close_sent
            if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.sink.error("malformed_message", f"charger {cp_id} sent a frame over "
                                f"{MAX_FRAME_BYTES} bytes; closed with 1009")
            if self._active is ws:
                self._active = None
                self.sink.connection(False, "disconnected")
                log.info("ocpp %s: charger %s disconnected (%s)", self.device.id, cp_id,
                         _close_story(ws))
