"""docs/install.md: its shell blocks, run in order in a scratch root (DESTDIR) with the
real deploy/install.sh, leave an installed controller, config, unit and log rotation."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from polesim.pole import ROOT

from tests.support import need

DOC = ROOT / "docs" / "install.md"
BLOCK = re.compile(r"(?:<!--\s*test:(?P<note>[^>]*)-->\s*\n)?```sh\n(?P<body>.*?)```", re.S)


def blocks() -> list[tuple[str, bool]]:
    """(body, run?) for every ```sh block of the doc."""
    return [(m.group("body"), "not run" not in (m.group("note") or ""))
            for m in BLOCK.finditer(DOC.read_text())]


def test_doc_has_runnable_and_skipped_blocks() -> None:
    bs = blocks()
    assert sum(run for _, run in bs) >= 3 and sum(not run for _, run in bs) >= 4
    assert any("install.sh" in b for b, run in bs if run)


def _wheelhouse(dest: Path, tmp: Path) -> None:
    """smartpole alone (no dependencies: those come from this venv), built offline."""
    try:
        import wheel  # noqa: F401
    except ImportError:
        need("needs the `wheel` package to build smartpole offline (pip install wheel)")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "edge_controller", src / "edge_controller", ignore=ignore)
    shutil.copytree(ROOT / "tools" / "polectl", src / "tools" / "polectl", ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", "-w", str(dest), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_install_doc_blocks_run_in_a_scratch_root(tmp_path: Path) -> None:
    root, work, bindir = tmp_path / "root", tmp_path / "work", tmp_path / "bin"
    for d in (root, work, bindir):
        d.mkdir()
    for name in ("deploy", "docs"):
        (work / name).symlink_to(ROOT / name)
    _wheelhouse(work / "wheelhouse", tmp_path)
    # `sudo` runs the command as is (we are in a scratch root); `polectl` is the installer's
    # polectl on the laptop (this repository, with the installer commands registered).
    (bindir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bindir / "polectl").write_text(
        f"#!/bin/sh\nPYTHONPATH={ROOT}:{ROOT / 'tools'} exec {sys.executable} -c "
        "'import sys; from tests.tools.conftest import cli_app; sys.argv[0] = \"polectl\"; "
        "cli_app()()' \"$@\"\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    script = "set -euo pipefail\n" + "\n".join(b for b, run in blocks() if run)
    env = {**os.environ,
           "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "DESTDIR": str(root),
           "PYTHON": sys.executable,
           "PIP_INSTALL_ARGS": "--no-deps",
           # The installed venv has smartpole only (--no-deps): its dependencies come from
           # this test's environment.
           "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    out = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log

    # Nothing outside the scratch root was touched: system commands were only printed.
    for cmd in ("useradd --system", "systemctl daemon-reload",
                "systemctl enable pole-controller.service",
                "systemctl restart pole-controller.service", "chown root:smartpole"):
        assert f"skipped (DESTDIR): {cmd}" in log or cmd in log, (cmd, log)
    venv = root / "opt" / "smartpole" / "venv"
    assert (venv / "bin" / "pole-controller").exists() and (venv / "bin" / "polectl").exists()
    found = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import edge_controller, polectl.commission as c; "
                            "print(edge_controller.__file__, c.__file__)"],
                           env=env, capture_output=True, text=True)
    assert found.returncode == 0 and str(venv) in found.stdout, found.stdout + found.stderr
    conf = root / "etc" / "smartpole"
    bundle = work / "bundles" / "pole-0042"
    assert (conf / "pole.toml").read_text() == (bundle / "pole.toml").read_text()
    for f in ("pole.key", "pole.crt", "ca.pem", "identity.json"):
        assert (conf / f).exists(), f
    assert stat.S_IMODE((conf / "pole.key").stat().st_mode) == 0o640
    assert stat.S_IMODE(conf.stat().st_mode) == 0o750
    assert "polectl config check" not in log or "OK" in log
    assert "pole pole-0042" in log  # the config check block's verdict
    unit = (root / "etc" / "systemd" / "system" / "pole-controller.service").read_text()
    assert "ExecStart=/opt/smartpole/venv/bin/pole-controller --config " \
           "/etc/smartpole/pole.toml" in unit
    assert (root / "etc" / "logrotate.d" / "smartpole").exists()
    assert (root / "opt" / "smartpole" / "share" / "doc" / "install.md").exists()


def _unit() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "pole-controller.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    return keys


def test_unit_restart_policy() -> None:
    u = _unit()
    assert u["Restart"] == ["always"]
    assert u["RestartPreventExitStatus"] == ["2"]
    assert "75" in u["SuccessExitStatus"] and "75" in u["RestartForceExitStatus"]
    assert u["User"] == ["smartpole"] and "dialout" in u["SupplementaryGroups"][0]
    assert u["ReadWritePaths"] == ["/var/lib/smartpole /var/log/smartpole"]
    rot = (ROOT / "deploy" / "logrotate.conf").read_text()
    assert "/var/log/smartpole/*.log" in rot and "copytruncate" in rot


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    # Verify a copy whose ExecStart exists and whose user does.
    fake = tmp_path / "pole-controller"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    text = (ROOT / "deploy" / "pole-controller.service").read_text()
    text = text.replace("/opt/smartpole/venv/bin/pole-controller", str(fake))
    text = re.sub(r"^(User|Group)=smartpole$", r"\1=root", text, flags=re.M)
    unit = tmp_path / "pole-controller.service"
    unit.write_text(text)
    out = subprocess.run([exe, "verify", "--man=no", str(unit)], capture_output=True,
                         text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if (str(unit) in line and "Unknown" in line) or "Failed to parse" in line]
    assert not problems, out.stdout + out.stderr
