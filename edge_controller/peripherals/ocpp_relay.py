"""The relay to an upstream central system.

With `upstream_url` set, the pole opens a connection to `<upstream_url>/<cp id>`
during the charger's handshake (`open_upstream`, forwarding the charger's
Authorization header) and then `relay` forwards every frame both ways unchanged,
in order, observing each. Both connections, the charger's and the upstream one,
share the close timeout and the frame size limit below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.typing import Subprotocol

from edge_controller.peripherals.config import OcppSettings
from edge_controller.peripherals.ocpp_compat import SUBPROTOCOL
from edge_controller.peripherals.ocpp_observer import Sender

# The OCPP proxy's one logger, whichever of its modules logs (the log lines name it).
log = logging.getLogger("edge_controller.peripherals.ocpp_proxy")

# After a ping goes unanswered (or the pole closes for any other reason) the peer gets this
# long to complete the closing handshake before the socket is dropped. websockets' default
# (10 s) would keep a hung charger "connected" for 2 x ping_s + 10 s; a peer that is alive
# answers a close frame within milliseconds on a local network.
CLOSE_TIMEOUT_S = 1.0
# Largest frame accepted either way; a bigger one closes that connection with 1009. OCPP 1.6J
# messages are a few kB at most; the limit keeps one peer from exhausting the pole's memory.
MAX_FRAME_BYTES = 1 << 20


def upstream_headers(req: Request) -> Headers:
    """The charger's handshake headers the upstream connection carries: its Authorization."""
    headers = Headers()
    if "Authorization" in req.headers:
        headers["Authorization"] = req.headers["Authorization"]
    return headers


async def open_upstream(settings: OcppSettings, cp_id: str,
                        headers: Headers) -> ClientConnection:
    """The connection to the central system for `cp_id`; raises if it cannot be opened."""
    assert settings.upstream_url is not None
    return await connect(f"{settings.upstream_url}/{cp_id}",
                         subprotocols=[Subprotocol(SUBPROTOCOL)],
                         additional_headers=headers,
                         open_timeout=settings.upstream_timeout_s,
                         ping_interval=settings.ping_s,
                         ping_timeout=settings.ping_s,
                         close_timeout=CLOSE_TIMEOUT_S, max_size=MAX_FRAME_BYTES,
                         compression=None)


async def relay(cp: ServerConnection, up: ClientConnection,
                observe: Callable[[Sender, str | bytes], bool], forwarded: dict[str, int],
                device_id: str) -> None:
    """Forward frames both ways until one side closes; then close the other."""
    async def pump(src: ServerConnection | ClientConnection,
                   dst: ServerConnection | ClientConnection, sender: Sender) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for msg in src:
                observe(sender, msg)
                await dst.send(msg)  # unchanged, whatever the observer thought of it
                forwarded[sender] += 1

    a = asyncio.create_task(pump(cp, up, "cp"))
    b = asyncio.create_task(pump(up, cp, "cs"))
    try:
        done, _ = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (a, b):
            t.cancel()
        for t in (a, b):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    if b in done:  # the central system went away: so does the charger
        log.info("ocpp %s: upstream closed (code %s); closing the charger's connection",
                 device_id, up.close_code)
        with contextlib.suppress(Exception):
            await cp.close(1001 if up.close_code in (1000, 1001) else 1011,
                           "central system went away")
    else:
        with contextlib.suppress(Exception):
            await up.close(1000 if cp.close_code in (1000, 1001, None) else 1001)
