"""Host-side simulation of the pole I/O board: pty cable, firmware process, sim panel."""
