"""`[mqtt]`: the upstream broker."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edge_controller.configbase import Section as _Section


class MqttConfig(_Section):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto",
        description="MQTT version: 'auto' tries 5 and falls back to 3.1.1 if the broker "
        "refuses it.",
    )
    topic_root: str = Field(
        "smartpole/v1", description="Topic prefix; the API version is part of it."
    )
    client_id: str | None = Field(
        None, description="MQTT client id; defaults to 'smartpole-<pole id>'."
    )
    username: str | None = Field(None, description="Broker user name, if the broker wants one.")
    password: str | None = Field(
        None, description="Broker password written in the config file (discouraged: prefer "
        "password_file or password_env; `polectl config check` warns).")
    password_file: Path | None = Field(
        None, description="File whose first line is the broker password (keep it "
        "root:smartpole 0640); read at each connect, so a rotated password needs no restart.")
    password_env: str | None = Field(
        None, description="Environment variable holding the broker password (e.g. from "
        "systemd's EnvironmentFile= or LoadCredential=); read at each connect.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    timeout_s: float = Field(
        10.0, gt=0, le=120,
        description="Time to wait for the broker to answer a CONNECT or acknowledge a publish; "
        "with protocol 'auto', a broker silent this long on an MQTT 5 CONNECT gets 3.1.1.",
    )
    reconnect_min_s: float = Field(
        0.5, gt=0, le=60, description="First reconnect delay; doubles per failure with jitter."
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, le=3600, description="Largest reconnect delay."
    )
    ca_file: Path | None = Field(None, description="CA bundle for mqtts:// (system CAs if unset).")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mqtts://.")
    key_file: Path | None = Field(None, description="Client private key (PEM) for mqtts://.")
    profiles: list[str] = Field(
        default_factory=lambda: ["native"],
        description="Backend profiles the pole speaks at once: 'native' (this API, "
        "docs/mqtt.md), 'homeassistant', 'thingsboard', 'sparkplug_b', 'huawei_iotda'; each "
        "other profile has its own [mqtt.<name>] table, "
        "connection and queue (docs/backends.md). Without 'native' the connection only "
        "carries state and the last will.",
    )

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, v: list[str]) -> list[str]:
        # Which names exist is known only to the profile registry (checked by Config).
        if not v:
            raise ValueError("name at least one profile (default: [\"native\"])")
        if len(set(v)) != len(v):
            raise ValueError("a profile is listed twice")
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
                raise ValueError(f"{name!r} is not a profile name")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        try:
            _ = u.port
        except ValueError as e:
            raise ValueError(f"bad port: {e}") from None
        return v

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        given = [k for k in ("password", "password_file", "password_env") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one of {', '.join(given)}")
        return self

    def secret(self) -> str | None:
        """The broker password, from wherever the config says (never logged).

        A file or variable that is missing is an error at connect (OSError/KeyError
        message names it, not its content)."""
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as e:
                raise OSError(f"mqtt.password_file {self.password_file}: {e.strerror}") from None
            return text.splitlines()[0] if text else ""
        if self.password_env is not None:
            val = os.environ.get(self.password_env)
            if val is None:
                raise OSError(f"mqtt.password_env: ${self.password_env} is not set")
            return val
        return self.password

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @field_validator("topic_root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", v):
            raise ValueError("must be plain topic levels without wildcards or a trailing '/'")
        return v

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        u = urlsplit(self.url)
        return u.port or (8883 if u.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"
