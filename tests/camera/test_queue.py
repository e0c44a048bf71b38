"""FrameQueue: exact drop-oldest semantics, counted drops, lossless blocking mode, close."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from edge_controller.camera.source import Frame, FrameQueue
from tests.camera.conftest import blank

IMG = blank(1, 1)


def frame(i: int) -> Frame:
    return Frame(i, i / 10, IMG)


def drain(q: FrameQueue) -> list[int]:
    out = []
    while (f := q.get_nowait()) is not None:
        out.append(f.index)
    return out


def test_full_queue_drops_exactly_the_oldest_and_counts_it() -> None:
    q = FrameQueue(3)
    for i in range(3):
        assert q.put(frame(i))
    assert (len(q), q.dropped) == (3, 0)
    assert q.put(frame(3))
    assert (len(q), q.dropped) == (3, 1)
    for i in range(4, 10):
        q.put(frame(i))
    assert q.dropped == 7 and q.put_count == 10
    assert drain(q) == [7, 8, 9]  # the newest, in order
    assert q.get_nowait() is None


def test_size_one_keeps_the_latest() -> None:
    q = FrameQueue(1)
    for i in range(5):
        q.put(frame(i))
    assert drain(q) == [4] and q.dropped == 4


def test_invalid_size() -> None:
    with pytest.raises(ValueError):
        FrameQueue(0)


def test_wake_after_every_put_and_on_close() -> None:
    calls = []
    q = FrameQueue(1, lambda: calls.append(len(q)))
    q.put(frame(0))
    q.put(frame(1))
    q.close()
    q.close()  # once only
    assert calls == [1, 1, 1]


def test_close_keeps_queued_frames_refuses_later_ones_and_keeps_first_error() -> None:
    q = FrameQueue(4)
    q.put(frame(0))
    q.put(frame(1))
    q.close("stream returned no frame")
    q.close("halted")
    assert q.closed and q.error == "stream returned no frame"
    assert not q.put(frame(2)) and q.put_count == 2
    assert drain(q) == [0, 1]
    assert q.dropped == 0


def test_blocking_put_waits_for_room_and_close_releases_it() -> None:
    q = FrameQueue(1)
    q.put(frame(0), block=True)
    results: list[bool] = []
    t = threading.Thread(target=lambda: results.append(q.put(frame(1), block=True)))
    t.start()
    t.join(0.1)
    assert t.is_alive(), "put(block=True) on a full queue returned"
    assert drain(q)[:1] == [0]  # room: the put goes through
    t.join(2)
    assert results == [True] and drain(q) == [1] and q.dropped == 0

    q.put(frame(2), block=True)
    t = threading.Thread(target=lambda: results.append(q.put(frame(3), block=True)))
    t.start()
    t.join(0.1)
    assert t.is_alive()
    q.close("halted")  # the consumer gives up: the blocked producer must not hang
    t.join(2)
    assert not t.is_alive() and results == [True, False]


def test_threads_drop_oldest_every_frame_accounted_for() -> None:
    """A fast producer and a slow consumer: frames arrive in order, never more than
    `size` are queued, got + dropped == put, and the newest frame always survives."""
    n, size = 20_000, 3
    q = FrameQueue(size)
    got: list[int] = []
    max_len = 0

    def consume() -> None:
        nonlocal max_len
        while True:
            max_len = max(max_len, len(q))
            closed = q.closed
            f = q.get_nowait()
            if f is None:
                if closed:
                    return
                time.sleep(0.0001)
                continue
            got.append(f.index)
            if f.index % 97 == 0:
                time.sleep(0.0005)  # fall behind now and then

    c = threading.Thread(target=consume)
    c.start()
    for i in range(n):
        assert q.put(frame(i))
    q.close()
    c.join(10)
    assert not c.is_alive()
    assert q.put_count == n
    assert len(got) + q.dropped == n, "a frame was lost without being counted"
    assert q.dropped > 0, "the consumer never fell behind: the test proves nothing"
    assert all(a < b for a, b in itertools.pairwise(got)), "out of order"
    assert got[-1] == n - 1
    assert max_len <= size


def test_threads_blocking_mode_is_lossless() -> None:
    n = 5_000
    q = FrameQueue(2)
    got: list[int] = []

    def produce() -> None:
        for i in range(n):
            assert q.put(frame(i), block=True)
        q.close()

    p = threading.Thread(target=produce)
    p.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        closed = q.closed
        f = q.get_nowait()
        if f is not None:
            got.append(f.index)
        elif closed:
            break
        else:
            time.sleep(0.0001)
    p.join(2)
    assert got == list(range(n)) and q.dropped == 0


def test_blocking_get_for_a_worker_thread() -> None:
    """get() serves a consumer thread (e.g. inference): waits for a frame, returns
    None on timeout, and None for good once the queue is closed and drained."""
    q = FrameQueue(2)
    t0 = time.monotonic()
    assert q.get(timeout=0.05) is None
    assert time.monotonic() - t0 >= 0.04
    got: list[int] = []

    def worker() -> None:
        while (f := q.get(timeout=5)) is not None:
            got.append(f.index)

    w = threading.Thread(target=worker)
    w.start()
    for i in range(50):
        q.put(frame(i), block=True)
    q.close()
    w.join(5)
    assert not w.is_alive() and got == list(range(50))
    assert q.get() is None  # closed: never blocks
