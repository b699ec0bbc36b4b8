"""What the collector adds from /proc stays within the contract (issue 13): a file name the contract
refuses is left unknown, argv is cut to its bounds, and a relative exec name is made absolute, so that
one odd process never makes a whole batch invalid. Read from real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from collector import enrich
from memo.contract import MAX_ARG_CHARS, MAX_ARGS, EventBatch, ExecEvent, PageCacheEvent


def _exec_of(pid: int, filename: str) -> ExecEvent:
    return ExecEvent(ts_ns=time.monotonic_ns(), pid=pid, ppid=1, uid=0, cgroup_id=0, comm="x",
                     filename=filename)


def test_exec_fields_fit_the_contract(tmp_path: Path) -> None:
    args = ["-c", "import time; time.sleep(30)", *(["y" * 5000] * 300)]
    p = subprocess.Popen([sys.executable, *args], cwd=tmp_path)
    try:
        time.sleep(0.3)
        ev = enrich.Enricher().exec(_exec_of(p.pid, "python3"))
    finally:
        p.kill()
        p.wait()
    assert len(ev.argv) == MAX_ARGS and max(len(a) for a in ev.argv) == MAX_ARG_CHARS
    assert ev.cwd == str(tmp_path) and ev.exe.startswith("/")
    EventBatch.model_validate_json(EventBatch(source_id="t", seq=0, events=[ev]).model_dump_json())


def test_a_gone_process_gets_its_relative_name_resolved_against_the_parent(tmp_path: Path) -> None:
    """The exe link of a process that already exited is gone; its parent's cwd names `./tool`."""
    import os

    gone = subprocess.Popen(["true"])
    gone.wait()
    name = enrich.absolute("./tool", gone.pid, os.getpid())
    assert name == os.path.join(os.getcwd(), "tool")
    assert enrich.absolute("./tool", gone.pid) == "", "no cwd to read: no guess"


def test_a_file_name_the_contract_refuses_stays_unknown(tmp_path: Path) -> None:
    odd = tmp_path / "tab\there"
    odd.write_bytes(b"x")
    e = enrich.Enricher()
    e.files.learn_file(str(odd))
    st = odd.stat()
    ev = PageCacheEvent(ts_ns=1, pid=1, dev=enrich.kernel_dev(st.st_dev), ino=st.st_ino, index=0, nr_pages=1)
    assert e.pagecache(ev).path == "", "a control character in a path: unknown, not an invalid record"
    fine = tmp_path / "fine"
    fine.write_bytes(b"x")
    e.files.learn_file(str(fine))
    st = fine.stat()
    ev = PageCacheEvent(ts_ns=1, pid=1, dev=enrich.kernel_dev(st.st_dev), ino=st.st_ino, index=0, nr_pages=1)
    assert e.pagecache(ev).path == str(fine)
