"""Learning runs below the user's programs: the lowest CPU priority for MEMO's model work, and after the
launch rather than during it.

Linux keeps the nice value per thread, so the observer and trainer threads drop to nice 19 while the
threads that serve requests and ingest keep theirs (the vLLM engine's and the LSTM trainer's processes
lower themselves). Heavy work that can wait (training rounds, the LLM's call) also waits until a
launch's start-up is over (wait_for_quiet): a launch the user waits for is never slowed by MEMO
learning from it.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)
NICE = 19


_last_launch = 0.0  # monotonic time of the latest launch the service was told of


def launch_started() -> None:
    """A program is starting: model work that can wait does (see wait_for_quiet)."""
    global _last_launch
    _last_launch = time.monotonic()


def since_launch() -> float:
    return time.monotonic() - _last_launch


def wait_for_quiet(quiet_s: float, max_wait_s: float = 30.0) -> None:
    """Block until quiet_s have passed since the latest launch (at most max_wait_s, however often
    programs start): a start-up is CPU, cache and memory bandwidth the user waits for, and nice 19
    shares neither cache nor bandwidth."""
    deadline = time.monotonic() + max_wait_s
    while (left := quiet_s - since_launch()) > 0 and time.monotonic() < deadline:
        time.sleep(min(left, 0.25))


def lower_this_thread() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as exc:
        log.warning("cannot lower the priority of thread %s: %s", threading.current_thread().name, exc)
