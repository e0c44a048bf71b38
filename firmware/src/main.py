# Entry point. On the board MicroPython runs main.py at boot (as __main__);
# the simulator imports this module and calls run_sim() with its pty paths.
# The HAL is chosen here and only here, so no other module touches `machine`.

import sys


def run_sim(link_path: str, panel_path: str, settings_path: str | None = None,
            board: str = "sim-00000001") -> None:
    import asyncio

    from app import App
    from hal_sim import Hal

    asyncio.run(App(Hal(link_path, panel_path, settings_path, board)).run())


def run() -> None:
    if sys.platform == "esp32":
        import asyncio

        from app import App
        from hal_esp32 import Hal

        asyncio.run(App(Hal()).run())
    else:
        # Unix port by hand: micropython main.py LINK_PTY PANEL_PTY [SETTINGS]
        argv = sys.argv
        if len(argv) < 3:
            print("usage: micropython main.py LINK_PTY PANEL_PTY [SETTINGS_JSON]")
            sys.exit(2)
        run_sim(argv[1], argv[2], argv[3] if len(argv) > 3 else None)


if __name__ == "__main__":
    run()
