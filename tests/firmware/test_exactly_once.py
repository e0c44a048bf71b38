"""Link commands are applied exactly once on a noisy cable: the real controller link
client (retries) against the real firmware (duplicate suppression), 1 % of bytes
damaged in both directions."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

from polesim.firmware import SimFirmware
from polesim.wire import PtyWire

from edge_controller.config import LinkConfig
from edge_controller.link.client import LinkClient

# Fewer commands than sequence numbers (256), so a (type, seq) that ran twice is a
# double execution, not a wrapped counter.
N = int(__import__("os").environ.get("EO_N", "240"))


def test_commands_run_once_under_one_percent_corruption(fw_build: Path, tmp_path: Path) -> None:
    log = tmp_path / "fw.log"
    with PtyWire() as wire:
        fw = SimFirmware(wire.fw_path, fw_build, log_path=log).start()
        try:
            fw.panel.request({"op": "trace", "on": True})
            # Firmware fail-safe off the table: it would mask nothing, but keep it quiet.
            cfg = LinkConfig(port=wire.ctl_path, ack_timeout_s=0.05, retries=6,
                             lost_after_s=5.0)
            outcomes: list[str] = []

            async def drive() -> None:
                client = LinkClient(cfg, "test", lambda ev: None)
                task = asyncio.create_task(client.run())
                try:
                    for _ in range(200):
                        if client.up:
                            break
                        await asyncio.sleep(0.02)
                    assert client.up
                    wire.faults(flip=0.007, drop=0.003, dup=0.01, seed=7)
                    for i in range(N):
                        out = await asyncio.wait_for(client.command("lamp_set", (i % 101, 0)),
                                                     10)
                        outcomes.append(out.reason)
                    wire.faults()
                finally:
                    task.cancel()
                    await asyncio.wait([task], timeout=5)

            asyncio.run(drive())
            time.sleep(0.3)
            counters = fw.panel.get()["counters"]
        finally:
            fw.stop()
        damaged = wire.damaged
    ran = Counter((int(t), int(s)) for t, s in re.findall(r"ran (\d+) seq (\d+)",
                                                             log.read_text()))
    lamp_runs = {k: v for k, v in ran.items() if k[0] == 0x10}
    ok = outcomes.count("done")
    print(f"exactly-once: {N} commands, {ok} acked, {outcomes.count('timeout')} timed out, "
          f"{damaged} bytes damaged, {counters['dup_acks']} duplicates suppressed, "
          f"{counters['crc_errors'] + counters['framing_errors']} bad frames at the board; "
          f"outcomes {Counter(outcomes)}")
    assert damaged > 0 and counters["dup_acks"] > 0  # the noise did bite, retries happened
    assert max(lamp_runs.values()) == 1, [k for k, v in lamp_runs.items() if v > 1]
    assert ok >= N - 3 and len(lamp_runs) >= ok
