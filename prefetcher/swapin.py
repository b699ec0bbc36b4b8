"""Bring a predicted program's swapped-out memory back before the user returns to it.

For each running process whose /proc/PID/exe resolves to the predicted program (and only those):
1. process_madvise(pidfd, ranges, MADV_WILLNEED) over its mappings that hold swap (smaps "Swap:")
   starts asynchronous swap-in of all of it at once (the kernel batches the reads);
2. the pages still swapped according to /proc/PID/pagemap (bit 62) are then read once through
   /proc/PID/mem, which faults them into the process's page tables. WILLNEED alone only fills the
   swap cache: the program would still take a (minor) fault per page when it touches them, measured
   here at ~5x the touch time of memory never swapped;
3. process_madvise(MADV_COLLAPSE) copies the fully populated 2 MB extents of those mappings into huge
   pages. The pages reclaim left in memory had their accessed bits cleared while it scanned them,
   and the CPU setting that bit again on the first touch cost ~3.5x the touch of a young page here
   (bench/swap.py; /proc/PID/clear_refs shows the same on a process never swapped). No call sets
   another process's accessed bits (get_user_pages marks the folio, not the PTE); a collapse maps
   fresh, young huge pages, which also take fewer TLB misses. Only extents whose every page is in
   memory or swap are collapsed, so no memory is added; off with prefetcher.collapse_huge or when
   transparent huge pages are "never".
VmSwap only drops once a page is mapped again, so step 1 is measured by SwapCached, step 2 by VmSwap
and touch time. The pidfd is taken before the exe check is repeated, so a reused pid cannot receive
advice meant for another program.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memo import procfs
from prefetcher import syscalls
from prefetcher.budget import Budget

log = logging.getLogger(__name__)

def exe_of(pid: int) -> str | None:
    target = procfs.link(pid, "exe")
    return os.path.realpath(target) if target else None


EXE_MAP_TTL_S = 0.5
_exe_map: tuple[float, dict[str, list[int]]] = (0.0, {})


def _executables() -> dict[str, list[int]]:
    """Resolved executable -> pids, from one /proc scan shared by every lookup within EXE_MAP_TTL_S
    (the loop asks for many programs each round: one scan, not one per program and action)."""
    global _exe_map
    now = time.monotonic()
    if now - _exe_map[0] >= EXE_MAP_TTL_S:
        table: dict[str, list[int]] = {}
        for pid in procfs.pids():
            if (exe := exe_of(pid)) is not None:
                table.setdefault(exe, []).append(pid)
        _exe_map = (now, table)
    return _exe_map[1]


def pids_of(app: str) -> list[int]:
    """Pids whose executable is app (resolved; a deleted-and-replaced binary does not match)."""
    return list(_executables().get(os.path.realpath(app), []))


def swap_bytes(pid: int) -> int:
    """VmSwap of a process in bytes (0 when gone)."""
    try:
        return int(procfs.field(pid, "status", "VmSwap")) * 1024
    except ValueError:
        return 0


def swapped_ranges(pid: int) -> list[tuple[int, int, int]]:
    """(start, length, swap bytes) of the mappings of pid that have pages in swap (/proc/PID/smaps)."""
    out: list[tuple[int, int, int]] = []
    text = procfs.text(pid, "smaps")
    start = end = 0
    for line in text.splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
        elif head == "Swap:":
            kb = int(line.split()[1])
            if kb:
                out.append((start, end - start, kb * 1024))
    return out


PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_CHUNK = 1 << 20


def _pagemap(pm_fd: int, start: int, length: int) -> np.ndarray:
    """The /proc/PID/pagemap entries (uint64) of the pages of [start, start + length)."""
    raw = os.pread(pm_fd, length // syscalls.PAGE_SIZE * 8, start // syscalls.PAGE_SIZE * 8)
    return np.frombuffer(raw, dtype="<u8")


def _runs(mask: np.ndarray, most: int) -> list[tuple[int, int]]:
    """(first, count) of the runs of True in mask, each at most `most` long."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    out = []
    for first, stop in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        out.extend((i, min(most, stop - i)) for i in range(first, stop, most))
    return out


def fault_in(pid: int, ranges: list[tuple[int, int]]) -> int:
    """Read, through /proc/PID/mem, every page of ranges that pagemap says is in swap: the kernel
    maps it back into pid (get_user_pages on its behalf). Pages already present are skipped:
    reading them would not set their accessed bits (see the module docstring). Returns the bytes
    read."""
    done = 0
    buf = bytearray(_CHUNK)
    per_read = _CHUNK // syscalls.PAGE_SIZE
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pm, \
            open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, length in ranges:
            swapped = (_pagemap(pm.fileno(), start, length) & PM_SWAP) != 0
            for first, count in _runs(swapped, per_read):
                n = count * syscalls.PAGE_SIZE
                try:
                    done += os.preadv(mem.fileno(), [memoryview(buf)[:n]],
                                      start + first * syscalls.PAGE_SIZE)
                except OSError:
                    pass  # unmapped meanwhile
    return done


def full_extents(pid: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The 2 MB-aligned extents of ranges whose every page is in memory or in swap: collapsing
    these into huge pages adds no memory (a sparse extent would be filled with zeros)."""
    huge, page = syscalls.HUGE_PAGE_SIZE, syscalls.PAGE_SIZE
    out = []
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pm:
        for start, length in ranges:
            first = -(-start // huge) * huge
            last = (start + length) // huge * huge
            if last <= first:
                continue
            used = (_pagemap(pm.fileno(), first, last - first) & (PM_SWAP | PM_PRESENT)) != 0
            full = used.reshape(-1, huge // page).all(axis=1)
            out.extend((first + int(i) * huge, huge) for i in np.flatnonzero(full))
    return out


def thp_allowed() -> bool:
    """False when the administrator set transparent huge pages to "never" (MADV_COLLAPSE would
    ignore the madvise/always choice, and that one is theirs to keep)."""
    try:
        return "[never]" not in THP_ENABLED.read_text()
    except OSError:
        return False


def anon_ranges(pid: int) -> list[tuple[int, int]]:
    """(start, length) of private writable mappings without a backing file (heap, stacks, anon mmap):
    where swapped-out pages of a process live."""
    out = []
    text = procfs.text(pid, "maps")
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        addr, perms, inode = parts[0], parts[1], parts[4]
        name = parts[5] if len(parts) > 5 else ""
        if inode != "0" or perms[3] != "p" or "w" not in perms:
            continue
        if name.startswith("[") and name not in ("[heap]", "[stack]", "[anon]") and not name.startswith(
                "[anon:"):
            continue  # [vdso], [vvar], [vsyscall]
        start, end = (int(x, 16) for x in addr.split("-"))
        out.append((start, end - start))
    return out


@dataclass
class SwapinResult:
    app: str
    pids: list[int] = field(default_factory=list)
    swap_bytes: int = 0
    advised_bytes: int = 0
    faulted_bytes: int = 0
    collapsed_bytes: int = 0
    errors: dict[int, str] = field(default_factory=dict)


def _advise(pid: int, app: str, advice: int, ranges: list[tuple[int, int]] | None = None) -> int:
    pidfd = syscalls.pidfd_open(pid)
    try:
        if exe_of(pid) != os.path.realpath(app):  # pid reused between the scan and pidfd_open
            return 0
        ranges = anon_ranges(pid) if ranges is None else ranges
        try:
            return syscalls.process_madvise(pidfd, ranges, advice)
        except OSError:  # the map changed under us (ENOMEM on a hole): one range at a time
            done = 0
            for r in ranges:
                try:
                    done += syscalls.process_madvise(pidfd, [r], advice)
                except OSError:
                    continue
            return done
    finally:
        os.close(pidfd)


def swap_in(app: str, budget: Budget | None = None, dry_run: bool = False, map_back: bool = True,
            collapse: bool = True) -> SwapinResult:
    """Swap in every process of app that has memory in swap (WILLNEED; then, unless map_back is
    False, fault-in and, if collapse, huge-page collapse of full extents), as long as its whole
    swapped size fits in what is left of the budget."""
    collapse = collapse and map_back and thp_allowed()
    result = SwapinResult(app)
    for pid in pids_of(app):
        swapped = swap_bytes(pid)
        if swapped <= 0:
            continue
        if budget is not None:
            if swapped > budget.left:
                result.errors[pid] = f"over budget ({swapped} > {budget.left} bytes left)"
                continue
            budget.take(swapped)
        result.pids.append(pid)
        result.swap_bytes += swapped
        if dry_run:
            continue
        ranges = [(s, n) for s, n, _ in swapped_ranges(pid)]
        try:
            result.advised_bytes += _advise(pid, app, syscalls.MADV_WILLNEED, ranges)
            if map_back and exe_of(pid) == os.path.realpath(app):
                result.faulted_bytes += fault_in(pid, ranges)
                if collapse:
                    result.collapsed_bytes += _advise(pid, app, syscalls.MADV_COLLAPSE,
                                                      full_extents(pid, ranges))
        except OSError as exc:
            result.errors[pid] = exc.strerror or str(exc)
    return result


def cool(app: str, dry_run: bool = False) -> int:
    """MADV_COLD over a program's anonymous memory (off by default): for programs predicted idle for
    long, so that reclaim takes their pages before those of programs about to be used."""
    done = 0
    for pid in pids_of(app):
        if dry_run:
            continue
        try:
            done += _advise(pid, app, syscalls.MADV_COLD)
        except OSError as exc:
            log.debug("MADV_COLD pid %d: %s", pid, exc)
    return done
