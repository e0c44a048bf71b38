"""What a pole runs is the installed wheel: build it, install it into a clean venv (no
source tree on the path, only `smartpole` and its runtime dependencies), and run
`pole-controller` from it against a real mosquitto, with a file camera, crossing on and
warnings played through ALSA's `null` device; then add `[installer]` and run `polectl`.

Costs ~40 s on a 2-core machine, most of it pip installing the dependencies (from pip's
cache or the index) into the new venv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest
from polesim.broker import Broker, mosquitto_path, start_mosquitto
from polesim.pole import render_toml

from hil_tests.capture import Capture
from tests.api.schemas import validate_message

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pets09-s2l1-0-119.mp4"
POLE = "wheel-0001"
# Files the pole needs at run time, as the wheel must hold them -> their source here.
PACKAGE_DATA = {
    "edge_controller/models/ssdlite_mobilenet_v2_coco_int8.onnx":
        ROOT / "models" / "ssdlite_mobilenet_v2_coco_int8.onnx",
    "edge_controller/assets/audio/warning_en.wav":
        ROOT / "edge_controller" / "assets" / "audio" / "warning_en.wav",
    "edge_controller/assets/audio/warning_cmn.wav":
        ROOT / "edge_controller" / "assets" / "audio" / "warning_cmn.wav",
    **{f"edge_controller/api/schemas/{p.name}": p
       for p in sorted((ROOT / "docs" / "api" / "schemas").glob("*.schema.json"))},
}
INSTALLER_ONLY = ("typer", "rich", "esptool")
# The middle of the road in the sample clip (as in the crossing HIL test).
ZONE = [[300, 190], [560, 175], [640, 300], [600, 420], [420, 330], [300, 290]]


def _clean_env() -> dict[str, str]:
    """The environment of a process on a pole: nothing pointing at this checkout."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel .` of a copy of the checkout: stale build/ or *.egg-info folders here
    cannot leak into it, and the build writes nothing into the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache",
        ".hypothesis", "samples", "run"))
    t0 = time.monotonic()
    out = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                str(tmp / "dist"), str(src)], tmp)
    assert out.returncode == 0, out.stdout + out.stderr
    print(f"wheel built in {time.monotonic() - t0:.1f} s")
    (whl,) = (tmp / "dist").glob("smartpole-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(built: Path) -> Path:
    """A venv with nothing but `smartpole` from the wheel and its runtime dependencies."""
    v = built.parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(v)], check=True)
    t0 = time.monotonic()
    out = _run([sys.executable, "-m", "pip", "--python", str(v / "bin" / "python"), "install",
                "-q", "--disable-pip-version-check", str(built)], built.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    print(f"clean venv installed in {time.monotonic() - t0:.1f} s")
    return v


def test_wheel_ships_models_clips_and_schemas(built: Path) -> None:
    with zipfile.ZipFile(built) as z:
        names = set(z.namelist())
        for inside, source in PACKAGE_DATA.items():
            assert inside in names, inside
            assert z.read(inside) == source.read_bytes(), f"{inside} differs from {source}"
        assert "edge_controller/models/ssdlite_mobilenet_v2_coco.onnx" not in names  # fp32
        meta = HeaderParser().parsestr(
            z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    requires = meta.get_all("Requires-Dist") or []
    runtime = [r for r in requires if "extra ==" not in r]
    for mod in INSTALLER_ONLY:
        assert not any(r.startswith(mod) for r in runtime), runtime
        assert any(r.startswith(mod) and 'extra == "installer"' in r for r in requires), mod
    assert {"installer", "sim", "dev"} <= set(meta.get_all("Provides-Extra") or [])


def test_clean_venv_has_the_runtime_only(venv: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, importlib.metadata as m, json, sys\n"
        "import edge_controller, edge_controller.app, edge_controller.main\n"
        "from edge_controller import resources\n"
        "from edge_controller.version import __version__\n"
        "print(json.dumps({'file': edge_controller.__file__, 'path': sys.path,\n"
        "  'missing': [n for n in sys.argv[1:] if importlib.util.find_spec(n) is None],\n"
        "  'loaded': sorted(n for n in sys.modules\n"
        "                   if n.startswith(('polectl', 'polesim'))),\n"
        "  'version': __version__, 'meta': m.version('smartpole'),\n"
        "  'model': str(resources.path(resources.DETECTOR_MODEL)),\n"
        "  'kinds': resources.schema_kinds()}))\n"
    )
    out = _run([str(venv / "bin" / "python"), "-c", probe, *INSTALLER_ONLY], tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["file"].startswith(str(venv)), r["file"]
    assert not any(p.startswith(str(ROOT)) for p in r["path"]), r["path"]
    assert r["missing"] == list(INSTALLER_ONLY)  # the pole does not carry the installer's tools
    assert r["loaded"] == []  # the controller imports neither polectl nor the simulator
    assert r["version"] == r["meta"] == "0.1.0"
    assert r["model"].startswith(str(venv)) and Path(r["model"]).stat().st_size > 1_000_000
    assert r["kinds"] == sorted(p.name.removesuffix(".schema.json")
                                for p in (ROOT / "docs" / "api" / "schemas").glob("*.json"))
    # Without [installer] the polectl script says what to install, with exit 2.
    pc = _run([str(venv / "bin" / "polectl"), "--help"], tmp_path)
    assert pc.returncode == 2 and "smartpole[installer]" in pc.stderr, pc.stderr


@pytest.fixture
def broker() -> Iterator[Broker]:
    # CI installs mosquitto (.ci/run); a missing broker is a failure, never a skip.
    assert mosquitto_path() is not None, "mosquitto is not installed (apt-get install mosquitto)"
    b = start_mosquitto()
    yield b
    b.stop()


def _config(tmp: Path, broker: Broker) -> Path:
    now = time.time() % 86400
    cfg = {
        "pole": {"id": POLE},
        # No I/O board on this machine: the link task retries, the rest of the pole runs.
        "link": {"port": str(tmp / "no-board")},
        "mqtt": {"url": broker.url},
        "telemetry": {"interval_s": 2.0},
        "queue": {"path": str(tmp / "queue.sqlite3")},
        "camera": {"enabled": True, "source": f"file:{SAMPLE}", "on_end": "loop"},
        "zones": [{"name": "mid-road", "kind": "carriageway", "polygon": ZONE}],
        # Red since 30 s ago for the rest of the day: every entry into the zone is a violation.
        "signal": {"source": "plan", "plan": {"red_s": 86000.0, "green_s": 400.0,
                                              "offset_s": (now - 30.0) % 86400}},
        "crossing": {"enabled": True, "grace_s": 1.0},
        "audio": {"device": "null", "cooldown_s": 3.0},
    }
    path = tmp / "pole.toml"
    path.write_text(render_toml(cfg))
    return path


@pytest.mark.skipif(shutil.which("aplay") is None, reason="needs aplay (alsa-utils)")
def test_installed_pole_controller_runs_a_pole(venv: Path, broker: Broker,
                                               tmp_path: Path) -> None:
    config = _config(tmp_path, broker)
    cap = Capture("127.0.0.1", broker.port, f"smartpole/v1/{POLE}/#")
    log = tmp_path / "controller.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(venv / "bin" / "pole-controller"), "--config", str(config)],
                                cwd=tmp_path, env=_clean_env(), stdout=fh,
                                stderr=subprocess.STDOUT)

    def processed(m: Any) -> bool:
        if m.kind != "telemetry":
            return False
        det = (m.json().get("crossing") or {}).get("detector") or {}
        return int(det.get("frames_processed", 0)) > 0

    def played(m: Any) -> bool:
        return m.kind == "events" and bool(m.json()["event"] == "warning_played")

    try:
        t0 = time.monotonic()
        birth = cap.wait_for(lambda m: m.kind == "birth", 30)
        tel = cap.wait_for(processed, 40)
        warn = cap.wait_for(played, 60)
        time.sleep(max(0.0, 20.0 - (time.monotonic() - t0)))  # about 20 s of running
        assert proc.poll() is None, log.read_text()[-4000:]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        cap.close()
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    b = birth.json()
    assert b["controller_version"] == built_version(venv)
    assert b["firmware"] is None and "camera" in b["capabilities"]
    for m in (birth, tel, warn):
        validate_message(m.topic, m.payload)
    w = warn.json()["detail"]
    assert w["ok"] and w["clips"] == ["warning_en.wav", "warning_cmn.wav"], w
    # SIGTERM: the last state is a retained "offline" published by the controller itself.
    states = [m.json() for m in cap.of_kind("state")]
    assert states and states[-1]["state"] == "offline", states


def built_version(venv: Path) -> str:
    (dist,) = (venv / "lib").glob("python3.*/site-packages/smartpole-*.dist-info")
    return dist.name.removeprefix("smartpole-").removesuffix(".dist-info")


def test_installer_extra_brings_polectl(built: Path, venv: Path, tmp_path: Path) -> None:
    out = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                "install", "-q", "--disable-pip-version-check", f"{built}[installer]"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    h = _run([str(venv / "bin" / "polectl"), "--help"], tmp_path)
    assert h.returncode == 0, h.stderr
    for cmd in ("config", "provision", "flash", "commission"):
        assert cmd in h.stdout, (cmd, h.stdout)
