"""Launch profiles: a program that reads a 20 MB file in its first second has that file's path and
page ranges in its pagecache records."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.bpf]
SIZE = 20 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def _cold_file(path: Path) -> None:
    """A 20 MB file on disk that is not in the page cache."""
    with open(path, "wb") as f:
        f.write(os.urandom(SIZE))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def test_file_read_at_start_is_in_launch_profile(start_collector, tmp_path: Path) -> None:
    data = tmp_path / "profile-data.bin"
    _cold_file(data)
    c = start_collector(["--stdout"])
    reader = subprocess.Popen(["cat", str(data)], stdout=subprocess.DEVNULL)
    reader.wait()
    time.sleep(0.5)
    c.stop()
    mine = [e for e in c.events() if e["type"] == "pagecache" and e["pid"] == reader.pid]
    ranges = [e for e in mine if e["path"] == str(data)]
    assert ranges, f"no pagecache record names {data}; got {mine[:5]}"
    st = data.stat()
    assert all(e["ino"] == st.st_ino for e in ranges)
    pages: set[int] = set()
    for e in ranges:
        span = set(range(e["index"], e["index"] + e["nr_pages"]))
        assert not span & pages, "a page was reported twice (the kernel de-duplicates)"
        pages |= span
    assert pages == set(range(SIZE // PAGE)), "the ranges cover the whole file"
    assert len(ranges) < 200, "contiguous pages are coalesced into ranges"


def _launch_pages(events: list[dict], root: int) -> set[tuple[int, int, int]]:
    """(dev, ino, page) of every page the launch rooted at ``root`` (and the processes it forked) used."""
    tree = {root}
    for e in events:
        if e["type"] in ("fork", "exec") and e.get("ppid") in tree:
            tree.add(e["pid"])
    return {(e["dev"], e["ino"], i) for e in events if e["type"] == "pagecache" and e["pid"] in tree
            for i in range(e["index"], e["index"] + e["nr_pages"])}


def test_profile_is_what_a_launch_uses_whatever_the_cache_held(start_collector, tmp_path: Path) -> None:
    """`import torch` launched cold (drop_caches) and then warm (every page cached) uses the same pages:
    the warm launch's profile covers >= 90 % of the cold one's, and the two differ by <= 10 % in bytes.
    A profile of page-cache insertions would be ~250 MB cold and almost nothing warm."""
    python = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
    c = start_collector(["--stdout"])
    launches = []
    for cold in (True, False):
        if cold:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3")
        p = subprocess.Popen([python, "-c", "import torch"])
        assert p.wait(timeout=120) == 0
        launches.append(p.pid)
    time.sleep(0.5)
    c.stop()
    events = c.events()
    cold_pages, warm_pages = (_launch_pages(events, pid) for pid in launches)
    cold_mb, warm_mb = len(cold_pages) * PAGE / 1e6, len(warm_pages) * PAGE / 1e6
    assert cold_mb > 50, f"cold profile {cold_mb:.1f} MB: torch's libraries are missing"
    covered = len(cold_pages & warm_pages) / len(cold_pages)
    assert covered >= 0.90, f"warm profile covers {covered:.1%} of the cold one"
    assert abs(cold_mb - warm_mb) <= 0.10 * cold_mb, f"cold {cold_mb:.1f} MB vs warm {warm_mb:.1f} MB"
    print(f"torch profile: cold {cold_mb:.1f} MB, warm {warm_mb:.1f} MB, warm covers {covered:.1%} of cold")
    named = [e for e in events if e["type"] == "pagecache" and e["pid"] in launches]
    assert sum(1 for e in named if e["path"]) >= 0.95 * len(named), "the collector names the files"
