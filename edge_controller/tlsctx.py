"""The TLS client context for mqtts:// (and any other TLS the pole or its tools open): one copy."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca_file: Path | str | None = None, cert_file: Path | str | None = None,
                   key_file: Path | str | None = None) -> ssl.SSLContext:
    """Verify the server against `ca_file` (the system CAs when None); present
    `cert_file`/`key_file` as the client certificate when given (mutual TLS)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx
