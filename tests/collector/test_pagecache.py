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
