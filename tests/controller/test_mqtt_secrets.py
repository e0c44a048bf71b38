"""Broker passwords from a file or the environment, never on a command line (issue 17, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_controller.uplink.config import MqttConfig


def test_password_from_a_file_or_the_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "mqtt.pw"
    f.write_text("s3cret\n")
    assert MqttConfig(password_file=f).secret() == "s3cret"
    f.write_text("rotated\n")  # read at each connect
    assert MqttConfig(password_file=f).secret() == "rotated"
    monkeypatch.setenv("POLE_MQTT_PW", "from-env")
    assert MqttConfig(password_env="POLE_MQTT_PW").secret() == "from-env"
    assert MqttConfig(password="inline").secret() == "inline"
    assert MqttConfig().secret() is None


def test_missing_secret_names_where_not_what(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="password_file"):
        MqttConfig(password_file=tmp_path / "nope").secret()
    with pytest.raises(OSError, match=r"\$NOPE_NOT_SET"):
        MqttConfig(password_env="NOPE_NOT_SET").secret()


def test_only_one_source_of_password() -> None:
    with pytest.raises(ValidationError, match="give one of"):
        MqttConfig(password="a", password_env="B")
