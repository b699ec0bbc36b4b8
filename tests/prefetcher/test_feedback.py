"""Feedback: a page-cache action is resolved by the service's launch notice or, failing that, by a
process of the program seen starting in /proc (scanned at most every SCAN_EVERY_S); used = all of it
where the kernel evicted nothing between the action and the launch's start, else what is still resident
once the launch's start-up reads are over; on real files, real processes and the real page cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from prefetcher import activity, feedback, pagecache, swapin

PAGE = 4096


def _action(path: Path, app: str) -> pagecache.PrefetchResult:
    """A prefetch of the whole of path (made resident by writing it) for app."""
    size = path.stat().st_size
    return pagecache.PrefetchResult(app=app, prefetched=size,
                                    files=[pagecache.FileAction(str(path), runs=[(0, size)])])


def test_a_launch_notice_resolves_an_action_with_what_stayed_resident(tmp_path: Path) -> None:
    data = tmp_path / "lib.so"
    data.write_bytes(b"x" * 16 * PAGE)
    tracker = feedback.FeedbackTracker(settle_s=0.0)
    tracker.pagecache_done(1000, _action(data, "/usr/bin/app"), horizon_s=60)
    tracker.launched("/usr/bin/app", time.time())
    tracker.poll()
    [item] = tracker.ready
    assert item.launched and item.bytes_prefetched == 16 * PAGE
    assert item.bytes_used == 16 * PAGE and item.bytes_wasted == 0  # written just now: still resident
    assert tracker.pending == []


def test_a_started_process_resolves_an_action_once_proc_is_scanned_again(tmp_path: Path) -> None:
    """The /proc scan is the fallback for launches no notice names; it runs at most every
    SCAN_EVERY_S, so a process that starts after a scan is seen by the next one."""
    exe = tmp_path / "sleeper"
    shutil.copy("/usr/bin/sleep", exe)
    data = tmp_path / "data"
    data.write_bytes(b"y" * 4 * PAGE)
    tracker = feedback.FeedbackTracker(settle_s=0.0)
    tracker.pagecache_done(1000, _action(data, str(exe)), horizon_s=60)
    tracker.poll()  # scans: nothing of the program runs yet
    assert tracker.pending and not tracker.ready
    proc = subprocess.Popen([str(exe), "30"])
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in swapin.pids_of(str(exe)):  # its exec done
            assert time.monotonic() < deadline
            swapin._exe_map = (0.0, {})
            time.sleep(0.01)
        swapin._exe_map = (0.0, {})
        tracker.poll(time.time() + 1)
        assert not tracker.ready, "scanned again before SCAN_EVERY_S"
        tracker._scanned_at -= feedback.SCAN_EVERY_S
        tracker.poll(time.time() + 1)
        [item] = tracker.ready
        assert item.launched and item.bytes_used == 4 * PAGE
    finally:
        proc.kill()
        proc.wait()


def test_an_action_whose_program_never_starts_is_all_waste_after_its_horizon(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"z" * 2 * PAGE)
    tracker = feedback.FeedbackTracker()
    tracker.pagecache_done(1000, _action(data, str(tmp_path / "never")), horizon_s=1)
    tracker.poll(time.time() + feedback.MIN_HORIZON_S + 1)
    [item] = tracker.ready
    assert not item.launched and item.bytes_wasted == 2 * PAGE and item.bytes_used == 0


def _evict(path: Path) -> None:
    """Page cache really dropped: the file written back, then drop_caches (the eviction counters move)
    and DONTNEED on the file itself."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_an_eviction_after_the_launch_began_does_not_make_its_prefetch_waste(tmp_path: Path) -> None:
    """The launch had every page when it began; reclaim right after it (the rule on a loaded machine,
    and bench/replay's next eviction) must not turn them into waste."""
    data = tmp_path / "lib.so"
    data.write_bytes(b"x" * 16 * PAGE)
    evictions = activity.Evictions()
    tracker = feedback.FeedbackTracker(settle_s=0.0, evictions=evictions.count)
    tracker.pagecache_done(1000, _action(data, "/usr/bin/app"), horizon_s=60)
    began = time.time()
    tracker.launch_began(began)
    before = evictions.count()
    _evict(data)
    assert evictions.count() != before and pagecache.resident_bytes(tracker.pending[0].files) < 16 * PAGE
    tracker.launched("/usr/bin/app", began)
    tracker.poll()
    [item] = tracker.ready
    assert item.bytes_used == 16 * PAGE and item.bytes_wasted == 0


def test_an_eviction_before_the_launch_began_counts_what_it_took_as_waste(tmp_path: Path) -> None:
    data = tmp_path / "lib.so"
    data.write_bytes(b"x" * 16 * PAGE)
    evictions = activity.Evictions()
    tracker = feedback.FeedbackTracker(settle_s=0.0, evictions=evictions.count)
    tracker.pagecache_done(1000, _action(data, "/usr/bin/app"), horizon_s=60)
    _evict(data)
    left = pagecache.resident_bytes(tracker.pending[0].files)
    assert left < 16 * PAGE
    began = time.time()
    tracker.launch_began(began)
    tracker.launched("/usr/bin/app", began)
    tracker.poll()
    [item] = tracker.ready
    assert item.bytes_used <= left and item.bytes_wasted >= 16 * PAGE - left
