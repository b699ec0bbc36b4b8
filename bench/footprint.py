"""MEMO's own cost (issue "MEMO must cost less than it saves"): CPU and memory of its services when idle,
what running it adds to a cold launch, and its CPU during the replay benchmark's test phase.

Run as root, with no MEMO running (it refuses otherwise):

    sudo .venv/bin/python bench/footprint.py [--idle-s 600] [--rounds 4] [--apps torch,chromium]
                                             [--parts launch,idle,replay] [--out bench/results/footprint.json]

Parts (run in the order given by --parts)
  launch  Cold-launch cost. Each app of --apps (torch: replay.py's python script importing torch;
          chromium: headless chromium as replay.py starts it) runs as replay.py's user `memo-replay`, from
          replay.py's launcher shell, time-to-ready measured the way replay.py measures it (from writing
          the command line to the shell until the readiness line), `sync; echo 3 > drop_caches` and
          --gap seconds before every launch. Two conditions, interleaved in every round, their order
          alternating (ABBA: none memo | memo none | ...): "none" (MEMO not running) and "memo" (`memo up`
          with MEMO_PREFETCHER__DRY_RUN=1: all of MEMO runs, traces and learns the launches, but never
          prefetches). After `memo up` the bench waits until `memo status` reports every service healthy
          and the CPUs are quiet (replay.wait_quiet); when two memo blocks follow each other (ABBA) MEMO
          stays up between them. Each program runs once, unmeasured, before round 1 (first-run effects).
          Reported per app: median time-to-ready per condition, cost = median(memo) / median(none) - 1
          (target <= 2 %), every sample, and MEMO's CPU seconds during each memo launch.
  idle    `memo up` as a user gets it (the configuration in force, LLM included when installed), wait
          until healthy, settle --settle-s (60) s, then sample every --interval-s (5) s for --idle-s s;
          `memo down`. Reported per service and in total: CPU share of one core over the window (target
          total <= 1 %), PSS / RSS / Pss_Anon at the end and their maximum (targets: total PSS without the
          LLM path <= 300 MB, collector <= 100 MB, LLM path <= 1 GB).
  replay  No run: reads bench/results/replay.json (`--replay-json`) and reports MEMO's CPU seconds in
          its test phase per part and as a share of the test phase's wall time (target <= 3 %).

What is sampled
  For each service (inference, collector, prefetcher, supervisor) its pid from <run_dir>/pids/NAME.pid
  (checked against its command line) and its whole process tree (children from the ppid field of every
  /proc/PID/stat), so vLLM's VLLM::EngineCore and VLLM::Worker count under inference; the supervisor's
  tree without the services' trees is "supervisor". The "LLM path" is the inference tree without the
  inference main pid (the vLLM engine, its workers, multiprocessing's resource tracker).
  Memory: Pss, Rss and Pss_Anon of /proc/PID/smaps_rollup, summed over the tree (PSS sums are exact,
  RSS sums count shared pages once per process). CPU: utime+stime of /proc/PID/stat; over an interval
  the bench sums, per (pid, start time), the difference between consecutive samples, and counts a
  process that started within an interval from zero. The CPU a process spends between its last sample
  and its exit is not seen (at most one interval of it; the number of processes that exited is
  reported); cutime/cstime are not used.

Output: a summary table on stdout (targets, pass/fail), progress on stderr, and the JSON file (--out):
every sample, the machine (nproc, MemTotal, kernel, git commit), the MEMO configuration in force for
each condition and the command line. An interrupted run still stops MEMO (`memo down`, also on Ctrl-C or
SIGTERM) and writes what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import pwd
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.replay import (  # noqa: E402
    MB,
    MEMO_CLI,
    PROGRAMS,
    RESULTS,
    TICK,
    USER,
    Drainer,
    Launcher,
    Program,
    Running,
    Work,
    build_work,
    children_map,
    drop_caches,
    ensure_packages,
    ensure_user,
    kill_pids,
    kill_user,
    meminfo,
    stat_fields,
    user_pids,
    wait_quiet,
    warm_up_programs,
)
from memo import config as memo_config  # noqa: E402
from memo import placement  # noqa: E402
from memo.runtime import SERVICES, SUPERVISOR, RunDir, find_processes, is_alive, lock_holder, read_pid  # noqa: E402
from prefetcher import activity  # noqa: E402

GROUPS = (*SERVICES, SUPERVISOR)  # inference, collector, prefetcher, supervisor
PARTS = ("launch", "idle", "replay")
CONDITIONS = ("none", "memo")
WEIGHT_ONLY = "memo-weight"
"""--weight-only-too: MEMO as configured but its group out of the idle CPU class (cpu.idle 0), beside it."""
DRY_RUN_ENV = {"MEMO_PREFETCHER__DRY_RUN": "1"}
TARGETS = {  # the targets: (value key, limit, unit)
    "idle_cpu_total": 0.01,
    "idle_pss_total_without_llm_mb": 300.0,
    "idle_pss_collector_mb": 100.0,
    "idle_pss_llm_path_mb": 1024.0,
    "launch_cost": 0.02,
    "replay_cpu_share": 0.03,
}

EXAMPLES = """\
examples:
  sudo .venv/bin/python bench/footprint.py                                  # all parts (~25 min)
  sudo .venv/bin/python bench/footprint.py --idle-s 30 --rounds 1 --apps torch   # a smoke run (~5 min)
  sudo .venv/bin/python bench/footprint.py --parts idle --idle-s 1800       # idle only, half an hour
  sudo .venv/bin/python bench/footprint.py --parts launch --apps chromium --rounds 8
  .venv/bin/python bench/footprint.py --parts replay                        # read replay.json (no root)
"""


# ---------------------------------------------------------------------------------------------- progress

class Log:
    """Progress on stderr: lines; on a terminal a transient status line (carriage return), elsewhere the
    status as a plain line at most every `every_s` seconds."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self.last = 0.0
        self.pending = False

    def line(self, msg: str) -> None:
        if self.pending:
            sys.stderr.write("\r\x1b[K")
            self.pending = False
        sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
        sys.stderr.flush()

    def status(self, msg: str, force: bool = False) -> None:
        if self.tty:
            sys.stderr.write(f"\r\x1b[K  {msg}")
            sys.stderr.flush()
            self.pending = True
        elif force or time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self.line("  " + msg)

    def sleep(self, seconds: float, what: str) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.status(f"{what}: {left:.0f} s left")
            time.sleep(min(1.0, left))


LOG = Log()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """replay.py's helpers report with print() on stdout; here that is progress, so it goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


# --------------------------------------------------------------------------------------------- sampling

@dataclass
class Proc:
    pid: int
    start: int  # start time, clock ticks since boot: with pid it names one process
    ppid: int
    group: str  # inference, collector, prefetcher, supervisor
    main: bool  # the service's own pid (not a child)
    comm: str
    cpu_ticks: int  # utime + stime
    mem_kb: dict[str, int] | None = None  # Rss, Pss, Pss_Anon, ... of smaps_rollup
    majflt: int = 0
    read_bytes: int = 0  # storage reads it caused (/proc/PID/io), when the sample asked for them


@dataclass
class Sample:
    t: float  # time.monotonic()
    wall: float  # time.time()
    boot_ticks: float  # CLOCK_BOOTTIME in clock ticks, read before /proc is scanned
    roots: dict[str, int | None]
    procs: list[Proc] = field(default_factory=list)


ROLLUP_KEYS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "SwapPss")


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """kB values of /proc/PID/smaps_rollup (ROLLUP_KEYS found there); None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ROLLUP_KEYS:
            out[key] = int(rest.split()[0])
    return out


def comm_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def service_roots(run: RunDir) -> dict[str, int | None]:
    """Each service's pid from its pid file, None when the file is missing or its pid runs something else."""
    out: dict[str, int | None] = {}
    for name in GROUPS:
        pid = read_pid(run.pid_file(name))
        out[name] = pid if is_alive(pid, name) else None
    return out


def descendants(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def assign_groups(roots: dict[str, int | None], kids: dict[int, list[int]]) -> dict[int, tuple[str, bool]]:
    """pid -> (group, is the group's root): the services' trees, then what else hangs below the supervisor."""
    owner: dict[int, tuple[str, bool]] = {}
    for name in (*SERVICES, SUPERVISOR):  # the supervisor last: its tree holds the services' trees
        root = roots.get(name)
        if root:
            for p in descendants(root, kids):
                owner.setdefault(p, (name, p == root))
    return owner


def take_sample(run: RunDir, memory: bool = True, roots: dict[str, int | None] | None = None,
                io: bool = False) -> Sample:
    """One look at MEMO's process trees: CPU ticks and major faults of every member, smaps_rollup when
    `memory`, the storage reads it caused when `io`."""
    boot = time.clock_gettime(time.CLOCK_BOOTTIME) * TICK
    s = Sample(time.monotonic(), time.time(), boot, roots if roots is not None else service_roots(run))
    for pid, (group, main) in assign_groups(s.roots, children_map()).items():
        f = stat_fields(pid)
        if f is None or f[0] in ("Z", "X"):
            continue
        mem = smaps_rollup(pid) if memory else None
        s.procs.append(Proc(pid, int(f[19]), int(f[1]), group, main, comm_of(pid), int(f[11]) + int(f[12]),
                            mem, int(f[9]), own_read_bytes(pid) if io else 0))
    return s


def own_read_bytes(pid: int) -> int:
    try:
        return activity.read_bytes(pid)
    except (OSError, ValueError):
        return 0


def io_between(a: Sample, b: Sample) -> dict[str, dict[str, float]]:
    """Per service: MB read from storage and major faults between two samples taken with `io` (processes
    alive at both)."""
    before = {(p.pid, p.start): p for p in a.procs}
    out = {g: {"read_mb": 0.0, "major_faults": 0.0} for g in GROUPS}
    for p in b.procs:
        old = before.get((p.pid, p.start))
        if old is not None:
            out[p.group]["read_mb"] += max(0, p.read_bytes - old.read_bytes) / 1e6
            out[p.group]["major_faults"] += max(0, p.majflt - old.majflt)
    return out


def labels(p: Proc) -> list[str]:
    """The report rows a process counts in."""
    out = [p.group, "total"]
    if p.group == "inference" and not p.main:
        out.append("llm_path")
    else:
        out.append("total_without_llm")
    return out


ROWS = (*GROUPS, "llm_path", "total_without_llm", "total")


def memory_of(s: Sample) -> dict[str, dict[str, float]]:
    """Per row: pss_mb, rss_mb, pss_anon_mb and procs (only processes whose smaps_rollup could be read)."""
    out = {r: {"pss_mb": 0.0, "rss_mb": 0.0, "pss_anon_mb": 0.0, "procs": 0} for r in ROWS}
    for p in s.procs:
        if p.mem_kb is None:
            continue
        for r in labels(p):
            o = out[r]
            o["pss_mb"] += p.mem_kb.get("Pss", 0) / 1024
            o["rss_mb"] += p.mem_kb.get("Rss", 0) / 1024
            o["pss_anon_mb"] += p.mem_kb.get("Pss_Anon", 0) / 1024
            o["procs"] += 1
    return out


def cpu_between(samples: Sequence[Sample]) -> dict[str, Any]:
    """CPU seconds per row over the samples (sum of per-(pid, start) deltas between consecutive samples; a
    process that started within an interval from zero), per process (group/comm), and counts of processes
    that started, exited, or joined a tree without having started in the interval (not counted)."""
    cpu = dict.fromkeys(ROWS, 0.0)
    by_proc: dict[str, float] = {}
    started = exited = joined = 0
    for prev, cur in zip(samples, samples[1:], strict=False):
        before = {(p.pid, p.start): p for p in prev.procs}
        now = {(p.pid, p.start) for p in cur.procs}
        exited += len(set(before) - now)
        for p in cur.procs:
            old = before.get((p.pid, p.start))
            if old is not None:
                ticks = p.cpu_ticks - old.cpu_ticks
            elif p.start >= prev.boot_ticks - 1:  # started in this interval (1 tick of rounding)
                ticks, started = p.cpu_ticks, started + 1
            else:
                joined += 1
                continue
            sec = ticks / TICK
            for r in labels(p):
                cpu[r] += sec
            key = f"{p.group}/{p.comm}" + ("" if p.main or p.group != "inference" else " (llm path)")
            by_proc[key] = by_proc.get(key, 0.0) + sec
    window = samples[-1].t - samples[0].t if len(samples) > 1 else 0.0
    return {"window_s": window, "cpu_s": cpu, "by_process_cpu_s": by_proc,
            "share_of_one_core": {r: (v / window if window > 0 else None) for r, v in cpu.items()},
            "processes_started": started, "processes_exited": exited, "processes_joined_uncounted": joined}


def sample_json(s: Sample, t0: float) -> dict[str, Any]:
    return {"t_s": round(s.t - t0, 3), "wall": s.wall, "roots": s.roots, "memory": memory_of(s),
            "procs": [asdict(p) for p in s.procs]}


# ------------------------------------------------------------------------------------------------ MEMO

@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ replaced by env for the block (memo.config reads the environment)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def config_in_force(env: dict[str, str]) -> dict[str, Any]:
    with environ(env):
        cfg = memo_config.load()
        file = memo_config.config_file()
    return {"file": str(file) if file else None,
            "environment": {k: v for k, v in env.items() if k.startswith("MEMO_")},
            "values": cfg.model_dump(mode="json")}


def memo_running(run: RunDir, anywhere: bool = True) -> list[str]:
    """Why MEMO counts as running (empty: it does not): a supervisor holding the run directory's lock, a
    live pid file there, or (anywhere) a memo-* process on the machine (another run directory, systemd)."""
    why = []
    holder = lock_holder(run)
    if holder:
        why.append(f"a supervisor (pid {holder}) holds {run.lock_file}")
    for name in GROUPS:
        pid = read_pid(run.pid_file(name))
        if is_alive(pid, name):
            why.append(f"{name} runs (pid {pid}, {run.pid_file(name)})")
    if anywhere:  # memo-* processes not named above (another run directory, systemd)
        named = {read_pid(run.pid_file(name)) for name in GROUPS} | {holder}
        for name in GROUPS:
            pids = [p for p in find_processes(name) if p not in named]
            if pids:
                why.append(f"{name} process(es) {pids} (another run directory or systemd)")
    return why


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM held back for the block (stopping MEMO must not be cut short by a second Ctrl-C),
    then raised as KeyboardInterrupt / SystemExit(143) if one came."""
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda n, _f: got.append(n)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    if signal.SIGTERM in got:
        sys.exit(143)
    if signal.SIGINT in got:
        raise KeyboardInterrupt


ACTIVE: list[Memo] = []  # instances this process started and has not stopped yet


class Memo:
    """`memo up` / `memo down` of the instance in the configured run directory, for this bench only: it is
    started here (the bench refused to start while any MEMO ran), so whatever of it is left after `memo
    down` is stopped by pid (every (pid, start time) the bench saw in its trees)."""

    def __init__(self, env: dict[str, str], run: RunDir, logdir: Path, label: str) -> None:
        self.env, self.run, self.logdir, self.label = env, run, logdir, label
        self.active = False
        self.up_proc: subprocess.Popen[bytes] | None = None
        self.up_log = logdir / "memo-up.log"
        self.supervisor_pid: int | None = None
        self.seen: dict[tuple[int, int], str] = {}
        self.ups = 0

    def remember(self, s: Sample) -> None:
        for p in s.procs:
            self.seen[(p.pid, p.start)] = f"{p.group}/{p.comm}"

    def up(self, timeout_s: float = 300.0) -> dict[str, Any]:
        self.ups += 1
        log = self.up_log = self.logdir / f"memo-up-{self.label}-{self.ups}.log"
        self.active = True  # from here on, down() runs whatever happens
        if self not in ACTIVE:
            ACTIVE.append(self)
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            self.up_proc = subprocess.Popen([str(MEMO_CLI), "up", "--timeout", str(timeout_s)], env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
            rc = self.up_proc.wait(timeout=timeout_s + 60)
        up_s = time.perf_counter() - t0
        text = log.read_text(errors="replace")
        self.supervisor_pid = self._supervisor_from_log()
        if "already running" in text:  # someone else's MEMO came up meanwhile: not ours to stop
            self.active, self.supervisor_pid = False, None
            ACTIVE.remove(self)
            raise RuntimeError(f"memo up found MEMO running (started by someone else meanwhile):\n{text}")
        if rc != 0:
            raise RuntimeError(f"memo up failed (rc {rc}):\n{text}")
        healthy_s, report = self.wait_healthy(180.0)
        self.remember(take_sample(self.run, memory=False))
        return {"up_s": up_s, "healthy_after_s": healthy_s, "up_output": text,
                "supervisor_pid": self.supervisor_pid, "status": report}

    def _supervisor_from_log(self) -> int | None:
        """The supervisor pid `memo up` printed ("starting MEMO (supervisor pid N, ...)")."""
        try:
            m = re.search(r"starting MEMO \(supervisor pid (\d+)", self.up_log.read_text(errors="replace"))
        except OSError:
            return None
        return int(m.group(1)) if m else None

    def wait_healthy(self, timeout_s: float) -> tuple[float, dict[str, Any]]:
        """Until `memo status` (its collect(), in this process: an exec of `memo status` would be a launch
        to the collector) reports every service healthy."""
        from memo.status import collect

        t0 = time.monotonic()
        report: dict[str, Any] = {}
        with environ(self.env):
            cfg = memo_config.load()
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(Exception):
                report = collect(cfg, interval_s=0.2)
                if report.get("healthy"):
                    return time.monotonic() - t0, report
            time.sleep(1.0)
        shown = json.dumps(report, default=str)[:2000]
        raise RuntimeError(f"MEMO not healthy within {timeout_s:.0f} s: {shown}")

    def running(self) -> list[str]:
        why = memo_running(self.run, anywhere=False)
        if self.supervisor_pid and is_alive(self.supervisor_pid, SUPERVISOR):
            why.append(f"supervisor {self.supervisor_pid}")
        why += [f"{what} (pid {pid})" for (pid, st), what in self.seen.items() if _same(pid, st)]
        return why

    def down(self) -> dict[str, Any]:
        """`memo down` until nothing of this instance runs (a supervisor that had not taken its lock yet
        when `memo down` looked is caught by the retry); then SIGKILL for what is left."""
        if not self.active:
            return {}
        with deferred_signals():
            return self._down()

    def _down(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"attempts": 0, "killed": []}
        if self.up_proc is not None and self.up_proc.poll() is None:  # interrupted `memo up`
            self.up_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.up_proc.wait(timeout=5)
            if self.up_proc.poll() is None:
                self.up_proc.kill()
                self.up_proc.wait()
            self.supervisor_pid = self.supervisor_pid or self._supervisor_from_log()
        t0 = time.perf_counter()
        for _ in range(5):
            rec["attempts"] += 1
            r = subprocess.run([str(MEMO_CLI), "down"], env=self.env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=240, start_new_session=True)
            rec.setdefault("output", []).append((r.stdout + r.stderr).strip())
            deadline = time.monotonic() + 10
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.5)
            if not self.running():
                break
            time.sleep(1.0)
        left = [pid for (pid, st) in self.seen if _same(pid, st)]
        if self.supervisor_pid and is_alive(self.supervisor_pid, SUPERVISOR):
            left.append(self.supervisor_pid)
        if left:
            LOG.line(f"memo down left {left} running: SIGTERM, then SIGKILL")
            kill_pids(kill_pids(left, signal.SIGTERM, timeout_s=15), signal.SIGKILL)
            rec["killed"] = left
        rec["seconds"] = time.perf_counter() - t0
        rec["still_running"] = self.running()
        self.active = False
        self.seen.clear()
        if self in ACTIVE:
            ACTIVE.remove(self)
        return rec


def _same(pid: int, start: int) -> bool:
    f = stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X") and int(f[19]) == start


# -------------------------------------------------------------------------------------------- the parts

class NoTracer:
    """replay.Launcher registers its launcher shells with replay.py's BPF page tracer; nothing here
    needs it."""

    def add_root(self, pid: int, role: int) -> None:
        pass


@dataclass
class Ctx:
    args: argparse.Namespace
    run: RunDir
    base_env: dict[str, str]
    logdir: Path
    results: dict[str, Any]
    out_path: Path


def part_idle(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    out: dict[str, Any] = {"config": config_in_force(ctx.base_env), "complete": False,
                           "settle_s": args.settle_s, "interval_s": args.interval_s, "idle_s": args.idle_s}
    ctx.results["idle"] = out
    memo = Memo(ctx.base_env, ctx.run, ctx.logdir, "idle")
    try:
        LOG.line("idle: memo up ...")
        out["up"] = memo.up()
        up = out["up"]
        LOG.line(f"idle: up in {up['up_s']:.1f} s, healthy {up['healthy_after_s']:.1f} s later; "
                 f"settling {args.settle_s:.0f} s")
        LOG.sleep(args.settle_s, "idle: settling")
        samples = [take_sample(ctx.run)]
        memo.remember(samples[0])
        t0 = samples[0].t
        n = max(1, round(args.idle_s / args.interval_s))
        for k in range(1, n + 1):
            time.sleep(max(0.0, t0 + k * args.interval_s - time.monotonic()))
            s = take_sample(ctx.run)
            memo.remember(s)
            samples.append(s)
            c = cpu_between(samples)
            mem = memory_of(s)
            LOG.status(f"idle: {s.t - t0:4.0f}/{args.idle_s:.0f} s, "
                       f"CPU {100 * c['share_of_one_core']['total']:.2f} % of a core, "
                       f"PSS {mem['total']['pss_mb']:.0f} MB "
                       f"(LLM path {mem['llm_path']['pss_mb']:.0f} MB)", force=k == n)
        out["samples"] = [sample_json(s, t0) for s in samples]
        out["cpu"] = cpu_between(samples)
        mems = [memory_of(s) for s in samples]
        out["memory_end"] = mems[-1]
        keys = ("pss_mb", "rss_mb", "pss_anon_mb", "procs")
        out["memory_max"] = {r: {k: max(m[r][k] for m in mems) for k in keys} for r in ROWS}
        out["llm_running"] = mems[-1]["llm_path"]["procs"] > 0
        out["roots_changed"] = len({json.dumps(s.roots, sort_keys=True) for s in samples}) > 1
        out["complete"] = True
        LOG.line(f"idle: CPU {100 * out['cpu']['share_of_one_core']['total']:.2f} % of a core over "
                 f"{out['cpu']['window_s']:.0f} s; PSS max {out['memory_max']['total']['pss_mb']:.0f} MB")
    finally:
        LOG.line("idle: memo down ...")
        out["down"] = memo.down()
    return out


def launch_order(rounds: int) -> list[tuple[int, str]]:
    """(round, condition) blocks, ABBA: none memo | memo none | none memo | ..."""
    return [(r, c) for r in range(rounds) for c in (CONDITIONS if r % 2 == 0 else CONDITIONS[::-1])]


def part_launch(ctx: Ctx) -> dict[str, Any]:
    args = ctx.args
    programs = {p.name: p for p in PROGRAMS}
    apps: list[Program] = [programs[a] for a in args.app_list]
    memo_env = {**ctx.base_env, **DRY_RUN_ENV}
    out: dict[str, Any] = {"apps": [p.name for p in apps], "rounds": args.rounds, "gap_s": args.gap,
                           "order": launch_order(args.rounds), "config_memo": config_in_force(memo_env),
                           "samples": [], "blocks": [], "complete": False}
    ctx.results["launch"] = out
    work = Work(args.workdir.resolve())
    with contextlib.suppress(KeyError):
        busy = user_pids(pwd.getpwnam(USER).pw_uid)
        if busy:  # bench/replay.py (or another run of this bench) is using the replay user
            raise RuntimeError(f"the replay user {USER} runs processes {busy[:10]}: is bench/replay.py "
                               "running? (its apps and this bench's would share the user and the work dir)")
    with stdout_to_stderr():
        if "chromium" in args.app_list:
            out["installed"] = ensure_packages(("memo",))  # gcc and chromium, when missing
        uid, gid, home = ensure_user(work)
        build_work(work, uid, gid)
    out["argv"] = {p.name: work.argv(p) for p in apps}
    tracer = cast(Any, NoTracer())
    drainer = Drainer()
    drainer.start()
    memo = Memo(memo_env, ctx.run, ctx.logdir, "launch")
    launcher: Launcher | None = None
    try:
        kill_user(uid)
        with stdout_to_stderr():
            warm_up_programs(work, uid, gid, home, tracer, drainer, apps, args.timeout)
        launcher = Launcher(work, uid, gid, home, tracer, drainer)
        for b, (rnd, cond) in enumerate(out["order"]):
            block: dict[str, Any] = {"round": rnd, "condition": cond}
            out["blocks"].append(block)
            if cond == "memo" and not memo.active:
                LOG.line(f"launch round {rnd + 1}/{args.rounds}: memo up (prefetcher dry run) ...")
                block["up"] = memo.up()
                block["fresh_start"] = True
                block["quiet_wait_s"] = wait_quiet(180)
            elif cond == "none" and memo.active:
                LOG.line(f"launch round {rnd + 1}/{args.rounds}: memo down ...")
                block["down"] = memo.down()
                block["quiet_wait_s"] = wait_quiet(60)
            else:
                if cond == "memo":
                    block["fresh_start"] = False
                block["quiet_wait_s"] = wait_quiet(60)
            conds = [cond]
            if cond == "memo" and args.weight_only_too:  # which goes first alternates by round
                conds = ["memo", WEIGHT_ONLY] if rnd % 2 == 0 else [WEIGHT_ONLY, "memo"]
            for i, p in enumerate(apps[b % len(apps):] + apps[:b % len(apps)]):  # app order rotates
                for c in conds:
                    with cpu_idle_off() if c == WEIGHT_ONLY else contextlib.nullcontext():
                        rec = launch_once(ctx, launcher, p, c, memo if cond == "memo" else None)
                    rec.update(round=rnd, block=b, position=i)
                    out["samples"].append(rec)
                    out["summary"] = launch_summary(out["samples"], [p.name for p in apps])
                    cpu = f"  (MEMO CPU {rec['memo_cpu_s']['total']:.2f} s)" if "memo_cpu_s" in rec else ""
                    LOG.line(f"launch round {rnd + 1}/{args.rounds} {c:4} {p.name:8} "
                             f"{rec['seconds']:.3f} s{cpu}")
            if memo.active:
                s = take_sample(ctx.run)
                memo.remember(s)
                block["memory_end"] = memory_of(s)
            save(ctx)
        out["summary"] = launch_summary(out["samples"], [p.name for p in apps])
        out["complete"] = True
    finally:
        steps = [("launcher", lambda: launcher.close() if launcher is not None else None),
                 ("memo down", lambda: out.__setitem__("final_down", memo.down())),
                 ("replay user", lambda: kill_user(uid)),
                 ("drainer", drainer.stop_evt.set)]
        pending: BaseException | None = None
        for name, step in steps:
            try:
                step()
            except Exception as e:  # every step runs
                LOG.line(f"launch: cleanup step {name} failed: {e!r}")
            except BaseException as e:  # a signal deferred while MEMO stopped: the other steps first
                pending = pending or e
        if pending is not None:
            raise pending
    return out


@contextlib.contextmanager
def cpu_idle_off() -> Iterator[None]:
    """MEMO's group out of the idle CPU class for the duration (its CPU weight alone)."""
    h = placement.hierarchies().get("cpu")
    path = h.root / placement.GROUP / "cpu.idle" if h else None
    if path is None or not path.exists():
        raise RuntimeError("--weight-only-too: MEMO's cpu group has no cpu.idle here")
    before = path.read_text().strip()
    path.write_text("0")
    try:
        yield
    finally:
        path.write_text(before)


def launch_once(ctx: Ctx, launcher: Launcher, p: Program, cond: str, memo: Memo | None) -> dict[str, Any]:
    """drop_caches, --gap s, launch as the replay user until ready, stop it; MEMO's CPU over all of it,
    and its CPU, storage reads and major faults from the launch's start to ready."""
    before = take_sample(ctx.run, memory=False) if memo else None
    drop_caches()
    time.sleep(ctx.args.gap)
    mid = take_sample(ctx.run, memory=False, io=True) if memo else None
    r: Running | None = None
    try:
        r, seconds = launcher.launch(p, "direct", ctx.args.timeout)
        rec: dict[str, Any] = {"app": p.name, "condition": cond, "seconds": seconds,
                               "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
        if memo is not None and before is not None and mid is not None:
            after = take_sample(ctx.run, memory=False, io=True)
            memo.remember(after)
            c = cpu_between([before, mid, after])
            rec["memo_cpu_s"] = c["cpu_s"]
            rec["memo_cpu_by_process_s"] = c["by_process_cpu_s"]
            inside = rec["memo_in_launch"] = {"cpu_s": cpu_between([mid, after])["cpu_s"],
                                              "io": io_between(mid, after)}
            LOG.line(f"  in the launch: MEMO CPU {inside['cpu_s']['total']:.2f} s, read " +
                     ", ".join(f"{g} {v['read_mb']:.1f} MB/{v['major_faults']:.0f} majflt"
                               for g, v in inside["io"].items()))
        return rec
    finally:
        launcher.stop(r)


def in_launch_medians(inside: list[dict[str, Any]]) -> dict[str, float] | None:
    """Medians over launches of MEMO's CPU s, MB read and major faults from a launch's start to ready."""
    if not inside:
        return None
    def med(f: Any) -> float:
        return statistics.median(f(x) for x in inside)
    return {"cpu_s": med(lambda x: x["cpu_s"]["total"]),
            "read_mb": med(lambda x: sum(g["read_mb"] for g in x["io"].values())),
            "major_faults": med(lambda x: sum(g["major_faults"] for g in x["io"].values())),
            **{f"{g}_read_mb": med(lambda x, g=g: x["io"][g]["read_mb"]) for g in GROUPS},
            **{f"{g}_cpu_s": med(lambda x, g=g: x["cpu_s"].get(g, 0.0)) for g in GROUPS}}


def launch_summary(samples: list[dict[str, Any]], apps: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in apps:
        conds = CONDITIONS + ((WEIGHT_ONLY,) if any(s["condition"] == WEIGHT_ONLY for s in samples) else ())
        by = {c: [s["seconds"] for s in samples if s["app"] == a and s["condition"] == c] for c in conds}
        med = {c: statistics.median(v) if v else None for c, v in by.items()}
        costs = {c: med[c] / med["none"] - 1 for c in conds[1:] if med["none"] and med[c] is not None}
        cost = costs.get("memo")
        # paired per round: the two conditions of one round ran minutes apart at most
        rounds = sorted({s["round"] for s in samples if s["app"] == a})
        paired = []
        for rnd in rounds:
            x = {c: [s["seconds"] for s in samples
                     if s["app"] == a and s["round"] == rnd and s["condition"] == c] for c in CONDITIONS}
            if x["none"] and x["memo"]:
                paired.append(x["memo"][0] / x["none"][0] - 1)
        memo_cpu = [s["memo_cpu_s"]["total"] for s in samples
                    if s["app"] == a and s["condition"] == "memo" and "memo_cpu_s" in s]
        inside = [s["memo_in_launch"] for s in samples
                  if s["app"] == a and s["condition"] == "memo" and "memo_in_launch" in s]
        out[a] = {"median_s": med, "cost": cost, "cost_by_condition": costs,
                  "n": {c: len(v) for c, v in by.items()}, "seconds": by,
                  "paired_cost_per_round": paired,
                  "paired_cost_median": statistics.median(paired) if paired else None,
                  "memo_cpu_s_per_launch_median": statistics.median(memo_cpu) if memo_cpu else None,
                  "in_launch_median": in_launch_medians(inside)}
    return out


def part_replay(ctx: Ctx) -> dict[str, Any]:
    path: Path = ctx.args.replay_json
    out: dict[str, Any] = {"file": str(path)}
    ctx.results["replay"] = out
    if not path.exists():
        out["missing"] = True
        out["how"] = ("make it with `sudo .venv/bin/python bench/replay.py --trace android6` (all four "
                      "conditions, ~25 min) or `... --conditions memo --learn 40 --test 30` (memo only)")
        LOG.line(f"replay: {path} is not there; {out['how']}")
        return out
    st = path.stat()
    out["mtime"] = dt.datetime.fromtimestamp(st.st_mtime).astimezone().isoformat(timespec="seconds")
    data = json.loads(path.read_text())
    out.update(command=data.get("command"), complete=data.get("complete"), host=data.get("host"),
               cpus=data.get("cpus"))
    gap_s = float((data.get("options") or {}).get("gap", 3.0))
    conds = {}
    for name, c in (data.get("conditions") or {}).items():
        u = c.get("daemon_usage")
        if not u:
            continue
        test = c.get("test", [])
        marks = u.get("marks") or {}
        if "test_start_wall_s" in marks and "end_start_wall_s" in marks:  # the phase's own clock
            wall = marks["end_start_wall_s"] - marks["test_start_wall_s"]
        else:  # an older replay.json: per launch its eviction, the gap and time-to-ready
            wall = sum(r.get("evict", {}).get("seconds", 0.0) + gap_s + r["seconds"] for r in test)
        cpu, by_part = u.get("cpu_s_test"), u.get("cpu_s_test_by_part") or {}
        conds[name] = {"cpu_s_test": cpu, "cpu_s_test_by_part": by_part,
                       "test_launches": len(test), "test_wall_s_estimate": wall,
                       "share_of_one_core": cpu / wall if wall and cpu is not None else None,
                       "share_by_part": {k: v / wall for k, v in by_part.items()} if wall else None,
                       "peak_rss_bytes_test": u.get("peak_rss_bytes_test"),
                       "peak_pss_bytes_test": u.get("peak_pss_bytes_test")}
    out["conditions"] = conds
    out["wall_note"] = ("test-phase wall time from the phase marks' clock; in an older replay.json without "
                        "it, estimated as the sum over test launches of eviction seconds + gap + "
                        "time-to-ready (an upper bound on the share)")
    if "memo" not in conds:
        out["how"] = "replay.json has no memo condition: run bench/replay.py with --conditions ...,memo"
    return out


# ------------------------------------------------------------------------------------------------ report

def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the summary: what, value, target, pass (None: no value)."""
    rows: list[dict[str, Any]] = []

    def add(what: str, value: float | None, target: float | None, unit: str, note: str = "") -> None:
        ok = None if value is None or target is None else value <= target
        rows.append({"what": what, "value": value, "target": target, "unit": unit, "pass": ok, "note": note})

    idle = results.get("idle") or {}
    if idle.get("complete"):
        share = idle["cpu"]["share_of_one_core"]
        add("idle CPU, total (share of one core)", share["total"], TARGETS["idle_cpu_total"], "%",
            f"over {idle['cpu']['window_s']:.0f} s")
        for g in (*GROUPS, "llm_path"):
            add(f"idle CPU, {g}", share[g], None, "%")
        mx, end = idle["memory_max"], idle["memory_end"]
        add("idle PSS, total without the LLM path (max)", mx["total_without_llm"]["pss_mb"],
            TARGETS["idle_pss_total_without_llm_mb"], "MB",
            f"end {end['total_without_llm']['pss_mb']:.0f}; inference main pid included")
        add("idle PSS, collector (max)", mx["collector"]["pss_mb"], TARGETS["idle_pss_collector_mb"], "MB",
            f"end {end['collector']['pss_mb']:.0f}")
        add("idle PSS, LLM path (max)", mx["llm_path"]["pss_mb"], TARGETS["idle_pss_llm_path_mb"], "MB",
            f"end {end['llm_path']['pss_mb']:.0f}, {end['llm_path']['procs']} processes"
            + ("" if idle.get("llm_running") else "; no LLM engine was running"))
        for g in ("inference", "prefetcher", "supervisor", "total"):
            add(f"idle PSS, {g} (max)", mx[g]["pss_mb"], None, "MB",
                f"end {end[g]['pss_mb']:.0f}, RSS {end[g]['rss_mb']:.0f}, anon {end[g]['pss_anon_mb']:.0f}")
    launch = results.get("launch") or {}
    for app, s in (launch.get("summary") or {}).items():
        med = s["median_s"]
        note = (f"none {med['none']:.3f} s, memo {med['memo']:.3f} s (n {s['n']['none']}/{s['n']['memo']})"
                if med["none"] is not None and med["memo"] is not None else "")
        if s.get("memo_cpu_s_per_launch_median") is not None:
            note += f"; MEMO CPU {s['memo_cpu_s_per_launch_median']:.2f} s per launch"
        if (inside := s.get("in_launch_median")) is not None:
            note += (f", {inside['cpu_s']:.2f} s of it and {inside['read_mb']:.1f} MB read "
                     f"({inside['major_faults']:.0f} major faults) from start to ready")
        if (weight := (s.get("cost_by_condition") or {}).get(WEIGHT_ONLY)) is not None:
            note += f"; with MEMO's group at its CPU weight only (cpu.idle 0): {weight * 100:+.1f} %"
        add(f"cold launch cost, {app}", s["cost"], TARGETS["launch_cost"], "%+", note)
    rep = results.get("replay") or {}
    m = (rep.get("conditions") or {}).get("memo")
    if m:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted((m["cpu_s_test_by_part"] or {}).items(),
                                                             key=lambda kv: -kv[1]))
        add("replay test phase: MEMO CPU / wall", m["share_of_one_core"], TARGETS["replay_cpu_share"], "%",
            f"{m['cpu_s_test']:.1f} s over ~{m['test_wall_s_estimate']:.0f} s ({parts}); "
            f"file {rep.get('mtime')}")
    elif rep:
        add("replay test phase: MEMO CPU / wall", None, TARGETS["replay_cpu_share"], "%", rep.get("how", ""))
    return rows


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.2f} %"
    if unit == "%+":
        return f"{100 * value:+.1f} %"
    return f"{value:.0f} {unit}"


def print_summary(rows: list[dict[str, Any]]) -> None:
    cells = [(r["what"], fmt(r["value"], r["unit"]),
              "" if r["target"] is None else "<= " + fmt(r["target"], r["unit"]).lstrip("+"),
              {True: "pass", False: "FAIL", None: ""}[r["pass"]] if r["target"] is not None else "",
              r["note"]) for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        head = ("what", "value", "target", "", "note")
        widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(4)]
        for c in [head, *cells]:
            print("  ".join(str(x).ljust(w) for x, w in zip(c[:4], widths, strict=True)) + "  " + c[4])
        return
    t = Table(title="MEMO's own cost", title_justify="left")
    for col, just in (("what", "left"), ("value", "right"), ("target", "right"), ("", "left"),
                      ("note", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in cells:
        verdict = {"pass": "[green]pass[/]", "FAIL": "[red]FAIL[/]"}.get(c[3], "")
        t.add_row(c[0], c[1], c[2], verdict, c[4])
    Console(width=max(140, Console().width)).print(t)


def git_facts() -> dict[str, Any]:
    def git(*a: str) -> str:
        r = subprocess.run(["git", "-c", f"safe.directory={REPO}", "-C", str(REPO), *a], capture_output=True,
                           text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine_facts() -> dict[str, Any]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    u = os.uname()
    return {"nproc": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)), "cpu_model": cpu_model,
            "mem_total_mb": meminfo("MemTotal") / MB, "swap_total_mb": meminfo("SwapTotal") / MB,
            "kernel": u.release, "kernel_version": u.version, "hostname": u.nodename,
            "python": sys.version.split()[0], "vllm_installed": importlib.util.find_spec("vllm") is not None,
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3], "clock_ticks": TICK,
            "git": git_facts()}


def save(ctx: Ctx) -> None:
    ctx.results["verdicts"] = verdicts(ctx.results)
    tmp = ctx.out_path.with_name(ctx.out_path.name + ".tmp")
    tmp.write_text(json.dumps(ctx.results, indent=1, default=str))
    os.replace(tmp, ctx.out_path)


# -------------------------------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=EXAMPLES + "\n" + __doc__.split("\n\n", 2)[2])
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="subset of launch,idle,replay, run in this order (default all)")
    ap.add_argument("--idle-s", type=float, default=600.0,
                    help="idle measuring window, seconds (default 600)")
    ap.add_argument("--settle-s", type=float, default=60.0,
                    help="wait after healthy before the idle window, seconds (default 60)")
    ap.add_argument("--interval-s", type=float, default=5.0,
                    help="idle sampling interval, seconds (default 5)")
    ap.add_argument("--rounds", type=int, default=4, help="launch rounds, each none+memo in ABBA order (4)")
    ap.add_argument("--weight-only-too", action="store_true",
                    help="in MEMO's blocks, also launch each app with MEMO's group out of the idle CPU class "
                         "(cpu.idle 0, its CPU weight only): the condition memo-weight")
    ap.add_argument("--apps", default="torch,chromium", help="programs of bench/replay.py (torch,chromium)")
    ap.add_argument("--gap", type=float, default=3.0, help="seconds between drop_caches and a launch (3)")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="seconds a launch may take to be ready (default 180)")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/memo-replay"),
                    help="replay.py's work dir for the apps (default /var/tmp/memo-replay)")
    ap.add_argument("--data-dir", type=Path,
                    help="MEMO data dir for every `memo up` (MEMO_PATHS__DATA_DIR; default: the "
                         "configured one)")
    ap.add_argument("--replay-json", type=Path, default=RESULTS / "replay.json",
                    help="bench/replay.py's result, read by the replay part "
                         "(default bench/results/replay.json)")
    ap.add_argument("--out", type=Path, default=RESULTS / "footprint.json",
                    help="JSON output (default bench/results/footprint.json)")
    args = ap.parse_args(argv)
    args.part_list = [p for p in args.parts.split(",") if p]
    args.app_list = [a for a in args.apps.split(",") if a]
    names = {p.name for p in PROGRAMS}
    bad = [p for p in args.part_list if p not in PARTS] + [a for a in args.app_list if a not in names]
    if bad or not args.part_list or ("launch" in args.part_list and not args.app_list):
        ap.error(f"unknown or empty parts/apps: {bad} (parts: {', '.join(PARTS)}; "
                 f"apps: {', '.join(sorted(names))})")
    if args.rounds < 1 or args.idle_s <= 0 or args.interval_s <= 0:
        ap.error("--rounds, --idle-s and --interval-s must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    needs_root = [p for p in args.part_list if p != "replay"]
    if needs_root and os.geteuid() != 0:
        print(f"bench/footprint.py: the parts {', '.join(needs_root)} need root (memo up, drop_caches, the "
              "replay user): run it with sudo", file=sys.stderr)
        return 2
    base_env = dict(os.environ)
    if args.data_dir:
        base_env["MEMO_PATHS__DATA_DIR"] = str(args.data_dir)
    with environ(base_env):
        run = RunDir(memo_config.load().paths.run_dir)
    if needs_root:
        why = memo_running(run)
        if why:
            print("bench/footprint.py: MEMO is already running, so its cost cannot be measured here (and "
                  "this bench stops MEMO when it is done, which is not its to do): "
                  + "; ".join(why) + ".\nStop it first (`sudo .venv/bin/memo down`, if it is yours), or wait "
                  "until whoever runs it is done.", file=sys.stderr)
            return 3
    args.out = args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"memo-footprint-{os.getpid()}"
    if needs_root:  # `memo up` output
        logdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": [sys.executable, *(sys.argv if argv is None else ["bench/footprint.py", *argv])],
        "options": vars(args), "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_facts(), "run_dir": str(run.root), "logs": str(logdir), "targets": TARGETS,
        "complete": False}
    ctx = Ctx(args, run, base_env, logdir, results, args.out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    rc = 0
    try:
        for part in args.part_list:
            LOG.line(f"== {part}")
            {"idle": part_idle, "launch": part_launch, "replay": part_replay}[part](ctx)
            save(ctx)
        results["complete"] = True
    except KeyboardInterrupt:
        LOG.line("interrupted: MEMO is stopped, partial results saved")
        rc = 130
    except SystemExit as e:
        LOG.line(f"stopped by a signal (exit {e.code}): MEMO is stopped, partial results saved")
        rc = int(e.code) if isinstance(e.code, int) else 1
    except Exception as e:
        LOG.line(f"failed: {e!r}; MEMO is stopped, partial results saved")
        results["error"] = repr(e)
        rc = 1
    finally:
        # each part stops what it started in its own finally; this is the last line of defence
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for memo in list(ACTIVE):
            LOG.line(f"MEMO ({memo.label}) still runs after the parts: memo down")
            try:
                results.setdefault("stopped_at_exit", []).append(memo.down())
            except Exception as e:
                LOG.line(f"memo down failed: {e!r}")
        results["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        results["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        save(ctx)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print_summary(results["verdicts"])
    print(f"\nwrote {args.out}" + ("" if results["complete"] else " (incomplete)"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
