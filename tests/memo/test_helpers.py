"""The small shared helpers: merged intervals, the bounded most-recently-used map, the atomic write."""

from __future__ import annotations

import os
from pathlib import Path

from memo.helpers import Recent, atomic_write, merge_spans


def test_spans_that_overlap_or_touch_are_merged_and_the_rest_kept_apart() -> None:
    spans = [(10, 20), (0, 5), (5, 8), (12, 15), (30, 31), (19, 25)]
    assert merge_spans(spans) == [(0, 8), (10, 25), (30, 31)]
    assert merge_spans([]) == []


def test_recent_keeps_the_entries_used_last() -> None:
    kept: Recent[str, int] = Recent(2)
    kept["a"], kept["b"] = 1, 2
    assert kept.get("a") == 1  # a read marks "a" used: "b" is now the oldest
    kept["c"] = 3
    assert list(kept) == ["a", "c"] and kept.get("b") is None and kept.get("b", 0) == 0
    kept["a"] = 4  # a write marks it used too
    kept["d"] = 5
    assert dict(kept) == {"a": 4, "d": 5}


def test_atomic_write_replaces_the_file_whole_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    atomic_write(path, "new", mode=0o640)
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind
