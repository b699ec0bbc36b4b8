"""Learning runs below the user's programs: the lowest CPU priority for MEMO's model work, and after the
launch rather than during it.

Linux keeps the nice value per thread, so the observer and trainer threads (and the vLLM engine's
processes) drop to nice 19 while the threads that serve requests and ingest keep theirs. Heavy work
that can wait (training rounds, the LLM's call) also waits until a launch's start-up is over
(wait_for_quiet): a launch the user waits for is never slowed by MEMO learning from it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

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


def descendants(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """Every process below pid (children's children too), from /proc/*/stat parent links."""
    parent: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)] = int(fields[1])
    out, frontier = [], {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier}
        out.extend(sorted(frontier))
    return out


def lower_children() -> int:
    """Nice 19 for every process this one started (vLLM's engine core and its workers)."""
    n = 0
    for pid in descendants(os.getpid()):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, NICE)
            n += 1
        except OSError:
            pass
    return n
