"""Bring a predicted program's swapped-out memory back before the user returns to it.

For each running process whose /proc/PID/exe resolves to the predicted program (and only those):
1. process_madvise(pidfd, ranges, MADV_WILLNEED) over its mappings that hold swap (smaps "Swap:")
   starts asynchronous swap-in of all of it at once (the kernel batches the reads);
2. the pages still swapped according to /proc/PID/pagemap (bit 62) are then read once through
   /proc/PID/mem, which faults them into the process's page tables. WILLNEED alone only fills the
   swap cache: the program would still take a (minor) fault per page when it touches them, measured
   here at ~8x the touch time of memory never swapped; after step 2 it runs at the never-swapped speed.
VmSwap only drops once a page is mapped again, so step 1 is measured by SwapCached, step 2 by VmSwap
and touch time. The pidfd is taken before the exe check is repeated, so a reused pid cannot receive
advice meant for another program.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from prefetcher import syscalls
from prefetcher.budget import Budget

log = logging.getLogger(__name__)

PROC = Path("/proc")


def exe_of(pid: int) -> str | None:
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def pids_of(app: str) -> list[int]:
    """Pids whose executable is app (resolved; a deleted-and-replaced binary does not match)."""
    want = os.path.realpath(app)
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and exe_of(int(entry.name)) == want:
            out.append(int(entry.name))
    return out


def swap_bytes(pid: int) -> int:
    """VmSwap of a process in bytes (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmSwap:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def swapped_ranges(pid: int) -> list[tuple[int, int, int]]:
    """(start, length, swap bytes) of the mappings of pid that have pages in swap (/proc/PID/smaps)."""
    out: list[tuple[int, int, int]] = []
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return out
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
_CHUNK = 1 << 20


def fault_in(pid: int, ranges: list[tuple[int, int]]) -> int:
    """Read, through /proc/PID/mem, every populated page (in swap or present, per pagemap) of ranges:
    the kernel maps swapped pages back into pid (get_user_pages on its behalf) and marks all of them
    young. The present ones matter too: reclaim cleared their accessed bits while it swapped the
    others out, and the first touch of such a page measured here cost the program nearly as much as
    a fault. Never-populated pages are skipped (no zero-page mappings in sparse reservations).
    Returns the bytes read."""
    done = 0
    buf = bytearray(_CHUNK)
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pm, \
            open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, length in ranges:
            npages = length // syscalls.PAGE_SIZE
            entries = os.pread(pm.fileno(), npages * 8, start // syscalls.PAGE_SIZE * 8)
            swapped = [bool(int.from_bytes(entries[i:i + 8], "little") & (PM_SWAP | PM_PRESENT))
                       for i in range(0, len(entries), 8)]
            i = 0
            while i < len(swapped):
                if not swapped[i]:
                    i += 1
                    continue
                j = i
                while j < len(swapped) and swapped[j] and (j - i) * syscalls.PAGE_SIZE < _CHUNK:
                    j += 1
                n = (j - i) * syscalls.PAGE_SIZE
                try:
                    done += os.preadv(mem.fileno(), [memoryview(buf)[:n]], start + i * syscalls.PAGE_SIZE)
                except OSError:
                    pass  # unmapped meanwhile
                i = j
    return done


def anon_ranges(pid: int) -> list[tuple[int, int]]:
    """(start, length) of private writable mappings without a backing file (heap, stacks, anon mmap):
    where swapped-out pages of a process live."""
    out = []
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return out
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


def swap_in(app: str, budget: Budget | None = None, dry_run: bool = False, map_back: bool = True
            ) -> SwapinResult:
    """Swap in every process of app that has memory in swap (WILLNEED, then fault-in unless
    map_back is False), as long as its whole swapped size fits in what is left of the budget."""
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
