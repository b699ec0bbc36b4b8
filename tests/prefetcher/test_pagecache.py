"""Page cache: after a cold start, prefetching a real program's profile makes its pages resident
(cachestat says so), reads only what is missing, and never goes past the budget or the per-app cap."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from memo.contract import AppProfile, ProfileRange
from prefetcher import pagecache, syscalls
from prefetcher.budget import Budget

pytestmark = pytest.mark.root
MB = 1 << 20


def resident(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return syscalls.cachestat(fd).nr_cache * syscalls.PAGE_SIZE
    finally:
        os.close(fd)


def make_cold(files: list[str]) -> list[str]:
    """drop_caches, then DONTNEED each file; keep the files that really went cold (others' processes
    may map the same libraries, and mapped pages stay)."""
    Path("/proc/sys/vm/drop_caches").write_text("3")
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        syscalls.drop_file_cache(fd)
        os.close(fd)
    return [f for f in files if resident(f) == 0]


def profile_of(files: list[str]) -> AppProfile:
    ranges = [ProfileRange(path=f, offset=0, length=os.path.getsize(f)) for f in files if os.path.getsize(f)]
    return AppProfile(app="python3+numpy", launches=1, bytes=sum(r.length for r in ranges), ranges=ranges)


def test_cachestat_agrees_with_mincore(numpy_profile_files: list[str]) -> None:
    f = max(numpy_profile_files, key=os.path.getsize)
    fd = os.open(f, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no async readahead landing between the calls
        os.pread(fd, 3 * MB, 0)
        for _ in range(5):  # other processes may load the same library meanwhile: agree on a still cache
            by_mincore = sum(b & 1 for b in syscalls.mincore(fd, 0, size))
            by_cachestat = syscalls.cachestat(fd, 0, size).nr_cache
            if by_cachestat == by_mincore:
                break
            time.sleep(0.2)
        assert by_cachestat == by_mincore > 0
    finally:
        os.close(fd)


def test_prefetch_resident_within_budget_and_cap(program_copy: list[str]) -> None:
    files = make_cold(program_copy)
    profile = profile_of(files)
    assert len(files) == len(program_copy) and profile.bytes > 20 * MB
    assert sum(resident(f) for f in files) == 0

    budget = Budget(8 * MB)
    r = pagecache.prefetch_profile(profile, budget, app_cap=100 * MB)
    now = sum(resident(f) for f in files)
    assert r.truncated and r.prefetched <= 8 * MB and budget.spent <= 8 * MB
    assert r.prefetched <= now <= 8 * MB, f"{now} bytes resident for a budget of 8 MB"

    r = pagecache.prefetch_profile(profile, Budget(1 << 40), app_cap=5 * MB)
    grown = sum(resident(f) for f in files) - now
    assert r.prefetched <= 5 * MB and grown <= 5 * MB, "per-app cap exceeded"

    r = pagecache.prefetch_profile(profile, Budget(1 << 40), app_cap=1 << 40)
    assert r.resident_before >= now  # the pages already there were not read again
    page_total = sum(-(-os.path.getsize(f) // syscalls.PAGE_SIZE) * syscalls.PAGE_SIZE for f in files)
    assert r.prefetched == page_total - r.resident_before
    assert sum(resident(f) for f in files) == page_total, "cachestat: not every profile page is resident"

    again = pagecache.prefetch_profile(profile, Budget(1 << 40), app_cap=1 << 40)
    assert again.prefetched == 0 and again.resident_before == page_total


def test_dry_run_reads_nothing(program_copy: list[str]) -> None:
    files = make_cold(program_copy)
    r = pagecache.prefetch_profile(profile_of(files), Budget(1 << 40), 1 << 40, dry_run=True)
    assert r.prefetched > 0 and sum(resident(f) for f in files) == 0


def test_only_regular_files_outside_proc_sys_dev(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"x" * 8192)
    (tmp_path / "to_proc").symlink_to("/proc/self/status")
    (tmp_path / "to_data").symlink_to(target)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    paths = ["/proc/self/status", "/sys/kernel/mm/transparent_hugepage/enabled", "/dev/zero",
             str(tmp_path / "to_proc"), str(tmp_path / "fifo"), str(tmp_path / "dir"), "relative/file",
             str(tmp_path / "missing"), str(tmp_path / "to_data")]
    ranges = [ProfileRange(path=p, offset=0, length=4096) for p in paths]
    r = pagecache.prefetch_profile(AppProfile(app="x", launches=1, bytes=0, ranges=ranges),
                                   Budget(1 << 30), 1 << 30)
    assert set(r.skipped) == set(paths[:-1])
    assert [f.path for f in r.files] in ([], [str(target)])  # the symlink resolves to a regular file
    assert stat.S_ISREG(os.stat(target).st_mode)
