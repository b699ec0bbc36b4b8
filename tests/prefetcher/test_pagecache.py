"""Page cache: after a cold start, prefetching a real program's profile makes its pages resident
(cachestat says so), reads only what is missing, and never goes past the budget or the per-app cap."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from memo.contract import AppProfile, ProfileRange
from prefetcher import pagecache, syscalls
from prefetcher.budget import Budget
from prefetcher.plan import Span

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


def test_only_regular_files_outside_proc_sys_dev_and_no_links(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"x" * 8192)
    (tmp_path / "to_proc").symlink_to("/proc/self/status")
    (tmp_path / "to_data").symlink_to(target)
    (tmp_path / "linkdir").symlink_to(tmp_path)  # a planted link in a directory component
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    paths = ["/proc/self/status", "/sys/kernel/mm/transparent_hugepage/enabled", "/dev/zero", "/dev/sda",
             str(tmp_path / "to_proc"), str(tmp_path / "fifo"), str(tmp_path / "dir"), "relative/file",
             str(tmp_path / "missing"), str(tmp_path / "to_data"), str(tmp_path / "linkdir" / "data"),
             f"{tmp_path}/../{tmp_path.name}/data", str(tmp_path) + "/data\0/etc/shadow", str(target)]
    ranges = [ProfileRange.model_construct(path=p, offset=0, length=4096) for p in paths]
    r = pagecache.prefetch_profile(AppProfile.model_construct(app="x", launches=1, bytes=0, ranges=ranges),
                                   Budget(1 << 30), 1 << 30)
    assert set(r.skipped) == set(paths[:-1]), "links, devices, FIFOs, odd names: all refused, none fatal"
    assert [f.path for f in r.files] in ([], [str(target)])
    assert stat.S_ISREG(os.stat(target).st_mode)


def test_a_fifo_or_device_is_never_really_opened(tmp_path: Path) -> None:
    """A writer blocked opening a FIFO wakes the moment anyone opens it for reading: it stays blocked
    through a prefetch of that FIFO (checked on an O_PATH descriptor, which opens nothing)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens
        opened.set()
        os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(0.1)
    assert pagecache.open_regular(str(fifo)) is None
    assert not opened.wait(0.3), "the prefetcher opened the FIFO"
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # let the writer go
    t.join(5)
    os.close(fd)
    assert opened.is_set()


def test_files_only_for_a_user_who_may_read_them(tmp_path: Path) -> None:
    """Root reads ahead on a prediction's behalf, so a file private to another user is refused."""
    os.chmod(tmp_path, 0o755)
    private, shared = tmp_path / "private", tmp_path / "shared"
    for f, mode in ((private, 0o600), (shared, 0o644)):
        f.write_bytes(b"x" * 8192)
        os.chown(f, 65534, 65534)
        os.chmod(f, mode)
    for path, uid, ok in ((private, 65534, True), (private, 12345, False), (private, 0, True),
                          (shared, 12345, True), (private, None, True)):
        got = pagecache.open_regular(str(path), uid)
        assert (got is not None) == ok, (path, uid)
        if got:
            os.close(got[0])


def test_spans_known_resident_are_not_looked_at_again(tmp_path: Path) -> None:
    """A span found or read wholly resident is remembered (``settled``): the next read of the plan counts
    it without opening its file. A dry run remembers only what it found resident, never what it would
    have read."""
    held, cold = tmp_path / "held", tmp_path / "cold"
    cold.write_bytes(os.urandom(MB))
    os.sync()
    assert make_cold([str(cold)]) == [str(cold)]
    held.write_bytes(os.urandom(MB))  # its pages are in the cache as written
    assert resident(str(held)) == MB
    plan = [Span(0.9, str(p), 0, MB, owner="app") for p in (held, cold)]

    dry: pagecache.Settled = {}
    pagecache.prefetch_spans(plan, Budget(4 * MB), 0.1, 0.0, 4 * MB, dry_run=True, settled=dry)
    assert dry == {(str(held), 0, MB): MB}

    settled: pagecache.Settled = {}
    first = pagecache.prefetch_spans(plan, Budget(4 * MB), 0.1, 0.0, 4 * MB, settled=settled)["app"]
    assert first.prefetched == MB and first.resident_before == MB
    assert set(settled) == {(str(held), 0, MB), (str(cold), 0, MB)}
    held.unlink()
    cold.unlink()  # not opened again: gone files would be refused
    again = pagecache.prefetch_spans(plan, Budget(4 * MB), 0.1, 0.0, 4 * MB, settled=settled)["app"]
    assert (again.prefetched, again.resident_before, again.profile_bytes) == (0, 2 * MB, 2 * MB)
    assert again.skipped == {}
    fresh = pagecache.prefetch_spans(plan, Budget(4 * MB), 0.1, 0.0, 4 * MB, settled={})["app"]
    assert set(fresh.skipped) == {str(held), str(cold)}
