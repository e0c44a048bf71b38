"""What every `[mqtt.<profile>]` table has: its own broker (or none, to share the native
connection) and its trust setting. Each profile's settings model extends `ProfileSettings`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from edge_controller.configbase import Section

# The commands a platform that cannot sign may send when its operator allows it: the
# lamp level and the screen text, nothing that reboots, schedules or overrides.
LIMITED_COMMANDS = frozenset({"lamp.set", "screen.text"})


class ProfileSettings(Section):
    url: str | None = Field(
        None, description="The platform's own broker (mqtt://host:port or mqtts://). Unset: "
        "the native broker ([mqtt] url, TLS and credentials); a profile with a last will of "
        "its own (Sparkplug B) opens its own connection there, the others share the native "
        "connection.",
    )
    client_id: str | None = Field(
        None, description="MQTT client id on the own broker; defaults to "
        "'smartpole-<pole id>-<profile>' (or what the platform prescribes).",
    )
    username: str | None = Field(None, description="User name on the own broker.")
    password: str | None = Field(None, description="Password on the own broker.")
    ca_file: Path | None = Field(None, description="CA bundle for an mqtts:// url.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mqtts://.")
    key_file: Path | None = Field(None, description="Client private key (PEM) for mqtts://.")
    accept_unsigned: Literal["none", "limited"] = Field(
        "none", description="Commands from this platform carry no signature of the city's "
        "key. 'none': none is run (each is answered rejected/signature); 'limited': lamp "
        "level and screen text only, even where [commands] require_signature is set.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        try:
            _ = u.port
        except ValueError as e:
            raise ValueError(f"bad port: {e}") from None
        return v

    @property
    def allowed_unsigned(self) -> frozenset[str]:
        return LIMITED_COMMANDS if self.accept_unsigned == "limited" else frozenset()
