"""Who may connect to the pole's OCPP server (docs/security.md, "OCPP").

Only the charge point ids of the allow-list get a connection (HTTP 404 for any
other); with security profile 1 each charger proves its id with HTTP Basic and
its own password (HTTP 401 otherwise), and profile 2 adds TLS (`server_tls`).
`authorise` decides it from the opening handshake, before an upstream connection
is opened or an existing charger connection is superseded. Passwords are read
from their file or environment variable at each handshake, so a rotated password
takes effect without a restart and never sits in the config.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import ssl
from dataclasses import dataclass
from http import HTTPStatus

from websockets.datastructures import Headers

from edge_controller.peripherals.config import ChargePointAuth, OcppSettings

# OCPP 1.6 security whitepaper: the AuthorizationKey is 16-40 characters (profile 1/2).
PASSWORD_MIN, PASSWORD_MAX = 16, 40


class SecretError(ValueError):
    """A charger's password cannot be read (missing file or variable, bad length)."""


def read_password(cp: ChargePointAuth) -> str:
    """The charger's password from its file (first line) or environment variable."""
    if cp.password_file is not None:
        try:
            with open(cp.password_file, encoding="utf-8") as f:
                pw = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise SecretError(f"password_file {cp.password_file}: {e}") from None
        where = cp.password_file
    elif cp.password_env is not None:
        pw = os.environ.get(cp.password_env, "")
        where = f"${cp.password_env}"
        if not pw:
            raise SecretError(f"environment variable {cp.password_env} is not set")
    else:
        raise SecretError(f"charge point {cp.id} has no password_file or password_env")
    if not PASSWORD_MIN <= len(pw) <= PASSWORD_MAX:
        raise SecretError(f"{where}: the password must be {PASSWORD_MIN}-{PASSWORD_MAX} "
                          f"characters, not {len(pw)}")
    return pw


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` header; None if absent or bad."""
    if header is None:
        return None
    scheme, _, b64 = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(b64.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, pw = raw.partition(":")
    return (user, pw) if sep else None


def server_tls(settings: OcppSettings) -> ssl.SSLContext | None:
    """The TLS context of security profile 2 (TLS 1.2 or newer, as OCPP requires)."""
    if settings.security_profile != 2:
        return None
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise SecretError(f"TLS certificate {settings.tls_cert_file} / key "
                          f"{settings.tls_key_file} cannot be loaded: {e}") from None
    return ctx



@dataclass(frozen=True)
class Refusal:
    """Why a handshake is refused: the counter's reason, the HTTP answer, the log's detail."""

    reason: str  # unknown_id, no_credentials, bad_credentials, secret_unavailable
    status: HTTPStatus
    body: str
    detail: str


def authorise(settings: OcppSettings, headers: Headers, cp_id: str) -> Refusal | None:
    """None if `cp_id` may connect with a handshake carrying `headers`; else the refusal."""
    allowed = settings.allowed_ids()
    if not cp_id or (allowed and cp_id not in allowed):
        return Refusal("unknown_id", HTTPStatus.NOT_FOUND,
                       "unknown charge point\n", f"charge point {cp_id!r} is not on "
                       f"the allow-list ({', '.join(allowed) or 'any'})")
    if settings.security_profile == 0:
        return None
    auth = settings.auth_for(cp_id)
    assert auth is not None  # profile >= 1 implies an allow-list with credentials
    creds = basic_credentials(headers.get("Authorization"))
    if creds is None:
        return Refusal("no_credentials", HTTPStatus.UNAUTHORIZED,
                       "authentication required\n",
                       f"charge point {cp_id!r} sent no HTTP Basic credentials")
    try:
        password = read_password(auth)
    except SecretError as e:
        return Refusal("secret_unavailable", HTTPStatus.SERVICE_UNAVAILABLE,
                       "charge point credentials unavailable\n", str(e))
    user, given = creds
    # Both compared in constant time, the user name too: it must be the URL's id
    # (OCPP 1.6 security whitepaper), so one charger's password opens no other id.
    ok_user = hmac.compare_digest(user.encode(), cp_id.encode())
    ok_pw = hmac.compare_digest(given.encode(), password.encode())
    if not (ok_user and ok_pw):
        return Refusal("bad_credentials", HTTPStatus.UNAUTHORIZED,
                       "authentication failed\n",
                       f"charge point {cp_id!r}: wrong user name or password")
    return None
