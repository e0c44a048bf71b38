"""A broker for the simulated pole and the HIL tests: real mosquitto when it can, amqtt otherwise.

`start_broker("auto")` prefers mosquitto (on a free loopback port, its own
config, no persistence, the shipped config's queue limits: 10,000 messages per
client, no byte limit); with `allow_apt` and root it installs mosquitto
through apt-get first; failing both it runs the embedded amqtt broker (MQTT
3.1.1 only, which also exercises the controller's fallback from MQTT 5) in a
child process. amqtt has no per-client queue limit: it queues without bound, in
memory (docs/mqtt.md, broker settings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["auto", "mosquitto", "embedded"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, within_s: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {within_s} s")


@dataclass
class Broker:
    kind: Literal["mosquitto", "embedded"]
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    argv: list[str] = field(default_factory=list)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (SIGTERM, as an operator or a crash-restarting service would) and start
        again on the same port and config; with persistence on, sessions survive."""
        self.kill()
        time.sleep(down_s)
        self.start_again()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def start_again(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port, 10, self.proc)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None,
    )


def apt_install_mosquitto() -> bool:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mosquitto"]):
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            return False
    return mosquitto_path() is not None


def start_mosquitto(port: int | None = None, extra_conf: str = "",
                    persistence: bool = False) -> Broker:
    exe = mosquitto_path()
    if exe is None:
        raise FileNotFoundError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = port or free_port()
    tmp = tempfile.TemporaryDirectory(prefix="smartpole-mosquitto-")
    work = Path(tmp.name)
    log = work / "mosquitto.log"
    conf = work / "mosquitto.conf"
    conf.write_text(
        ""
        # As root, mosquitto drops to its own user, which cannot write our 0700 temp dir.
        + ("user root\n" if os.geteuid() == 0 else "") +
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        + (f"persistence true\npersistence_location {work}/\nautosave_interval 1\n"
           if persistence else "persistence false\n") +
        "set_tcp_nodelay true\n"
        # As deploy/mosquitto/smartpole.conf: a burst of commands is queued for the pole,
        # not dropped (the default of 1,000 lost 580 of a 2,000-command burst).
        "max_queued_messages 10000\nmax_queued_bytes 0\n"
        f"log_dest file {log}\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
        "log_timestamp true\n" + extra_conf
    )
    argv = [exe, "-c", str(conf)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    b = Broker("mosquitto", port, proc, work, log, tmp, argv)
    try:
        wait_port(port, 10, proc)
    except Exception:
        b.stop()
        raise
    return b


def start_embedded(port: int | None = None) -> Broker:
    port = port or free_port()
    tmp = tempfile.TemporaryDirectory(prefix="smartpole-amqtt-")
    work = Path(tmp.name)
    log = work / "amqtt.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "polesim.broker", "--serve-embedded", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    b = Broker("embedded", port, proc, work, log, tmp)
    try:
        wait_port(port, 20, proc)
    except Exception:
        b.stop()
        raise
    return b


def start_broker(mode: Mode = "auto", allow_apt: bool = False, port: int | None = None) -> Broker:
    if mode == "embedded":
        return start_embedded(port)
    if mode == "mosquitto":
        return start_mosquitto(port)
    if mosquitto_path() is None and allow_apt:
        apt_install_mosquitto()
    if mosquitto_path() is not None:
        return start_mosquitto(port)
    return start_embedded(port)


async def _serve_embedded(port: int) -> None:
    from amqtt.broker import Broker as AmqttBroker

    broker = AmqttBroker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description="Run the embedded MQTT broker (amqtt).")
    p.add_argument("--serve-embedded", type=int, metavar="PORT", required=True)
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_embedded(args.serve_embedded))


if __name__ == "__main__":
    main()
