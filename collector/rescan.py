"""The collector's own downtime: programs started while it was not running, recorded from /proc.

While the collector is down (killed, restarting, upgraded) the kernel's exec records go nowhere, so
those launches would be lost to the models. The collector writes a heartbeat (this boot's id and the
CLOCK_MONOTONIC time it last ran) next to its spool; at start, every process still running that
started after that time is recorded as an exec, oldest first. What is lost: programs that started
*and exited* during the downtime, and the exec chain of a wrapper (only the program it became is seen).
A launch just before a crash, after the last heartbeat, may be recorded twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from collector.enrich import exe
from memo import helpers, procfs
from memo.contract import ExecEvent

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
_TICKS = os.sysconf("SC_CLK_TCK")


class Heartbeat:
    """When the collector last ran, kept in a small file (atomic rename; no fsync: a stale value only
    widens the next scan by a few seconds)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._next = 0.0

    def last(self) -> int | None:
        """The monotonic ns of the previous run's last beat in this boot, else None."""
        try:
            data = json.loads(self.path.read_text())
            if data.get("boot_id") == procfs.boot_id() and isinstance(data.get("mono_ns"), int):
                return data["mono_ns"]
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + HEARTBEAT_S
        try:  # not durable: a lost beat only widens the next start's rescan a little
            beat = {"boot_id": procfs.boot_id(), "mono_ns": time.monotonic_ns()}
            helpers.atomic_write(self.path, json.dumps(beat), durable=False)
        except OSError as exc:
            log.warning("cannot write the heartbeat %s: %s", self.path, exc)


def _started(pid: int) -> tuple[int, int, str] | None:
    """(start ns since boot, ppid, comm) of a process, or None (gone, or a kernel thread)."""
    st = procfs.stat(pid)
    if st is None or st.kernel_thread:
        return None
    return st.start_ticks * 1_000_000_000 // _TICKS, st.ppid, st.comm


def missed_execs(since_ns: int, until_ns: int, skip: frozenset[int] = frozenset()) -> list[ExecEvent]:
    """An exec record for each running process that started in (since_ns, until_ns), oldest first."""
    out: list[ExecEvent] = []
    for pid in procfs.pids():
        if pid in skip:
            continue
        info = _started(pid)
        if info is None or not since_ns < info[0] < until_ns:
            continue
        path = exe(pid)
        if not path:
            continue
        uid = procfs.field(pid, "status", "Uid", default="")
        if not uid.isdigit():
            continue
        out.append(ExecEvent(ts_ns=info[0], pid=pid, ppid=info[1], uid=int(uid), cgroup_id=0,
                             comm=info[2][:15],
                             filename=path.removesuffix(" (deleted)")))
    out.sort(key=lambda ev: ev.ts_ns)
    return out
