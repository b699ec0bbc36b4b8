"""One long-poll kept open on the service, beside the prefetcher's loop.

The loop checks for evictions every poll interval (a /proc/vmstat read); waiting for ranking changes in
the same call would cost an HTTP request, on both sides, per interval while nothing happens (about half
of MEMO's idle CPU). The watcher holds one request open for up to LONG_POLL_S instead and hands the
loop each notice as it arrives, so an idle machine sees one request every half minute and a launch is
still known within milliseconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from memo.contract import PredictionChanges

log = logging.getLogger(__name__)

LONG_POLL_S = 30.0
RETRY_S = 1.0


class ChangeWatcher:
    def __init__(self, changes: Callable[[int, float], PredictionChanges | None], first: PredictionChanges,
                 wait_s: float = LONG_POLL_S) -> None:
        self._changes = changes
        self._since = first.version
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._new = threading.Event()
        self._stop = threading.Event()
        self._latest: PredictionChanges = first
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="memo-changes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ch = self._changes(self._since, self._wait_s)
            except Exception as exc:  # the service away or restarting: the loop hears of it, we retry
                with self._lock:
                    self._error = exc
                self._new.set()
                self._stop.wait(RETRY_S)
                continue
            if ch is None:
                return  # a source without notices (the loop never starts a watcher for those)
            with self._lock:
                self._since, self._latest, self._error = ch.version, ch, None
            self._new.set()

    def next(self, timeout_s: float) -> PredictionChanges:
        """The latest notice: as soon as a new one arrives, else after ``timeout_s`` the last one seen.
        Raises the long-poll's error once, if it failed since the last call."""
        self._new.wait(timeout_s)
        self._new.clear()
        with self._lock:
            error, self._error = self._error, None
            latest = self._latest
        if error is not None:
            raise error
        return latest

    def peek(self) -> PredictionChanges:
        """The latest notice, without waiting and without taking it from next(): a plan being read
        asks it every 50 ms whether a launch began, at no request's cost."""
        with self._lock:
            return self._latest

    def close(self) -> None:
        self._stop.set()
