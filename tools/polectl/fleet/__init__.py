"""`polectl fleet-sim` and `polectl ingest`: a simulated city against a broker, and the
reference backend consumer that reads it.

`fleet-sim` runs N poles in one asyncio process. Each pole is one MQTT 5
connection (paho-mqtt driven by the asyncio loop, `mqtt.py`): it connects with a last will (retained
`offline/connection_lost`), a session expiry interval (the broker keeps its
`cmd` subscription and queued commands across a short outage), publishes the
retained `state` and `birth` (discovery), telemetry every interval and
scripted events, and answers commands on `cmd` exactly as the controller does
(the controller's own sans-I/O validation, `expires_at` included). No camera.

`ingest` is what a backend worker looks like: a shared subscription
`$share/<group>/<root>/+/{telemetry,events,cmd/result}` (start several
workers with the same group and the broker spreads the load), an ordinary
subscription to the retained `state` and `birth` for discovery, a persistent
session (session expiry) so a restarted worker loses nothing queued for it,
per-pole summaries and publish-to-consume latency (receive time minus the
message's `ts`). With `--command-rate` it also sends commands to discovered
poles with an MQTT 5 message expiry interval, so a stale command never
reaches a pole that comes back late, and matches their results.

Both print JSON with `--json` and write a report file with `--report`, which
`bench/fleet_bench.py` compares for loss.

Modules: `mqtt` (the connection), `script` (scripted steps), `pole` (one simulated
pole), `city` (the whole fleet's run), `ingest` (the consumer), `cli` (the commands).
"""
