"""The user-space pipeline without the kernel: page-range coalescing and the on-disk spool."""

from __future__ import annotations

from pathlib import Path

from collector import records
from collector.batch import Batcher, coalesce
from collector.spool import SEQ_RESERVE, Spool
from memo.contract import MAX_RANGE_PAGES, EventBatch, ExecEvent, LostEvent, PageCacheEvent


def _page(pid: int, ino: int, index: int, nr: int = 1) -> PageCacheEvent:
    return PageCacheEvent(ts_ns=index, pid=pid, dev=8, ino=ino, index=index, nr_pages=nr)


def _exec(i: int) -> ExecEvent:
    return ExecEvent(ts_ns=i, pid=i, ppid=1, uid=0, cgroup_id=1, comm="x", filename="/bin/x")


def test_coalesce_merges_contiguous_pages_per_file_and_pid() -> None:
    events = [_page(1, 10, 0), _page(1, 10, 1, 4), _page(1, 11, 0), _page(2, 10, 5),
              _page(1, 10, 5), _page(1, 10, 9)]
    out = coalesce(events)
    ranges = [(e.pid, e.ino, e.index, e.nr_pages) for e in out]
    assert ranges == [(1, 10, 0, 6), (1, 11, 0, 1), (2, 10, 5, 1), (1, 10, 9, 1)]


def test_usage_chunks_become_one_record_per_run_of_used_pages() -> None:
    """A `usage` entry is a 64-page chunk's bitmap; a run that goes on into the next chunk of the same
    file and process is one record (with the earlier first use), up to MAX_RANGE_PAGES."""
    full = (1 << 64) - 1
    entries = [(7, 8, 10, 1, 500, full), (7, 8, 10, 0, 900, 0b1111 << 60 | 0b101),  # chunks 0 and 1
               (7, 8, 11, 1, 300, 1),  # another file: its own record
               (9, 8, 10, 2, 100, 1)]  # another process, next to pid 7's run: its own record
    got = [(e.pid, e.ino, e.index, e.nr_pages, e.ts_ns) for e in records.usage_events(entries)]
    assert got == [(7, 10, 0, 1, 900), (7, 10, 2, 1, 900), (7, 10, 60, 68, 500), (7, 11, 64, 1, 300),
                   (9, 10, 128, 1, 100)]
    many = [(1, 8, 10, c, c, full) for c in range(MAX_RANGE_PAGES // 64 + 1)]
    assert [e.nr_pages for e in records.usage_events(many)] == [MAX_RANGE_PAGES, 64]


def test_batcher_seals_by_size() -> None:
    sealed: list[list] = []
    b = Batcher(sealed.append, max_events=3, max_age_s=60)
    b.add([_exec(i) for i in range(7)])
    assert [len(s) for s in sealed] == [3, 3]
    b.flush()
    assert [len(s) for s in sealed] == [3, 3, 1]


def test_batcher_sends_an_exec_at_once_and_the_rest_in_bulk(monkeypatch) -> None:
    """An exec waits at most max_age_s (predictions follow it) and takes what came before with it;
    pages, forks and exits alone wait bulk_age_s, so one launch makes a few batches, not dozens."""
    clock = [100.0]
    monkeypatch.setattr("collector.batch.time.monotonic", lambda: clock[0])
    sealed: list[list] = []
    b = Batcher(sealed.append, max_events=100, max_age_s=0.02, bulk_age_s=1.0,
                urgent=lambda ev: isinstance(ev, ExecEvent))
    b.add([_page(1, 10, 0)])
    clock[0] += 0.5
    b.tick()
    assert sealed == [], "pages wait for the bulk interval"
    b.add([_exec(1)])
    clock[0] += 0.01
    b.tick()
    assert sealed == []
    clock[0] += 0.011
    b.tick()
    assert [len(s) for s in sealed] == [2], "the exec went out within its interval, the page with it"
    b.add([_page(1, 10, 1)])
    clock[0] += 0.99
    b.tick()
    assert len(sealed) == 1
    clock[0] += 0.02
    b.tick()
    assert [len(s) for s in sealed] == [2, 1]


def test_spool_after_a_reboot_never_hands_out_a_seq_again(tmp_path: Path) -> None:
    """A power cut may lose the newest batch files and next_seq with them (none is fsynced), while the
    service stored those seqs: after a reboot the spool resumes SEQ_RESERVE further on."""
    spool = Spool(tmp_path, "src", max_bytes=10**9)
    for i in range(3):
        spool.append([_exec(i)])
    (spool.dir / "next_seq").write_text(f"1 {'0' * 36}")  # an older write, of another boot
    for item in spool.pending():
        item.path.unlink()  # the batches were lost too
    assert Spool(tmp_path, "src", max_bytes=10**9).append([_exec(9)]).seq == 1 + SEQ_RESERVE


def test_spool_orders_resumes_and_bounds(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "src", max_bytes=10**9)
    for i in range(3):
        spool.append([_exec(i)])
    assert [s.seq for s in spool.pending()] == [0, 1, 2]
    spool.remove(spool.pending()[0])
    again = Spool(tmp_path, "src", max_bytes=10**9)  # a restarted collector
    assert [s.seq for s in again.pending()] == [1, 2]
    assert again.append([_exec(9)]).seq == 3  # in the same boot: dense

    size = again.pending()[0].path.stat().st_size
    small = Spool(tmp_path, "src", max_bytes=size * 5 // 2)
    small.append([_exec(10)])  # over the bound: the oldest batches go, counted
    left = small.pending()
    assert len(left) == 2 and left[-1].seq == 4
    batch = small.append([_exec(11)])
    assert isinstance(batch.events[0], LostEvent) and batch.events[0].count >= 1
    stored = EventBatch.model_validate_json(small.pending()[-1].path.read_bytes())
    assert stored.seq == batch.seq and stored.events == batch.events


def test_spool_renumbers_this_runs_batches_past_the_service_without_losing_one(tmp_path: Path) -> None:
    """next_seq lost, four batches spooled (seqs 0-3) while the service already holds up to seq 1: they
    move to 2-5, each whole, none written over by another's new name."""
    spool = Spool(tmp_path, "src", max_bytes=10**9)
    assert not spool.seq_known
    for i in range(4):
        spool.append([_exec(i)])
    assert spool.resume_after(1) == 4
    left = spool.pending()
    assert [s.seq for s in left] == [2, 3, 4, 5]
    batches = [EventBatch.model_validate_json(s.path.read_bytes()) for s in left]
    assert [b.seq for b in batches] == [2, 3, 4, 5]
    assert [b.events[0].pid for b in batches] == [0, 1, 2, 3]
    assert spool.append([_exec(9)]).seq == 6 and spool.seq_known


def test_spool_renumbering_keeps_every_batch_when_the_bound_dropped_the_first(tmp_path: Path) -> None:
    """This run's batches no longer start at its first seq (the bound dropped 0-2): 3-5 with the
    service at 3 move up together to 4-6, none written over."""
    spool = Spool(tmp_path, "src", max_bytes=10**9)
    for i in range(6):
        spool.append([_exec(i)])
    for item in spool.pending()[:3]:
        spool.remove(item)
    assert spool.resume_after(3) == 3
    batches = [EventBatch.model_validate_json(s.path.read_bytes()) for s in spool.pending()]
    assert [(b.seq, b.events[0].pid) for b in batches] == [(4, 3), (5, 4), (6, 5)]
    assert spool.append([_exec(9)]).seq == 7
