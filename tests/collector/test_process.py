"""exec/fork/exit records on the real kernel, from eBPF and from the proc-connector fallback."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.root]


def _run_true(n: int) -> set[int]:
    pids = set()
    for _ in range(n):
        p = subprocess.Popen(["/bin/true"])
        p.wait()
        pids.add(p.pid)
    return pids


@pytest.mark.bpf
def test_200_true_runs_give_exactly_200_exec_records(start_collector) -> None:
    c = start_collector(["--stdout"])
    pids = _run_true(200)
    time.sleep(0.5)
    assert c.stop() == 0
    events = c.events()
    execs = [e for e in events if e["type"] == "exec" and e["filename"] == "/bin/true"]
    assert len(execs) == 200
    assert {e["pid"] for e in execs} == pids
    assert all(e["comm"] == "true" and e["ppid"] > 0 and "ts_ns" in e for e in execs)
    exits = {e["pid"]: e for e in events if e["type"] == "exit" and e["pid"] in pids}
    assert set(exits) == pids and all(e["exit_code"] == 0 for e in exits.values())
    forks = {e["pid"] for e in events if e["type"] == "fork"}
    assert pids <= forks


@pytest.mark.bpf
def test_exit_codes_and_signals(start_collector) -> None:
    c = start_collector(["--stdout"])
    p3 = subprocess.Popen(["sh", "-c", "exit 3"])
    p9 = subprocess.Popen(["sh", "-c", "kill -9 $$"])
    p3.wait(), p9.wait()
    time.sleep(0.3)
    c.stop()
    exits = {e["pid"]: e["exit_code"] for e in c.events() if e["type"] == "exit"}
    assert exits[p3.pid] == 3
    assert exits[p9.pid] == -9


def test_proc_connector_fallback(start_collector) -> None:
    c = start_collector(["--stdout", "--no-bpf"])
    pids = _run_true(20)
    time.sleep(0.5)
    c.stop()
    assert "FALLING BACK to the proc connector" in c.stderr()
    execs = [e for e in c.events() if e["type"] == "exec" and e["pid"] in pids]
    assert {e["pid"] for e in execs} == pids
    exits = [e for e in c.events() if e["type"] == "exit" and e["pid"] in pids]
    assert {e["pid"] for e in exits} == pids


@pytest.mark.bpf
def test_exec_is_enriched_from_proc(start_collector) -> None:
    c = start_collector(["--stdout"])
    p = subprocess.Popen(["sleep", "1.5"])
    cgroup = open(f"/proc/{p.pid}/cgroup").read()
    p.wait()
    c.stop()
    (ev,) = [e for e in c.events() if e["type"] == "exec" and e["pid"] == p.pid]
    assert ev["exe"].endswith("/sleep") and ev["argv"] == ["sleep", "1.5"]
    assert ev["cgroup_path"] and ev["cgroup_path"] in cgroup
    assert abs(ev["wall_ts"] - time.time()) < 30


@pytest.mark.bpf
@pytest.mark.parametrize("source", ["memcg", "page_fault_user"])
def test_faults_counted_per_process(start_collector, collector_env, source: str) -> None:
    """Periodic and exit fault counts of a process faulting 4 x 64 MiB in, from either source; the
    memcg source counts what the kernel itself counts for the process (its rusage)."""
    env = dict(collector_env, MEMO_COLLECTOR__FAULTS_INTERVAL_S="0.3", MEMO_COLLECTOR__FAULT_SOURCE=source)
    c = start_collector(["--stdout"], env=env)
    toucher = ("import mmap,resource,time\nfor _ in range(4):\n m=mmap.mmap(-1,64<<20)\n"
               " m.madvise(mmap.MADV_NOHUGEPAGE)\n for i in range(0,64<<20,4096): m[i]=1\n"
               " m.close(); time.sleep(0.2)\n"
               "r=resource.getrusage(resource.RUSAGE_SELF); print(r.ru_minflt + r.ru_majflt)\n")
    p = subprocess.Popen([sys.executable, "-c", toucher], stdout=subprocess.PIPE, text=True)
    own_count = int(p.communicate()[0])
    time.sleep(0.5)
    c.stop()
    assert f"page faults counted on {'memcg:' if source == 'memcg' else 'exceptions:'}" in c.stderr()
    events, pid = c.events(), p.pid
    periodic = sum(e["minflt"] for e in events if e["type"] == "faults" and e["pid"] == pid)
    (exit_rec,) = [e for e in events if e["type"] == "exit" and e["pid"] == pid]
    total = exit_rec["minflt"] + exit_rec["majflt"]
    assert exit_rec["minflt"] >= 4 * (64 << 20) // 4096
    assert 0 < periodic <= exit_rec["minflt"]
    if source == "memcg":  # the faults after its getrusage (exit, unmap) are few
        assert own_count <= total <= own_count * 1.02 + 100, (own_count, total)
