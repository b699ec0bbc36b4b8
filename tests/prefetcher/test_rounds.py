"""The prefetcher's rounds against the REAL inference service and kernel: a plan is read once per
launch, again only after the kernel evicted it and the eviction is over (at most twice in all, never
every cycle), not while a launch that just began is still reading from disk, and not while the kernel is
evicting page cache."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from memo.config import Config, PathsConfig, PrefetcherConfig
from memo.contract import AppProfile, ProfileRange
from prefetcher import syscalls
from prefetcher.budget import INTERVAL_MAX_S
from prefetcher.daemon import TRIES_PER_ROUND, Prefetcher, StaticSource
from tests import lab
from tests.inference.conftest import Service
from tests.prefetcher.conftest import PREFETCHER
from tests.prefetcher.test_daemon import UID, events

pytestmark = pytest.mark.root
MB = 1 << 20
# Reads a file with O_DIRECT at ~16 MB/s: disk reads by another process, for about `seconds`.
SLOW_READER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end and os.readv(fd, [buf]) > 0:
    time.sleep(0.06)
"""


def _resident(fd: int) -> int:
    return syscalls.cachestat(fd).nr_cache * syscalls.PAGE_SIZE


def _until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _drop_caches() -> None:
    time.sleep(0.5)  # readahead still in flight is not dropped: let it land first
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1")


def test_reads_once_per_launch_again_after_eviction_and_holds_while_a_launch_reads(tmp_path: Path) -> None:
    svc = Service(tmp_path)
    svc.start()
    app_b = tmp_path / "memo-test-editor"
    shutil.copy2("/usr/bin/sleep", app_b)
    data = tmp_path / "editor-data"
    data.write_bytes(os.urandom(8 * MB))
    other = tmp_path / "other-data"
    other.write_bytes(os.urandom(64 * MB))
    prefetcher = None
    out = ""
    fd = os.open(data, os.O_RDONLY)
    try:
        evs = events("/usr/bin/true", str(app_b), data, 8)
        svc.unix.post("/v1/events", json={"source_id": "rounds", "seq": 0, "events": evs}).raise_for_status()
        svc.wait_launches(UID, 17)
        os.fsync(fd)
        syscalls.drop_file_cache(fd)
        prefetcher = subprocess.Popen([PREFETCHER, "--uid", str(UID), "--poll-interval", "0.3", "--psi-max",
                                       "100", "--log-level", "DEBUG"], env=svc.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        assert _until(lambda: _resident(fd) == 8 * MB, 20), "first read of the plan"

        _drop_caches()
        assert _until(lambda: _resident(fd) == 8 * MB, 5), "read again after an eviction"
        _drop_caches()
        time.sleep(3)
        assert _resident(fd) == 0, "read a third time in the same round: an unused profile every cycle"

        # a launch begins while another program reads from disk: nothing is read until it is done
        reader = subprocess.Popen([sys.executable, "-c", SLOW_READER, str(other), "3"])
        time.sleep(0.3)
        last = evs[-1]
        launch = [{**e, "pid": e["pid"] + 100, "ts_ns": e["ts_ns"] + 10**9} for e in evs[-3:]]
        assert last["type"] == "exit" and launch[1]["exe"] == "/usr/bin/true"
        body = {"source_id": "rounds", "seq": 1, "events": launch}
        svc.unix.post("/v1/events", json=body).raise_for_status()
        while reader.poll() is None:
            assert _resident(fd) == 0, "prefetched while a launch was reading"
            time.sleep(0.1)
        assert _until(lambda: _resident(fd) == 8 * MB, 5), "read once the launch's reads were over"

        # reclaim that goes on for seconds (as under memory pressure): the re-read waits for its end,
        # instead of being taken again by it and leaving nothing for the launch after it
        _evict_for(3)
        assert _until(lambda: _resident(fd) == 8 * MB, 5), "read again once the evictions were over"

        # a launch during such reclaim: its round's first read, too, waits for the end of the evictions
        storm = threading.Thread(target=_evict_for, args=(4,))
        storm.start()
        time.sleep(0.3)
        launch = [{**e, "pid": e["pid"] + 200, "ts_ns": e["ts_ns"] + 2 * 10**9} for e in evs[-3:]]
        posted = time.time()
        body = {"source_id": "rounds", "seq": 2, "events": launch}
        svc.unix.post("/v1/events", json=body).raise_for_status()
        storm.join()
        storm_over = time.time()
        assert _until(lambda: _resident(fd) == 8 * MB, 5), "read once the evictions were over"
    finally:
        os.close(fd)
        if prefetcher is not None:
            prefetcher.send_signal(signal.SIGTERM)
            out, _ = prefetcher.communicate(timeout=30)
            print(out)
        svc.stop()
    during = [line for line in out.splitlines() if "read ahead" in line and app_b.name in line
              and posted <= _logged_at(line) <= storm_over - 0.2]
    assert not during, f"read while the kernel was evicting: {during}"


def _evict_for(seconds: float) -> None:
    """Page cache dropped every 0.1 s for `seconds`: reclaim that goes on, as under memory pressure."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1")
        time.sleep(0.1)


def _logged_at(line: str) -> float:
    """Unix time of a log line (memo.logs' format starts with asctime, local time)."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return 0.0


@pytest.fixture
def editor(tmp_path: Path) -> Iterator[tuple[Prefetcher, int]]:
    """A prefetcher whose one prediction (a static source) is an 8 MB file on disk, not in the page cache;
    and that file, open for _resident()."""
    data = tmp_path / "editor-data"
    data.write_bytes(os.urandom(8 * MB))
    profile = AppProfile(app=str(tmp_path / "memo-test-editor"), launches=1, bytes=8 * MB,
                         ranges=[ProfileRange(path=str(data), offset=0, length=8 * MB)])
    (tmp_path / "profile.json").write_text(profile.model_dump_json())
    cfg = Config(paths=PathsConfig(run_dir=tmp_path / "run", data_dir=tmp_path / "state"),
                 prefetcher=PrefetcherConfig(psi_some_avg10_max=100))
    fd = os.open(data, os.O_RDONLY)
    try:
        os.fsync(fd)
        syscalls.drop_file_cache(fd)
        yield Prefetcher(cfg, StaticSource([], [tmp_path / "profile.json"], None)), fd
    finally:
        os.close(fd)


def test_a_read_that_brought_nothing_leaves_the_round_its_re_read(editor: tuple[Prefetcher, int]) -> None:
    """A read that found no room (the budget is MemAvailable's share: a hog took it) reads nothing; it
    must not use up the round's re-read, or the launch after the hog finds its plan evicted and unread."""
    p, fd = editor
    assert p.cycle().prefetched == 8 * MB and _resident(fd) == 8 * MB
    _drop_caches()
    p.pcfg.budget_share = 1e-12  # no room: the re-read is granted nothing
    r = p.reread()
    assert r is not None and r.acted and r.prefetched == 0 and _resident(fd) == 0
    p.pcfg.budget_share = 0.1
    r = p.reread()
    assert r is not None and r.prefetched == 8 * MB, "the re-read was used up by a read of nothing"
    _drop_caches()
    assert p.reread() is None and _resident(fd) == 0, "a third read that brings pages"

    # reads that bring nothing are bounded too (each checks the plan's files again)
    assert p.cycle().prefetched == 8 * MB, "a new round reads its plan"
    _drop_caches()
    p.pcfg.budget_share = 1e-12
    tries = 0
    while (r := p.reread()) is not None:
        assert r.prefetched == 0
        tries += 1
        assert tries < 100
    assert tries == TRIES_PER_ROUND - 1, tries


def test_a_plan_is_not_read_while_a_program_fills_memory_and_is_read_once_it_stops(
        editor: tuple[Prefetcher, int]) -> None:
    """Before reclaim starts, a program filling memory evicts nothing, and a plan read then is evicted
    again once free memory is gone (bench/replay's hog: its first seconds took 455-616 MB of reads a
    session). The round's read is owed until free memory holds, then made."""
    p, fd = editor
    with lab.filling_memory() as wait_full:
        r = p.cycle()
        assert r.prefetched == 0 and _resident(fd) == 0 and "read owed" in r.reason, r
        wait_full()
        deadline = time.monotonic() + 10
        while (r := p.reread()) is None or r.prefetched == 0:
            assert r is not None and not r.acted, f"an owed read was given up: {r}"
            assert time.monotonic() < deadline, "never read once free memory held"
    assert r.prefetched == 8 * MB and _resident(fd) == 8 * MB


def test_the_re_read_after_pressure_is_judged_on_the_pressure_now_not_its_ten_second_average(
        editor: tuple[Prefetcher, int]) -> None:
    """Right after a long eviction (bench/replay's hog: 14-22 s) PSI's avg10 is still high for seconds, and
    a gauge last read before it falls back to avg10: the re-read waited past the launch it was for. It
    is judged on the stall share over its own settle wait instead."""
    p, fd = editor
    assert p.cycle().prefetched == 8 * MB  # the gauge's last reading until the re-read
    gauge_read_at = time.monotonic()
    _drop_caches()
    p.gauge.limit = 1.0
    with lab.thrashing("reread-pressure") as stop_thrashing:
        while time.monotonic() - gauge_read_at <= INTERVAL_MAX_S:
            time.sleep(0.5)
        stop_thrashing()
        time.sleep(0.5)
        assert lab.psi_avg10() > p.gauge.limit, "avg10 still remembers the pressure"
        r = p.reread()
    assert r is not None and r.prefetched == 8 * MB, r
    assert _resident(fd) == 8 * MB
