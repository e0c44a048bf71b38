"""`polectl commission`: the checklist an installer runs against a live pole before leaving it.

    polectl commission --config /etc/smartpole/pole.toml --out reports/

Over MQTT, as the city backend would see the pole (the config names the broker, the
pole id, the telemetry interval, the camera and the zones):

| check | passes when | otherwise |
| --- | --- | --- |
| `link` | retained state `online`, birth with the firmware (the link said hello), \
telemetry `link.up`, same link protocol and controller major versions | fail |
| `mqtt` | a `ping` is answered `ok` (round trip < 1 s; < 5 s warns) | fail |
| `clock` | telemetry `clock.synced` | warn (NTP) |
| `sensors` | lux, temperature, tilt plausible, mains present, door shut | warn / fail |
| `lamp` | each `lamp.set` of the dimming sweep is `ok` and telemetry follows | fail |
| `snapshot` | a local frame from the configured camera, anonymised | warn |
| `camera` | telemetry camera healthy, frames advancing, expected size | fail / skip |
| `zones` | every zone point inside the frame | fail (warn: no zones) |

Writes `commission-<pole>-<UTC time>.json` (the report), `.html` (the same, for
people, with the snapshot and the zones drawn on it) and `.jpg` (the snapshot).
Exit code 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for a
config or usage error.

Modules: `probe` (the MQTT view of the pole), `checks` (the checklist), `report` (JSON
and HTML), `cli` (the command); the snapshot is `polectl.snapshot` (shared with
`polectl calibrate`).
"""
