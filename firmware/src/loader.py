# The loader, for boards with A/B slot storage (docs/firmware.md, "Slots"):
# picks the slot to boot, puts it first on sys.path, starts the app with the
# update path attached, and resets an image that is not confirmed before
# its trial deadline. main.py hands over to it; like main.py and slots.py it
# is installed once with the factory image (polectl deploy --mpremote) and
# never replaced over the link.

import asyncio
import os
import sys
from time import ticks_add, ticks_ms

import slots
from micropython import const

TYPE_CHECKING = const(False)
if TYPE_CHECKING:
    from typing import Any

_TRIAL_MS = const(60000)  # default; state.json "trial_ms" overrides (1000..3600000)
_REBOOT_EXIT = const(75)  # sim: the exit status SimFirmware answers with a fresh start


def _verify(name: str) -> bool:
    from update import verify

    return verify(name) is not None


def select(root: str, factory: bool) -> int:
    """Choose the slot, put it on sys.path; returns the trial ms (0: no trial).

    Order: a pending slot that verifies boots on trial (the pending flag is
    consumed first, so any reset before confirmation rolls back); else the
    active slot if it verifies; else the factory image if there is one; else
    any slot that verifies.
    """
    slots.ROOT = root
    try:
        os.mkdir(root)
    except OSError:
        pass
    st = slots.load()
    slots.CRASH_AT = str(st.get("crash_at", ""))
    dirty = False
    trial = st.get("trial")
    if trial is not None:
        # The last boot was a trial that never confirmed: roll back.
        st["trial"] = None
        st["rolled_back"] = trial
        dirty = True
    pend = st.get("pending")
    name = None
    ms = 0
    if pend is not None:
        st["pending"] = None
        dirty = True
        if pend in slots.NAMES and _verify(pend):
            st["trial"] = pend
            st["rolled_back"] = None
            name = pend
    if dirty:
        slots.save(st)
    if name is not None:
        slots.crash("boot:trial")
        ms = st.get("trial_ms", _TRIAL_MS)
        ms = ms if isinstance(ms, int) and 1000 <= ms <= 3600000 else _TRIAL_MS
        slots.TRIAL_END = ticks_add(ticks_ms(), ms)
    else:
        act = st.get("active")
        if act in slots.NAMES and _verify(act):
            name = act
        elif not factory:
            for n in slots.NAMES:
                if _verify(n):
                    name = n
                    break
    # The verifier came from the factory image: the app's update.py must come
    # from the slot that boots.
    sys.modules.pop("update", None)
    slots.BOOTED = name
    if name is not None:
        sys.path.insert(0, root + "/" + name)
    return ms


def _app(app_cls: "Any", hal: "Any") -> "Any":
    from update import Updater

    app_cls.upd = Updater()  # before the app exists: its boot hello reports the state
    return app_cls(hal)


async def _run(app: "Any", trial_ms: int) -> None:
    if trial_ms:
        asyncio.create_task(_deadline(app, trial_ms))
    await app.run()


async def _deadline(app: "Any", ms: int) -> None:
    await asyncio.sleep_ms(ms)
    if slots.TRIAL_END is not None:  # update.py clears it on confirmation
        app.hal.log("update: slot %s not confirmed in %d ms: rollback" % (slots.BOOTED, ms))
        app.hal.reset()


def _reboot() -> None:
    # The sim's reset with slots: end the process; SimFirmware starts a new
    # one, which boots the selected slot with a fresh heap, as a board does.
    sys.exit(_REBOOT_EXIT)


def sim(link_path: str, panel_path: str, settings_path: "str | None", board: str,
        root: str) -> None:
    trial_ms = select(root, True)  # the build directory is the factory image
    try:
        from app import App
        from hal_sim import Hal

        hal = Hal(link_path, panel_path, settings_path, board)
        setattr(hal, "reset", _reboot)  # noqa: B010 - a reset restarts the process
        asyncio.run(_run(_app(App, hal), trial_ms))
    except Exception as e:
        if slots.BOOTED is None:
            raise
        print("loader: slot %s cannot start: %r" % (slots.BOOTED, e))
        _reboot()  # as the board's reset does: a trial rolls back


def board() -> None:
    try:
        os.stat("/app.mpy")
        factory = True
    except OSError:
        factory = False
    trial_ms = select("/slots", factory)
    try:
        from app import App
        from hal_esp32 import Hal

        asyncio.run(_run(_app(App, Hal()), trial_ms))
    except Exception as e:  # a slot that cannot start: the reset rolls a trial back
        print("loader: %r" % (e,))
        import machine

        machine.reset()
