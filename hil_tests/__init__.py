"""Hardware-in-the-loop tests: a simulated pole by default, a real rig with --target serial:PORT."""
