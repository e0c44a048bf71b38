"""Files the config names (model, clips, keys) are checked at start-up: a missing or
unusable one is a config error naming the file, the key and the path, exit 2, and no
traceback. Defaults come from the package, not the working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_controller import resources
from edge_controller.crossing.audio import DEFAULT_CLIPS
from edge_controller.detect.config import SSD_INT8, DetectorConfig
from edge_controller.main import main

ROOT = Path(__file__).resolve().parents[2]

CROSSING = """
[pole]
id = "pole-0001"
[queue]
path = ":memory:"
[camera]
source = "file:/nonexistent.mp4"
[crossing]
enabled = true
[[zones]]
name = "z"
kind = "carriageway"
polygon = [[0, 0], [10, 0], [10, 10]]
"""


def _run(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str],
         *extra: str) -> tuple[int, str, str]:
    cfg = tmp_path / "pole.toml"
    cfg.write_text(text)
    rc = main(["--config", str(cfg), *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err.replace(str(cfg), "CFG")


def test_defaults_are_package_data_not_relative_to_cwd(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SSD_INT8.is_absolute() and SSD_INT8.is_file()
    assert DetectorConfig().model == SSD_INT8
    assert all(c.is_absolute() and c.is_file() for c in DEFAULT_CLIPS)
    # One copy in the repository: the package's paths are links to models/ and docs/api.
    assert SSD_INT8.resolve() == (ROOT / "models" / SSD_INT8.name).resolve()
    for kind in resources.schema_kinds():
        assert resources.schema(kind)["$id"].endswith(f"/{kind}.schema.json")
    assert len(resources.schema_kinds()) == len(os.listdir(ROOT / "docs" / "api" / "schemas"))


def test_missing_model_and_clip_name_key_and_path(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    text = CROSSING.replace('[crossing]', '[detector]\nmodel = "/nonexistent/m.onnx"\n'
                            '[crossing]') + f'clips = ["{tmp_path}/nope.wav"]\n'
    rc, _, err = _run(tmp_path, text, capsys)
    assert rc == 2
    assert "CFG: detector.model: /nonexistent/m.onnx: No such file or directory" in err
    assert f"CFG: zones.0.clips.0: {tmp_path}/nope.wav: No such file or directory" in err


def test_unusable_model_clip_and_key(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(512))
    text = (CROSSING.replace('[crossing]', f'[detector]\nmodel = "{junk}"\n[commands]\n'
                             f'public_key = "{junk}"\n[crossing]')
            + f'clips = ["{junk}"]\n')
    rc, _, err = _run(tmp_path, text, capsys)
    assert rc == 2
    assert f"CFG: detector.model: {junk}: not a usable 'ssd' ONNX model" in err
    assert f"CFG: zones.0.clips.0: {junk}: not a WAV file" in err
    assert f"CFG: commands.public_key: {junk}: not an Ed25519 public key" in err


def test_unreadable_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A folder where the key should be: unreadable even for root (CI runs as root).
    key = tmp_path / "pole.key"
    key.mkdir()
    rc, _, err = _run(tmp_path, f'[pole]\nid = "pole-0001"\n[mqtt]\nkey_file = "{key}"\n',
                      capsys)
    assert rc == 2 and f"CFG: mqtt.key_file: {key}: Is a directory" in err


def test_check_config_validates_values_only(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # The key is missing, but an installer may check a config staged under another root.
    rc, out, _ = _run(tmp_path, f'[pole]\nid = "pole-0001"\n[mqtt]\nkey_file = "{tmp_path}/k"\n',
                      capsys, "--check-config")
    assert rc == 0 and "OK CFG: pole pole-0001" in out.replace(str(tmp_path / "pole.toml"), "CFG")
    rc, _, err = _run(tmp_path, '[pole]\nid = "Bad Id"\n', capsys, "--check-config")
    assert rc == 2 and "CFG: pole.id:" in err
