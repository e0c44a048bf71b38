"""The reference replays' detector passes (the suite's longest CPU work: the whole clip,
four model builds) start in the background as soon as the session is collected, and
the reference tests run last, so the passes overlap the many tests that mostly wait
(real-time video, brokers, deadlines) instead of adding their time to the suite's."""

from __future__ import annotations

import sys

import pytest

REF = "tests/crossing/test_replay_reference.py::"
NEEDS_PASSES = (REF + "test_replay_finds", REF + "test_perturbed")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ref = [i for i in items if i.nodeid.startswith(REF)]
    if ref:
        items[:] = [i for i in items if not i.nodeid.startswith(REF)] + ref


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(
            i.nodeid.startswith(NEEDS_PASSES) for i in session.items):
        from tests.crossing import test_replay_reference

        test_replay_reference.start_background()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    mod = sys.modules.get("tests.crossing.test_replay_reference")
    if mod is not None:
        mod.stop_background()
