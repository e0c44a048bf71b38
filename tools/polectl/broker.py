"""Where a broker is and how to reach it: the `--broker` forms every polectl command takes
(host:port, mqtt://host:port, mqtts://host:port) and the TLS context for mqtts
(edge_controller.tlsctx.client_context, the one copy)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edge_controller.tlsctx import client_context


@dataclass(frozen=True)
class BrokerAddr:
    host: str
    port: int
    tls: bool = False

    @staticmethod
    def parse(s: str) -> BrokerAddr:
        """host:port, mqtt://host:port or mqtts://host:port."""
        if "://" in s:
            u = urlsplit(s)
            if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
                raise ValueError(f"broker {s!r}: use host:port, mqtt://host:port or "
                                 "mqtts://host:port")
            return BrokerAddr(u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883),
                              u.scheme == "mqtts")
        host, _, port = s.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"broker {s!r}: use host:port, e.g. 127.0.0.1:1883")
        return BrokerAddr(host or "127.0.0.1", int(port))


def tls_context(enabled: bool, ca_file: Path | str | None = None,
                cert_file: Path | str | None = None,
                key_file: Path | str | None = None) -> ssl.SSLContext | None:
    """The client TLS context for mqtts:// (None for plain mqtt://); raises OSError or
    ssl.SSLError when a file is unusable."""
    return client_context(ca_file, cert_file, key_file) if enabled else None
