"""Visibility-aware dimming (docs/dimming.md): `config` ([visibility], [dimming]),
`estimator` (MOR from the camera), `policy` (sans-I/O dimming decisions),
`commands` (lamp.override, dimming.schedule bodies), `service` (the live
`visibility` and `dimming` tasks)."""
