"""Profiles built from the real store: a launch's merged pages are kept between builds and read again
only when the launch gained rows; the profile is the union of the app's last RECENT profiled launches."""

from __future__ import annotations

from pathlib import Path

from inference import profiles
from inference.ingest import Ingestor
from inference.profiles import Profiles
from inference.segment import Rules
from inference.store import PAGE_SIZE, Store
from tests.inference.events import batch, exec_ev, exit_ev, fork_ev, page_ev

GCC = "/usr/bin/gcc"


def _ranges(p: Profiles) -> list[tuple[str, int, int]]:
    return [(r.path, r.offset // PAGE_SIZE, r.length // PAGE_SIZE) for r in p.get(GCC).ranges]


def test_a_launch_gaining_pages_after_a_build_is_read_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "inference.sqlite3")
    ing = Ingestor(store, Rules(), window_s=10.0)
    shell = [exec_ev(70, 1, "/usr/bin/bash", ["-bash"])]
    launch = [fork_ev(71, 70), exec_ev(71, 70, GCC), page_ev(71, "/usr/lib/a", 0, 8)]
    ing.ingest(batch("s", 1, shell + launch))
    p = Profiles(store)
    assert _ranges(p) == [("/usr/lib/a", 0, 8)]
    ing.ingest(batch("s", 2, [page_ev(71, "/usr/lib/a", 8, 4), page_ev(71, "/usr/lib/b", 2, 1, ino=8)]))
    p.invalidate({GCC})
    assert _ranges(p) == [("/usr/lib/a", 0, 12), ("/usr/lib/b", 2, 1)]

    # more launches than RECENT: the oldest one's file drops out; the kept launches are not read again
    seq = 3
    for i in range(profiles.RECENT):
        pid = 80 + i
        ing.ingest(batch("s", seq, [exit_ev(pid - 1 if i else 71), fork_ev(pid, 70), exec_ev(pid, 70, GCC),
                                    page_ev(pid, "/usr/lib/a", 0, 2)]))
        seq += 1
    p.invalidate({GCC})
    assert _ranges(p) == [("/usr/lib/a", 0, 2)]
    reads: list[int] = []
    real = store.launch_pages

    def counted(launch_id: int) -> list[tuple[str, int, int]]:
        reads.append(launch_id)
        return real(launch_id)

    store.launch_pages = counted  # type: ignore[method-assign]  # the real store's answer, counted
    p.invalidate({GCC})
    assert _ranges(p) == [("/usr/lib/a", 0, 2)] and reads == []
