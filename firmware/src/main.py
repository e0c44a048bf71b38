# Entry point. On the board MicroPython runs main.py at boot (as __main__);
# the simulator imports this module and calls run_sim() with its pty paths.
# The HAL is chosen here, or in loader.py: a board with A/B slot storage
# (always on the ESP32; `slots=DIR` in the sim) starts through the loader,
# which picks the slot before importing anything from it.

import sys


def run_sim(link_path: str, panel_path: str, settings_path: str | None = None,
            board: str = "sim-00000001", slots: str | None = None) -> None:
    if slots is not None:
        import loader

        loader.sim(link_path, panel_path, settings_path, board, slots)
        return
    import asyncio

    from app import App
    from hal_sim import Hal

    asyncio.run(App(Hal(link_path, panel_path, settings_path, board)).run())


def run() -> None:
    if sys.platform == "esp32":
        import loader  # /slots on the flash filesystem

        loader.board()
    else:
        # Unix port by hand: micropython main.py LINK_PTY PANEL_PTY [SETTINGS [SLOTS_DIR]]
        argv = sys.argv
        if len(argv) < 3:
            print("usage: micropython main.py LINK_PTY PANEL_PTY [SETTINGS_JSON [SLOTS_DIR]]")
            sys.exit(2)
        run_sim(argv[1], argv[2], argv[3] if len(argv) > 3 and argv[3] else None,
                slots=argv[4] if len(argv) > 4 else None)


if __name__ == "__main__":
    run()
