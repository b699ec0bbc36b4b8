"""Swap-in: a process swapped out under a cgroup v1 limit gets its memory back (SwapCached up, VmSwap
down, touch time down), and a process of another program in the same cgroup is left alone."""

from __future__ import annotations

import shutil
from pathlib import Path

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

            r = swapin.swap_in(lab.exe_python(), Budget(1 << 40))
            assert r.faulted_bytes >= swapped * 0.9
            assert lab.vmswap(mine.pid) < swapped * 0.05
            assert lab.vmswap(other.pid) == other_swapped, "a process of another program was swapped in"
            with_memo = mine.touch()
            assert with_memo < without / 3, (with_memo, without)
        finally:
            mine.close()
            other.close()
