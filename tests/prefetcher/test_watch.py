"""The prefetcher's loop checks evictions every interval while one long-poll stays open."""

from __future__ import annotations

import threading
import time

import pytest

from memo.contract import PredictionChanges
from prefetcher.watch import ChangeWatcher


class Changes:
    """A long-poll endpoint in miniature: answers when the version moves past ``since`` or at wait_s."""

    def __init__(self) -> None:
        self.version, self.calls = 1, 0
        self.cv = threading.Condition()

    def __call__(self, since: int, wait_s: float) -> PredictionChanges:
        with self.cv:
            self.calls += 1
            self.cv.wait_for(lambda: self.version > since, timeout=wait_s)
            return PredictionChanges(version=self.version, launches=self.version, uids=[])

    def bump(self) -> None:
        with self.cv:
            self.version += 1
            self.cv.notify_all()


def test_idle_loop_makes_one_request_per_long_poll_and_hears_a_change_at_once() -> None:
    src = Changes()
    w = ChangeWatcher(src, src(0, 0), wait_s=5.0)
    try:
        for _ in range(10):  # ten loop intervals of 0.1 s with nothing happening
            assert w.next(0.1).version == 1
        assert src.calls <= 2  # the first, synchronous one and the open long-poll
        t0 = time.monotonic()
        src.bump()
        assert w.next(2.0).version == 2 and time.monotonic() - t0 < 0.5
    finally:
        w.close()
        src.bump()


def test_a_failed_long_poll_is_raised_once_to_the_loop() -> None:
    calls = []

    def failing(since: int, wait_s: float) -> PredictionChanges:
        calls.append(since)
        raise ConnectionError("service away")

    w = ChangeWatcher(failing, PredictionChanges(version=3, launches=0, uids=[]))
    try:
        with pytest.raises(ConnectionError):
            w.next(2.0)
        assert w.next(0.05).version == 3  # the last notice, until the service answers again
    finally:
        w.close()
