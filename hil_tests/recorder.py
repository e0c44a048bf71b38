"""An independent subscriber process: records (pole_id, seq, kind) of every record it gets.

Runs as its own process with a persistent MQTT session (clean_session off, QoS 1), so
it keeps receiving across broker restarts (with broker persistence on). It imports
nothing from the product. One JSON line per message, flushed at once.

    python -m hil_tests.recorder --port 1883 --topic 'smartpole/v1/+/+' --out rec.jsonl
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--client-id", default="hil-recorder")
    args = ap.parse_args()
    out = open(args.out, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(m.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and "seq" in doc:
            out.write(json.dumps({"pole": doc.get("pole_id"), "seq": doc["seq"],
                                  "kind": m.topic.rsplit("/", 1)[-1], "dup": m.dup}) + "\n")

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        # The harness waits on this file to know the observer is listening again.
        with open(args.out + ".subscribed", "a") as fh:
            fh.write("1\n")

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        c.subscribe(args.topic, qos=1)
        print(f"recorder connected ({rc})", file=sys.stderr, flush=True)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id,
                    protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.reconnect_delay_set(0.2, 1.0)
    signal.signal(signal.SIGTERM, lambda *_: (c.disconnect(), sys.exit(0)))
    while True:
        try:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600  # keep the session across broker restarts
            c.connect("127.0.0.1", args.port, keepalive=10, clean_start=False,
                      properties=props)
            break
        except OSError:
            time.sleep(0.2)
    c.loop_forever(retry_first_connection=True)


if __name__ == "__main__":
    main()
