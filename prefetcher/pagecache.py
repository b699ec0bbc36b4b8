"""Warm the page cache with a program's launch profile: check residency, read ahead only what is missing.

Safety: a profile is data from another process, so a path must be absolute and normalised, is refused
under /proc, /sys and /dev, is opened without following a link in any component, and must be a regular
file that the user the prefetch is for could read, checked on a descriptor that cannot act (O_PATH)
before the file is opened for reading (no check-then-open race). Budget: the bytes read ahead are
pages that were not resident before, charged against the round's Budget (and, for a single profile, the
per-app cap) before they are issued, so neither can be exceeded. prefetch_spans reads a plan (plan.py);
prefetch_profile one profile as it is (`memo-prefetcher --profile`, bench/launch.py).
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from memo.contract import AppProfile, ProfileRange, is_file_path
from memo.helpers import merge_spans
from prefetcher import syscalls
from prefetcher.budget import Budget
from prefetcher.plan import Span, worth_reading

log = logging.getLogger(__name__)

PAGE = syscalls.PAGE_SIZE
OPEN_FILES = 64  # descriptors a plan keeps open at once (a plan may name thousands of files)
REFUSED = "refused: not a regular file the user may read, a link on the way, or under /proc, /sys, /dev"


@dataclass
class FileAction:
    """What was (or, in a dry run, would be) read ahead in one file: page-aligned (offset, length)."""

    path: str
    runs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.runs)


@dataclass
class PrefetchResult:
    app: str
    profile_bytes: int = 0
    resident_before: int = 0
    prefetched: int = 0
    files: list[FileAction] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    truncated: bool = False


def _page_floor(n: int) -> int:
    return n - n % PAGE


def _page_ceil(n: int) -> int:
    return _page_floor(n + PAGE - 1)


def readable_by(st: os.stat_result, uid: int | None) -> bool:
    """Whether the user a prefetch is for could read this file themself (root reads for anyone, so
    it must not warm another user's private files on a profile's say-so). None: no user to check."""
    if uid is None or uid == 0 or st.st_mode & stat.S_IROTH:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    return bool(st.st_mode & stat.S_IRGRP) and st.st_gid in _groups_of(uid)


_GROUPS_TTL_S = 60.0
_groups: dict[int, tuple[float, frozenset[int]]] = {}


def _groups_of(uid: int) -> frozenset[int]:
    now = time.monotonic()
    hit = _groups.get(uid)
    if hit is not None and now - hit[0] < _GROUPS_TTL_S:
        return hit[1]
    try:
        pw = pwd.getpwuid(uid)
        found = frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except (KeyError, OSError):
        found = frozenset()
    _groups[uid] = (now, found)
    return found


def open_regular(path: str, uid: int | None = None) -> tuple[int, int] | None:
    """(fd, size) of a regular file the user `uid` may read, else None. The walk follows no link in
    any component (openat2 RESOLVE_NO_SYMLINKS), and the file is first opened as O_PATH and checked
    with fstat, so a FIFO or a device node is never really opened: opening some devices acts."""
    if not is_file_path(path):  # the contract's rule: absolute, normalised, outside /proc, /sys, /dev
        return None
    try:
        pfd = syscalls.openat2(path, syscalls.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                               syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return None
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode) or not readable_by(st, uid):
            return None
        # Reopening the O_PATH descriptor reads exactly the inode that was checked.
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(pfd)
    return fd, st.st_size


def merge_ranges(ranges: Iterable[ProfileRange]) -> dict[str, list[tuple[int, int]]]:
    """Per path (first-seen order, which is the order the launch read them), page-aligned, sorted and
    merged (start, end) spans."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for r in ranges:
        spans.setdefault(r.path, []).append((_page_floor(r.offset), _page_ceil(r.offset + r.length)))
    return {path: merge_spans(items) for path, items in spans.items()}


def missing_runs(fd: int, start: int, end: int) -> tuple[int, list[tuple[int, int]]]:
    """(resident bytes, [(offset, length) not resident]) of a page-aligned span.

    cachestat first (one cheap call); only a partly resident span is looked at page by page (mincore)."""
    npages = (end - start) // PAGE
    resident = syscalls.resident_pages(fd, start, end - start)
    if resident >= npages:
        return resident * PAGE, []
    if resident == 0:
        return 0, [(start, end - start)]
    vec = syscalls.mincore(fd, start, end - start)
    runs: list[tuple[int, int]] = []
    run_start = None
    for i, b in enumerate(vec[:npages]):
        if not b & 1 and run_start is None:
            run_start = i
        elif b & 1 and run_start is not None:
            runs.append((start + run_start * PAGE, (i - run_start) * PAGE))
            run_start = None
    if run_start is not None:
        runs.append((start + run_start * PAGE, (npages - run_start) * PAGE))
    # mincore counts only up-to-date pages, cachestat also those still being read: use one view
    return end - start - sum(n for _, n in runs), runs


def _read_runs(fd: int, runs: list[tuple[int, int]], budget: Budget, cap: int, action: FileAction,
               result: PrefetchResult, dry_run: bool) -> int:
    """Read ahead the (offset, length) runs of fd, each as far as the budget and cap allow; what was
    granted is recorded in action and result and returned."""
    total = 0
    for off, length in runs:
        granted = _page_floor(budget.take(min(length, cap - total)))
        if granted < length:
            result.truncated = True
        if granted <= 0:
            continue
        if not dry_run:
            syscalls.readahead(fd, off, granted)
        action.runs.append((off, granted))
        result.prefetched += granted
        total += granted
    return total


def prefetch_profile(profile: AppProfile, budget: Budget, app_cap: int, dry_run: bool = False
                     ) -> PrefetchResult:
    """Read ahead the missing pages of a profile, in profile order, within the budget and app_cap."""
    result = PrefetchResult(app=profile.app)
    cap_left = app_cap
    for path, spans in merge_ranges(profile.ranges).items():
        opened = open_regular(path)
        if opened is None:
            result.skipped[path] = REFUSED
            continue
        fd, size = opened
        action = FileAction(path)
        try:
            for s, e in spans:
                e = min(e, _page_ceil(size))
                if e <= s:
                    continue
                result.profile_bytes += e - s
                resident, runs = missing_runs(fd, s, e)
                result.resident_before += resident
                cap_left -= _read_runs(fd, runs, budget, cap_left, action, result, dry_run)
        except OSError as exc:
            result.skipped[path] = f"{exc.strerror or exc}"
        finally:
            os.close(fd)
        if action.runs:
            result.files.append(action)
    return result


Settled = dict[tuple[str, int, int], int]
"""(path, start, end) of spans known to be wholly resident -> their bytes: found so, or read whole."""


def prefetch_spans(spans: Iterable[Span], budget: Budget, min_weight: float, evict_cost: float,
                   free_bytes: int, dry_run: bool = False,
                   interrupted: Callable[[], bool] = lambda: False,
                   settled: Settled | None = None) -> dict[str, PrefetchResult]:
    """Read ahead the missing pages of the spans worth it (plan.worth_reading), heaviest first, within
    the budget; stop as soon as interrupted() says so (a launch started). Results per owning program.

    ``settled`` is the caller's memory of spans wholly resident, valid while nothing was evicted: such a
    span is counted resident without opening its file (the round after a launch finds most of its plan
    where the read before put it; checking thousands of small files again was most of the prefetcher's
    CPU). Spans found or made wholly resident here are added to it."""
    results: dict[str, PrefetchResult] = {}
    actions: dict[tuple[str, str], FileAction] = {}
    fds: OrderedDict[str, tuple[int, int] | None] = OrderedDict()  # the last OPEN_FILES opened
    read = 0
    try:
        for span in spans:
            if budget.left <= 0 or span.weight <= min_weight or interrupted():
                break  # heaviest first: the rest weigh less still
            r = results.setdefault(span.owner, PrefetchResult(app=span.owner))
            key = (span.path, span.start, span.end)
            if settled is not None and (known := settled.get(key)) is not None:
                r.profile_bytes += known
                r.resident_before += known
                continue
            if span.path not in fds:
                fds[span.path] = open_regular(span.path, span.uid)
                if len(fds) > OPEN_FILES:
                    old = fds.popitem(last=False)[1]
                    if old is not None:
                        os.close(old[0])
            fds.move_to_end(span.path)
            opened = fds[span.path]
            if opened is None:
                r.skipped[span.path] = REFUSED
                continue
            fd, size = opened
            end = min(span.end, _page_ceil(size))
            if end <= span.start:
                continue
            try:
                resident, runs = missing_runs(fd, span.start, end)
                r.profile_bytes += end - span.start
                r.resident_before += resident
                missing = sum(n for _, n in runs)
                if not runs and settled is not None:
                    settled[key] = end - span.start
                if not runs or not worth_reading(span, min_weight, evict_cost, read + missing <= free_bytes):
                    continue
                action = actions.get((span.owner, span.path))
                if action is None:
                    action = actions[(span.owner, span.path)] = FileAction(span.path)
                    r.files.append(action)
                granted = _read_runs(fd, runs, budget, budget.left, action, r, dry_run)
                read += granted
                if granted == missing and not dry_run and settled is not None:
                    settled[key] = end - span.start
            except OSError as exc:
                r.skipped[span.path] = f"{exc.strerror or exc}"
    finally:
        for opened in fds.values():
            if opened is not None:
                os.close(opened[0])
    for r in results.values():
        r.files = [a for a in r.files if a.runs]
    return results


def resident_bytes(actions: Iterable[FileAction]) -> int:
    """Bytes of the given runs resident now (how much of a prefetch is still in the page cache)."""
    total = 0
    for action in actions:
        opened = open_regular(action.path)
        if opened is None:
            continue
        fd, _ = opened
        try:
            for off, length in action.runs:
                total += syscalls.resident_pages(fd, off, length) * PAGE
        except OSError:
            pass
        finally:
            os.close(fd)
    return total
