"""The prefetcher's evictions signal on the real kernel: page cache a memory cgroup's limit reclaims moves
it (pgsteal_file counts cgroup reclaim; pgsteal_kswapd and pgsteal_direct do not), and drop_caches does;
free memory taken fast is a reclaim on its way."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prefetcher import activity, syscalls
from tests import lab

pytestmark = pytest.mark.root
MB = 1 << 20
# Joins the cgroup given, then reads the file given through the page cache.
READER = """
import sys
open(sys.argv[1] + "/cgroup.procs", "w").write("0")
with open(sys.argv[2], "rb") as f:
    while f.read(1 << 20):
        pass
"""


def test_reclaim_under_a_memory_cgroup_limit_is_an_eviction(tmp_path: Path) -> None:
    if not lab.V1_MEMORY.is_dir():
        pytest.skip("no cgroup v1 memory controller on this kernel")
    assert "pgsteal_file" in activity.vmstat(), "this kernel's /proc/vmstat has no pgsteal_file"
    data = tmp_path / "data"
    data.write_bytes(os.urandom(96 * MB))
    fd = os.open(data, os.O_RDONLY)
    os.fsync(fd)
    syscalls.drop_file_cache(fd)
    os.close(fd)
    evictions = activity.Evictions()
    before = activity.vmstat()["pgsteal_file"]
    with lab.memory_cgroup("evictions") as cg:
        (cg / "memory.limit_in_bytes").write_text(str(32 * MB))
        subprocess.run([sys.executable, "-c", READER, str(cg), str(data)], check=True, timeout=60)
    reclaimed = (activity.vmstat()["pgsteal_file"] - before) * syscalls.PAGE_SIZE
    assert reclaimed >= 48 * MB, f"only {reclaimed >> 20} MB of file pages counted as reclaimed"
    assert evictions.happened()
    Path("/proc/sys/vm/drop_caches").write_text("1")
    assert evictions.happened(), "drop_caches"


def test_free_memory_running_out_fast_is_a_reclaim_on_its_way() -> None:
    """A program filling memory evicts nothing until free memory is gone, and what is read meanwhile is
    evicted seconds later: settled() says no while free memory falls fast, yes once it holds."""
    evictions, stop = activity.Evictions(), threading.Event()
    with lab.filling_memory() as wait_full:
        assert not evictions.settled(0.3, stop), "free memory fell by a third of it in seconds"
        wait_full()
        deadline = time.monotonic() + 10
        while not evictions.settled(0.3, stop):
            assert time.monotonic() < deadline, "free memory holds: nothing is on its way"


def test_reclaim_imminent_is_a_fall_that_would_use_up_free_memory_within_the_horizon() -> None:
    GB = 1 << 30
    assert activity.reclaim_imminent(6 * GB, 6 * GB - 100 * MB, 0.3)  # 333 MB/s, 6 GB left: 18 s
    assert not activity.reclaim_imminent(20 * GB, 20 * GB - 100 * MB, 0.3)  # 20 GB left: 60 s
    assert not activity.reclaim_imminent(100 * MB, 80 * MB, 0.3), "below MIN_FREE_FALL"
    assert not activity.reclaim_imminent(1 * GB, 2 * GB, 0.3), "free memory grew"
