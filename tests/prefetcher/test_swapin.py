"""Swap-in: a process swapped out under a cgroup v1 limit gets its memory back (SwapCached up, VmSwap
down, touch time down, full extents in huge pages), and a process of another program in the same
cgroup is left alone."""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from prefetcher import swapin
from prefetcher.budget import Budget
from tests import lab

pytestmark = pytest.mark.root
MB = 1 << 20


def test_swapped_process_gets_its_memory_back(tmp_path: Path) -> None:
    other_python = tmp_path / "python3-other"
    shutil.copy2(lab.exe_python(), other_python)
    with lab.swapfile("1G") as _swap, lab.memory_cgroup("swapin") as cg:
        mine, other = lab.Hog(), lab.Hog(str(other_python))
        try:
            for h in (mine, other):
                (cg / "cgroup.procs").write_text(str(h.pid))
            lab.set_limit(cg, 150 * MB)
            mine.alloc(300)
            other.alloc(40)
            lab.set_limit(cg, None)  # the user comes back: room again, but the pages are in swap
            assert lab.vmswap(mine.pid) > 100 * MB
            without = mine.touch()  # the cost MEMO should remove: faults and synchronous swap reads

            lab.set_limit(cg, 150 * MB)  # swap it out again
            lab.set_limit(cg, None)
            swapped, other_swapped = lab.vmswap(mine.pid), lab.vmswap(other.pid)
            assert swapped > 100 * MB

            # Budget first: too small a budget does nothing.
            r = swapin.swap_in(lab.exe_python(), Budget(swapped // 2))
            assert r.advised_bytes == 0 and mine.pid in r.errors
            assert lab.vmswap(mine.pid) == swapped

            cached_before = lab.meminfo("SwapCached")
            r = swapin.swap_in(lab.exe_python(), Budget(1 << 40), map_back=False)
            assert r.pids == [mine.pid] and r.advised_bytes >= swapped, r
            cached_after = lab.wait_swapcache_settles()
            assert cached_after - cached_before > swapped * 0.8, (cached_before, cached_after, swapped)

            r = swapin.swap_in(lab.exe_python(), Budget(1 << 40), collapse=swapin.thp_allowed())
            assert r.faulted_bytes >= swapped * 0.9
            assert lab.vmswap(mine.pid) < swapped * 0.05
            assert lab.vmswap(other.pid) == other_swapped, "a process of another program was swapped in"
            with_memo = mine.touch()
            assert with_memo < without / 3, (with_memo, without)
            if swapin.thp_allowed():  # the 300 MB buffer is ~150 full 2 MB extents
                assert r.collapsed_bytes >= 250 * MB, r
                assert lab.anon_huge(mine.pid) >= 250 * MB
            else:
                print("transparent huge pages are 'never' here: collapse not checked")
        finally:
            mine.close()
            other.close()


def test_runs_split_into_reads_of_bounded_size() -> None:
    mask = np.array([0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1], dtype=bool)
    assert swapin._runs(mask, 4) == [(1, 3), (6, 4), (10, 1), (12, 1)]
    assert swapin._runs(np.zeros(5, dtype=bool), 4) == []


def test_only_fully_populated_extents_are_collapsed() -> None:
    """A sparse 2 MB extent would be filled with zeros by a collapse: full_extents leaves it out."""
    huge, page = 2 * MB, lab.PAGE
    region = mmap.mmap(-1, 4 * huge)
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(region))
        base = -(-addr // huge) * huge - addr  # offset of the first aligned extent
        for off in range(base, base + huge, page):  # the first aligned extent: every page
            region[off] = 1
        for off in range(base + huge, base + 2 * huge - page, page):  # the second: all but one
            region[off] = 1
        full = swapin.full_extents(os.getpid(), [(addr, 4 * huge)])
        assert full == [(addr + base, huge)]
    finally:
        region.close()
