"""Commands to poles as a backend sends them: the envelope built and checked through
`edge_controller.api.Envelope`, signed with the city's Ed25519 key when there is one.

A signed command is bound to its pole (`pole_id`) and carries `expires_at`
(docs/security.md, "Commands"); the signature covers `signed_bytes` of the envelope,
the same function the pole verifies with. Used by `polectl commission` and
`polectl ingest` (fleet-sim's poles verify with `TrustPolicy`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge_controller.api import Envelope
from edge_controller.clock import utc_iso
from edge_controller.update.signing import KeyFileError, load_private
from edge_controller.uplink.trust import signed_bytes

Signer = Callable[[bytes], bytes]


def load_signer(path: Path) -> Signer:
    """The private half of a command key (unencrypted Ed25519 PEM); ValueError says why not."""
    try:
        return load_private(path).sign
    except (OSError, KeyFileError) as e:
        raise ValueError(f"{path}: not a readable Ed25519 PEM private key ({e})") from None


def command(cid: str, body: BaseModel, pole_id: str, lifetime_s: float,
            signer: Signer | None = None) -> bytes:
    """The payload of a command for `pole_id`, valid for `lifetime_s` from now; signed (and
    then bound to the pole) when `signer` is given. Checked against the API's `Envelope`
    (pydantic's ValidationError if it is not a command the API defines); the bytes
    published are the ones signed."""
    now = time.time()
    env: dict[str, Any] = {"id": cid, "issued_at": utc_iso(now),
                           "expires_at": utc_iso(now + lifetime_s),
                           "body": body.model_dump(mode="json", exclude_none=True)}
    if signer is not None:
        env["pole_id"] = pole_id
        env["sig"] = base64.b64encode(signer(signed_bytes(env))).decode()
    Envelope.model_validate(env)
    return json.dumps(env, separators=(",", ":")).encode()
