"""Files the config names, checked before the controller starts: the detector models,
the warning clips and the keys. A missing or unusable one is a config error (file, key,
path and reason; exit 2), not a traceback from deep inside a task."""

from __future__ import annotations

import wave
from pathlib import Path

from edge_controller.config import Config


def _readable(key: str, path: Path, problems: list[tuple[str, str]]) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        problems.append((key, f"{path}: {e.strerror or e}"))
        return False
    return True


def _model(cfg: Config, problems: list[tuple[str, str]]) -> None:
    path = Path(cfg.detector.model)
    if not _readable("detector.model", path, problems):
        return
    from edge_controller.detect.model import Model  # onnxruntime: only when crossing runs

    try:
        Model(cfg.detector)
    # onnxruntime's errors derive from Exception only; this try holds nothing but the load.
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        problems.append(("detector.model", f"{path}: not a usable {cfg.detector.kind!r} "
                         f"ONNX model ({type(e).__name__}: {first})"))


def _nanodet(cfg: Config, problems: list[tuple[str, str]]) -> None:
    ll = cfg.detector.nanodet
    if not (ll.enabled and ll.use_when):
        return
    path = Path(ll.model)
    if not _readable("detector.nanodet.model", path, problems):
        return
    from edge_controller.detect.nanodet import NanoDet

    try:
        NanoDet(path)
    # onnxruntime's errors derive from Exception only; this try holds nothing but the load.
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        problems.append(("detector.nanodet.model", f"{path}: not a usable NanoDet ONNX "
                         f"model ({type(e).__name__}: {first})"))


def _clip(key: str, path: Path, problems: list[tuple[str, str]]) -> None:
    if not _readable(key, path, problems):
        return
    try:
        with wave.open(str(path), "rb") as w:
            width = w.getsampwidth()
    except (wave.Error, EOFError) as e:
        problems.append((key, f"{path}: not a WAV file ({e})"))
        return
    if width != 2:
        problems.append((key, f"{path}: {8 * width}-bit samples; clips must be 16-bit PCM"))


def _public_key(path: Path, problems: list[tuple[str, str]]) -> None:
    if not _readable("commands.public_key", path, problems):
        return
    from edge_controller.uplink.trust import load_public_key

    try:
        load_public_key(path)
    except (ValueError, TypeError) as e:
        problems.append(("commands.public_key", f"{path}: not an Ed25519 public key in PEM "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"))


def check_files(cfg: Config) -> list[tuple[str, str]]:
    """(key, reason) for every file the config needs that is missing or unusable."""
    problems: list[tuple[str, str]] = []
    if cfg.crossing.enabled:
        _model(cfg, problems)
        _nanodet(cfg, problems)
        from edge_controller.crossing.audio import DEFAULT_CLIPS

        for i, z in enumerate(cfg.zones):
            if z.clips:
                for j, clip in enumerate(z.clips):
                    _clip(f"zones.{i}.clips.{j}", Path(clip), problems)
        defaults = [i for i, z in enumerate(cfg.zones) if not z.clips]
        if defaults:
            for clip in DEFAULT_CLIPS:
                _clip(f"zones.{defaults[0]}.clips (empty: the packaged clip)", clip, problems)
    for key in ("ca_file", "cert_file", "key_file"):
        p = getattr(cfg.mqtt, key)
        if p is not None:
            _readable(f"mqtt.{key}", Path(p), problems)
    if cfg.commands.public_key is not None:
        _public_key(Path(cfg.commands.public_key), problems)
    return problems
