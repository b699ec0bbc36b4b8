"""What the rest of the machine is doing, read cheaply from /proc between prefetches.

- Disk reads by others: /proc/diskstats (sectors read by the physical disks) minus this process's own
  /proc/self/io read_bytes. While a program the user just started is reading, a prefetch would compete
  with the launch the user waits for; the prefetcher holds until these go quiet.
- Evictions: /proc/vmstat's page-cache drops and file pages reclaimed (pgsteal_file counts every
  reclaim, a memory cgroup's limit included; the per-reclaimer pgsteal_kswapd/direct leave cgroup
  reclaim out and count anonymous pages too). Only after one is it worth checking whether what was
  prefetched or found resident is still there; otherwise the prefetcher does not look again.
- A reclaim on its way: free memory (vmstat's nr_free_pages) falling fast enough to be gone within
  RECLAIM_HORIZON_S. A program that fills memory (bench/replay's hog: 6 GB in 15-20 s) evicts nothing
  while free memory lasts, and a plan read then was evicted again seconds later (in bench/replay,
  455-616 MB a session, read and evicted unused in the hog's first seconds).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prefetcher.syscalls import PAGE_SIZE

PROC = Path("/proc")
SYS_BLOCK = Path("/sys/block")
SECTOR = 512
EVICTION_COUNTERS = ("drop_pagecache", "pgsteal_file")
OLD_EVICTION_COUNTERS = ("drop_pagecache", "pgsteal_kswapd", "pgsteal_direct", "pgsteal_khugepaged")
"""For a kernel whose /proc/vmstat has no pgsteal_file: every reclaim, anonymous or not, counts."""
RECLAIM_HORIZON_S = 30.0
"""Free memory falling at a rate that would use it all within this many seconds is a reclaim on its way."""
MIN_FREE_FALL = 32 << 20
"""...and falling by at least this much (bytes) over the wait: the kernel's own allocations and a
program's ordinary growth move free memory by a few MB."""


def physical_disks(sys_block: Path = SYS_BLOCK) -> set[str]:
    """Block devices backed by hardware (a `device` link): not loop, ram, zram, dm or md devices,
    whose reads are counted again on the disks beneath them."""
    try:
        return {d.name for d in sys_block.iterdir() if (d / "device").exists()}
    except OSError:
        return set()


def disk_read_bytes(disks: set[str], proc: Path = PROC) -> int:
    """Bytes read by the given disks since boot."""
    total = 0
    for line in (proc / "diskstats").read_text().splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[2] in disks:
            total += int(parts[5]) * SECTOR
    return total


def read_bytes(pid: int | str = "self", proc: Path = PROC) -> int:
    """Bytes a process (this one by default) caused to be read from storage: its readahead, page faults
    and swap-ins included."""
    for line in (proc / str(pid) / "io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def vmstat(proc: Path = PROC) -> dict[str, int]:
    out = {}
    for line in (proc / "vmstat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


class ForeignReads:
    """The rate at which processes other than this one read from disk."""

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self.disks = physical_disks()
        self._last = self._sample()

    def _sample(self) -> tuple[float, int]:
        try:
            return time.monotonic(), disk_read_bytes(self.disks, self.proc) - read_bytes(proc=self.proc)
        except OSError:
            return time.monotonic(), 0

    def rate(self) -> float:
        """Bytes/s read by others since the previous call."""
        (t0, b0), (t1, b1) = self._last, self._sample()
        self._last = (t1, b1)
        return max(0, b1 - b0) / max(t1 - t0, 1e-3)

    def wait_quiet(self, quiet_bps: float, max_s: float, stop: threading.Event, quiet_s: float = 0.2,
                   sample_s: float = 0.1) -> float:
        """Wait until others read below quiet_bps for quiet_s in a row (measured every sample_s), at
        most max_s or until ``stop`` is set; returns the seconds waited."""
        t0 = time.monotonic()
        self.rate()
        calm, samples = 0, max(1, round(quiet_s / sample_s))
        while calm < samples and time.monotonic() - t0 < max_s and not stop.wait(sample_s):
            calm = calm + 1 if self.rate() < quiet_bps else 0
        return time.monotonic() - t0


class Evictions:
    """Whether the kernel dropped or reclaimed page cache since the previous call."""

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self._last = self.count()

    def _sample(self) -> tuple[int, int]:
        """(eviction count, free bytes): one read of /proc/vmstat."""
        try:
            vm = vmstat(self.proc)
        except OSError:
            return 0, 0
        keys = EVICTION_COUNTERS if "pgsteal_file" in vm else OLD_EVICTION_COUNTERS
        return sum(vm.get(k, 0) for k in keys), vm.get("nr_free_pages", 0) * PAGE_SIZE

    def count(self) -> int:
        """A number that moves whenever page cache is dropped (drop_caches) or reclaimed."""
        return self._sample()[0]

    def happened(self) -> bool:
        now = self.count()
        moved, self._last = now != self._last, now
        return moved

    def settled(self, wait_s: float, stop: threading.Event) -> bool:
        """Whether the kernel evicted nothing for wait_s (waited here; False when stopped meanwhile) and no
        reclaim is on its way: reclaim under pressure goes on for seconds, and what is read back while
        it does, or while a program fills the free memory that comes before it, is taken again."""
        before, free_before = self._sample()
        if stop.wait(wait_s):
            return False
        self._last, free_after = self._sample()
        return self._last == before and not reclaim_imminent(free_before, free_after, wait_s)


def reclaim_imminent(free_before: int, free_after: int, seconds: float,
                     horizon_s: float = RECLAIM_HORIZON_S) -> bool:
    """Whether free memory fell, over `seconds`, by MIN_FREE_FALL or more and at a rate that would use up
    what is left within horizon_s: then reclaim comes next, and evicts what a prefetch reads now."""
    fall = free_before - free_after
    return fall >= MIN_FREE_FALL and fall * horizon_s >= free_after * seconds
