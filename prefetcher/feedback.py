"""What each action was worth, told back to inference so it can report hit rate and waste per program.

A page-cache action is resolved when the app launches — the service's launch notice, once the
launch's start-up reads are over, or else a process of it seen starting after the action, settle_s
later — or when its horizon runs out without a launch. Used = prefetched pages still resident when the
launch began: all of them where the kernel evicted no page cache between the action and the launch's
start (the eviction counters of /proc/vmstat, read when a launch is seen: no file is opened on the
launch's time), else those still resident once the launch has done its start-up reads (an eviction
after the start would otherwise count pages the launch had as wasted: on a loaded machine, reclaim
right after a launch is the rule). Wasted = the rest (evicted before, or never launched). Whether the
launch touched a resident page is not visible per page from user space without idle-page tracking
(absent on this kernel), so pages there for the launch count as used — an upper bound that
bench/launch.py measures exactly (it records what a launch really reads).
A swap-in action is resolved after its horizon: used = the drop of the processes' VmSwap (pages the
program touched back), wasted = the rest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from memo import procfs
from memo.contract import FeedbackBatch, FeedbackItem
from prefetcher import activity, pagecache, swapin

log = logging.getLogger(__name__)

MIN_HORIZON_S = 30.0
MAX_PENDING_ITEMS = 5000
SCAN_EVERY_S = 5.0
"""How often /proc is scanned for a started process of a pending program: the fallback for launches the
service's notices do not name (every process's exe, resolved: a few ms a scan, and the loop polls every
second while actions are pending)."""


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


_BTIME = _boot_time()
_HZ = os.sysconf("SC_CLK_TCK")


def start_time(pid: int) -> float | None:
    """Unix time at which pid started (from /proc/PID/stat starttime)."""
    st = procfs.stat(pid)
    return None if st is None else _BTIME + st.start_ticks / _HZ


@dataclass
class Pending:
    app: str
    uid: int
    action: str
    ts: float
    deadline: float
    bytes_prefetched: int
    files: list[pagecache.FileAction] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    launched_at: float | None = None
    resolve_at: float | None = None  # when the launch's start-up reads are over
    evictions_at: int = 0  # the eviction count just after the action
    clean_until: float | None = None  # the latest launch start seen with no eviction since the action


class FeedbackTracker:
    def __init__(self, settle_s: float = 5.0, evictions: Callable[[], int] | None = None) -> None:
        self.settle_s = settle_s
        self.evictions = evictions or activity.Evictions().count
        self.pending: list[Pending] = []
        self.ready: list[FeedbackItem] = []
        self._scanned_at = -SCAN_EVERY_S  # monotonic time of the last /proc scan

    def pagecache_done(self, uid: int, result: pagecache.PrefetchResult, horizon_s: float) -> None:
        if result.prefetched:
            now = time.time()
            self.pending.append(Pending(result.app, uid, "pagecache", now,
                                        now + max(horizon_s, MIN_HORIZON_S), result.prefetched,
                                        files=result.files, evictions_at=self.evictions()))

    def launch_began(self, at: float) -> None:
        """A launch (of some program) began at `at`: the page-cache actions the kernel has evicted
        nothing since are wholly there for it, whatever reclaim does after."""
        count = self.evictions()
        for p in self.pending:
            if p.action == "pagecache" and p.evictions_at == count:
                p.clean_until = at

    def swapin_done(self, uid: int, result: swapin.SwapinResult, horizon_s: float) -> None:
        if result.pids:
            now = time.time()
            self.pending.append(Pending(result.app, uid, "swapin", now, now + max(horizon_s, MIN_HORIZON_S),
                                        result.swap_bytes, pids=list(result.pids)))

    def launched(self, app: str, at: float) -> None:
        """The service saw `app` launch at `at` (Unix time) and its start-up reads are over: its pending
        prefetches are resolved at the next poll. This names interpreted programs too (a script's
        processes run the interpreter's exe, which the /proc scan cannot tell apart)."""
        for p in self.pending:
            if p.app == app and p.launched_at is None and at >= p.ts - 1:
                p.launched_at = p.resolve_at = at

    def _launched(self, p: Pending) -> float | None:
        starts = [t for pid in swapin.pids_of(p.app) if (t := start_time(pid)) is not None and t >= p.ts - 1]
        return min(starts) if starts else None

    def poll(self, now: float | None = None) -> None:
        """Resolve the actions whose outcome is known by now."""
        now = time.time() if now is None else now
        scan = time.monotonic() - self._scanned_at >= SCAN_EVERY_S
        if scan:
            self._scanned_at = time.monotonic()
        still: list[Pending] = []
        for p in self.pending:
            try:
                item = self._resolve(p, now, scan)
            except ValidationError as exc:  # an app name or figure the contract refuses: that item only
                log.warning("feedback on %r dropped: %s", p.app, exc.errors()[0].get("msg", exc))
                continue
            if item is None:
                still.append(p)
            else:
                self.ready.append(item)
        self.pending = still
        del self.ready[:-MAX_PENDING_ITEMS]

    def _resolve(self, p: Pending, now: float, scan: bool) -> FeedbackItem | None:
        if p.action == "pagecache":
            if p.launched_at is None and scan:
                p.launched_at = self._launched(p)
                if p.launched_at is not None:
                    p.resolve_at = p.launched_at + self.settle_s
            if p.resolve_at is not None and now >= p.resolve_at:
                if p.clean_until is not None and p.launched_at is not None \
                        and p.clean_until >= p.launched_at:
                    used = p.bytes_prefetched  # nothing evicted before the launch began
                else:
                    used = min(pagecache.resident_bytes(p.files), p.bytes_prefetched)
                return FeedbackItem(app=p.app, uid=p.uid, action="pagecache", ts=p.ts, launched=True,
                                    bytes_prefetched=p.bytes_prefetched, bytes_used=used,
                                    bytes_wasted=p.bytes_prefetched - used)
            if p.launched_at is None and now >= p.deadline:
                return FeedbackItem(app=p.app, uid=p.uid, action="pagecache", ts=p.ts, launched=False,
                                    bytes_prefetched=p.bytes_prefetched, bytes_wasted=p.bytes_prefetched)
            return None
        if now < p.deadline:
            return None
        left = sum(swapin.swap_bytes(pid) for pid in p.pids)
        used = max(0, p.bytes_prefetched - left)
        return FeedbackItem(app=p.app, uid=p.uid, action="swapin", ts=p.ts, launched=used > 0,
                            bytes_prefetched=p.bytes_prefetched, bytes_used=used,
                            bytes_wasted=p.bytes_prefetched - used)

    def batch(self) -> FeedbackBatch | None:
        return FeedbackBatch(items=list(self.ready)) if self.ready else None

    def sent(self, n: int) -> None:
        del self.ready[:n]
