"""Benchmark of the collector's cost (not a timed test; needs root).

1. Page-fault-heavy workload (anonymous 4 KiB pages: map, touch every page, unmap) without a
   collector, with `memo-collector` as configured by default (faults counted on the memcg
   tracepoint), and with collector.fault_source=page_fault_user, in interleaved blocks within one
   run, so that drift on a shared machine hits all alike. Reports median CPU time (user+sys of the
   workload process, which is where the eBPF programs' cost lands), the median of block-by-block
   ratios, and median wall time per repetition.
2. Exec storm: 2,000 exec/s of /bin/true for 10 s while the collector runs; counts the exec records
   it printed for those pids and the `lost` records (target: every exec seen, 0 lost).

Prints a table and writes bench/results/collector.json.

examples:
  sudo .venv/bin/python bench/collector.py
  sudo .venv/bin/python bench/collector.py --blocks 8 --storm-rate 2000 --storm-s 10
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Process
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)  # run as bench/collector.py: `collector` must be the package, not this file
RESULTS = REPO / "bench" / "results" / "collector.json"
PAGE = mmap.PAGESIZE


class Collector:
    """`memo-collector --stdout` writing to a file; started ready, stopped with SIGTERM."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.err = out, out.with_suffix(".log")
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "collector.main", "--stdout"],
                                         cwd=REPO, env=env, stdout=o, stderr=e)
        deadline = time.monotonic() + 60
        while "memo-collector: ready" not in self.err.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"collector did not start:\n{self.err.read_text()}")
            time.sleep(0.05)

    def stop(self) -> float:
        """Stop it; return the CPU seconds it used."""
        self.proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_utime + usage.ru_stime


def fault_rep(mib: int) -> tuple[float, float]:
    """One repetition: map mib MiB, fault in every 4 KiB page by writing it, unmap.
    Returns (cpu_s, wall_s) of this process."""
    c0, w0 = time.process_time(), time.perf_counter()
    m = mmap.mmap(-1, mib << 20)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    a = np.frombuffer(m, dtype=np.uint8)
    a[::PAGE] = 1  # one write per page: the page fault dominates
    del a
    m.close()
    return time.process_time() - c0, time.perf_counter() - w0


BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def prog_stats(name: str) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded BPF program (kernel.bpf_stats_enabled=1)."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], check=True, capture_output=True,
                                      text=True).stdout)
    p = next((p for p in progs if p.get("name") == name), {})
    return p.get("run_time_ns", 0), p.get("run_cnt", 0)


MODES = {  # name -> collector environment on top of the bench's (None: no collector)
    "without": None,
    "with": {},  # the default config: faults counted on memcg:count_memcg_events
    "with_page_fault_user": {"MEMO_COLLECTOR__FAULT_SOURCE": "page_fault_user"},
}


def fault_bench(blocks: int, reps: int, mib: int, env: dict[str, str], tmp: Path) -> dict:
    """Interleaved blocks of every mode, the order rotating each round; per mode the median of
    all its repetitions, and per collector mode the median of its block-by-block ratios to the
    "without" block of the same round (drift between rounds cancels out)."""
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    ratios: dict[str, list[float]] = {m: [] for m in MODES if m != "without"}
    names = list(MODES)
    fault_rep(mib)  # warm-up
    for i in range(blocks):
        block: dict[str, float] = {}
        for mode in names[i % len(names):] + names[:i % len(names)]:
            extra = MODES[mode]
            c = Collector(tmp / f"faults-{i}-{mode}.jsonl", {**env, **extra}) if extra is not None else None
            try:
                runs = [fault_rep(mib) for _ in range(reps)]
            finally:
                if c:
                    c.stop()
            samples[mode] += runs
            block[mode] = statistics.median(r[0] for r in runs)
        for mode in ratios:
            ratios[mode].append(block[mode] / block["without"])
    # Then, apart from the timed blocks (bpf_stats itself costs time per program run): the eBPF
    # programs' own run time per fault, as the kernel measures it, in the default config.
    stats_was = BPF_STATS.read_text().strip()
    c = Collector(tmp / "faults-stats.jsonl", env)
    progs = ("memo_fault", "memo_memcg")
    try:
        BPF_STATS.write_text("1")
        before = {n: prog_stats(n) for n in progs}
        for _ in range(reps):
            fault_rep(mib)
        after = {n: prog_stats(n) for n in progs}
    finally:
        BPF_STATS.write_text(stats_was)
        c.stop()
    run_ns = sum(after[n][0] - before[n][0] for n in progs)
    run_cnt = max(after[n][1] - before[n][1] for n in progs)  # the program that fires per fault
    out: dict = {"blocks": blocks, "reps_per_block": reps, "mib_per_rep": mib,
                 "faults_per_rep": (mib << 20) // PAGE}
    for mode, smp in samples.items():
        out[mode] = {"cpu_s_median": statistics.median(x[0] for x in smp),
                     "wall_s_median": statistics.median(x[1] for x in smp), "n": len(smp)}
        out[f"ns_per_fault_{mode}"] = 1e9 * out[mode]["cpu_s_median"] / out["faults_per_rep"]
    for mode in ratios:
        for k in ("cpu_s_median", "wall_s_median"):
            out[mode][f"slowdown_{k.split('_')[0]}_pct"] = 100 * (out[mode][k] / out["without"][k] - 1)
        out[mode]["slowdown_cpu_pct_paired"] = 100 * (statistics.median(ratios[mode]) - 1)
        out[mode]["block_ratios"] = ratios[mode]
    # run time per fault, free of scheduling noise; an upper bound, since bpf_stats' own clock
    # reads (two per program run) are included.
    out["bpf_ns_per_fault"] = run_ns / run_cnt if run_cnt else None
    out["bpf_share_of_fault_pct"] = (100 * out["bpf_ns_per_fault"] / out["ns_per_fault_without"]
                                     if run_cnt else None)
    return out


def _storm_worker(rate: float, seconds: float, pid_file: str) -> None:
    """Spawn /bin/true at `rate` per second (paced), reaping children as they end."""
    env = {"PATH": "/usr/bin:/bin"}
    pids, live = [], 0
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pids.append(os.posix_spawn("/bin/true", ["/bin/true"], env))
        live += 1
        while live:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            live -= 1
    while live:
        os.waitpid(-1, 0)
        live -= 1
    Path(pid_file).write_text("\n".join(map(str, pids)))


def storm_bench(rate: float, seconds: float, workers: int, env: dict[str, str], tmp: Path) -> dict:
    out_file = tmp / "storm.jsonl"
    c = Collector(out_file, env)
    files = [str(tmp / f"storm-pids-{w}") for w in range(workers)]
    procs = [Process(target=_storm_worker, args=(rate / workers, seconds, f)) for f in files]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    time.sleep(1.0)
    collector_cpu = c.stop()
    pids = {int(x) for f in files for x in Path(f).read_text().split()}
    seen, lost = set(), 0
    with open(out_file) as f:
        for line in f:
            ev = json.loads(line)
            if ev["type"] == "exec" and ev["pid"] in pids:
                seen.add(ev["pid"])
            elif ev["type"] == "lost":
                lost += ev["count"]
    return {"target_rate": rate, "seconds": seconds, "workers": workers, "execs": len(pids),
            "achieved_rate": len(pids) / elapsed, "exec_records": len(seen), "missing": len(pids - seen),
            "lost_records": lost, "collector_cpu_s": collector_cpu,
            "collector_cpu_pct": 100 * collector_cpu / elapsed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=12,
                   help="rounds of interleaved blocks (without, with, with page_fault_user)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per block")
    p.add_argument("--mib", type=int, default=256, help="MiB faulted in per repetition")
    p.add_argument("--storm-rate", type=float, default=2000.0)
    p.add_argument("--storm-s", type=float, default=10.0)
    p.add_argument("--storm-workers", type=int, default=2)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/collector.py needs root (eBPF)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="memo-bench-") as d:
        tmp = Path(d)
        env = dict(os.environ, PYTHONPATH=str(REPO), MEMO_PATHS__RUN_DIR=str(tmp / "run"),
                   MEMO_PATHS__DATA_DIR=str(tmp / "data"),
                   MEMO_COLLECTOR__BPF_PIN_DIR=f"/sys/fs/bpf/memo-bench-{os.getpid()}")
        try:
            faults = fault_bench(args.blocks, args.reps, args.mib, env, tmp)
            storm = storm_bench(args.storm_rate, args.storm_s, args.storm_workers, env, tmp)
        finally:
            from collector.loader import lock_path

            lock_path(Path(env["MEMO_COLLECTOR__BPF_PIN_DIR"])).unlink(missing_ok=True)
    result = {"faults": faults, "exec_storm": storm, "kernel": os.uname().release,
              "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    f, s = faults, storm
    print(f"{'page faults, CPU s per rep':<34}{'median':>10}{'vs without':>12}{'paired':>10}{'wall':>10}")
    for mode in MODES:
        m = f[mode]
        print(f"  {mode:<32}{m['cpu_s_median']:>10.4f}"
              + (f"{m['slowdown_cpu_pct']:>+11.2f}%{m['slowdown_cpu_pct_paired']:>+9.2f}%"
                 f"{m['slowdown_wall_pct']:>+9.2f}%" if mode != "without" else ""))
    if f["bpf_ns_per_fault"] is not None:
        print(f"  eBPF ns per fault (bpf_stats, upper bound): {f['bpf_ns_per_fault']:.0f} of "
              f"{f['ns_per_fault_without']:.0f} ({f['bpf_share_of_fault_pct']:.2f}%)")
    print(f"  {f['faults_per_rep']} faults per rep, {f['blocks']} rounds x {f['reps_per_block']} reps")
    print(f"{'exec storm':<44}{'value':>12}")
    for k in ("achieved_rate", "execs", "exec_records", "missing", "lost_records", "collector_cpu_pct"):
        print(f"  {k:<42}{s[k]:>12.1f}" if isinstance(s[k], float) else f"  {k:<42}{s[k]:>12}")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
