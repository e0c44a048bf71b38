"""python -m polectl.fleet fleet-sim|ingest (what bench/fleet_bench.py runs)."""

from polectl.fleet.cli import app

app()
