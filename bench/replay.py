"""Replay benchmark (MEMO's headline): a real user's app sequence replayed on real programs of this machine,
with the page cache evicted before every test launch, comparing daemons side by side in one run.

Run as root:

    sudo .venv/bin/python bench/replay.py [--trace android6] [--user U] [--learn 40] [--test 30] [--gap 3]
                                          [--modes drop,pressure] [--chains mix]
                                          [--conditions cold,warm,preload,memo]

Prints a table, writes bench/results/replay.json (per-launch records, summary, command line, the preload
configuration) and bench/results/replay.png. A default run takes 20-25 minutes on a 2-core VM (see
"Timing" below); `--learn 6 --test 4` takes about 6.

What is replayed
  The trace (`--trace`: android6, purdue, sea-dev or a CSV path; header `user,ts,app`) gives one user's
  sequence (`--user`, default the user with most rows). Its K most frequent apps (K = number of programs)
  are mapped by frequency rank onto the programs below, other apps are dropped and consecutive repeats
  collapsed (switching to the running app is no launch). The first `--learn` launches are the learning
  phase, the next `--test` the test launches.

Programs (generated under `--workdir`, default /var/tmp/memo-replay; each prints a readiness line after its
start-up work and then sleeps until killed, except gcc, which is ready when it exits):
  torch     python script importing torch (mostly mmapped shared objects, ~115 MB)
  plot      python script: matplotlib Agg, draw and save a small figure
  sympy     python script: import sympy, integrate sin(x)**2
  files     python script reading 3,000 generated files of 4-32 KB with read()
  gcc       gcc -O2 -c of a generated 2,800-line C file (14 system headers)
  chromium  headless chromium (ready at "DevTools listening on")
  numpy     python script: numpy + PIL, write a 256x256 PNG
  Python apps run as `.venv/bin/python <workdir>/apps/replay_<name>.py` (MEMO names interpreter launches
  by their script).

How apps are started
  Every app runs as the system user `memo-replay` (created if missing), started the way a terminal user
  starts programs: command lines written to the stdin of long-lived `bash --norc --noprofile` launcher
  shells (one running as memo-replay via setpriv, one as root for privilege-dropping chains), the app in
  the background, its readiness written to a per-launch FIFO. The launch shape rotates over launches
  (`--chains mix`): direct, setpriv, runuser, env-nice (`env nice -n 0`), sh-exec (`sh -c 'exec APP'`),
  two-level (`taskset ... ionice -c 2 -n 4 APP`). Time-to-ready runs from writing the command to the shell
  until the readiness line is read. Each app stays up until the next one is ready, then its process tree
  is killed (desktop switching).

Conditions
  cold     no daemon; evicted before each test launch
  warm     no daemon; nothing evicted (every program run once first): the bound
  preload  Debian's preload 0.6.4 (apt-get installed if missing), in the foreground, configured in its
           favour (below); learning phase, then the evicted test launches
  memo     MEMO as `make up` starts it (`.venv/bin/memo up`, default settings) with fresh run/data dirs
           (MEMO_PATHS__RUN_DIR, MEMO_PATHS__DATA_DIR), stopped with `memo down`. Two more settings are
           changed so that a run never collides with a MEMO someone else runs on the machine: the TCP port
           is chosen at start (MEMO_INFERENCE__PORT=0) and the eBPF pins go to /sys/fs/bpf/memo-replay-PID
           (MEMO_COLLECTOR__BPF_PIN_DIR); neither changes what MEMO predicts or prefetches.
  Learning (preload and memo, identical for both): launches without eviction, `--gap` s between one app
  ready and the next launch. Test: previous app up -> evict -> wait `--gap` s (the daemon may act) ->
  launch. Before each memo test launch MEMO's predictions for the replay uid are read over its Unix socket
  (GET /v1/predictions?uid=U&k=5) and the top-1 hit recorded. Cold and warm start the test phase with the
  last learning app up (a primer launch), like the daemon conditions.

Eviction (`--modes`, alternating per test launch)
  drop      sync; echo 3 > /proc/sys/vm/drop_caches
  pressure  real memory pressure with swap on: a hog (in the bench's own process, so that MEMO's collector
            sees no launch) allocates and writes anonymous memory in 64 MB steps until it holds all the
            memory that was free (MemFree) and `--pressure-beyond-mb` (256) more, or another half of the
            swap file is used, or 60 s passed, then frees it. The same demand in every condition: reclaim
            takes about that much of page cache and anonymous memory, whatever the cache held (a hog
            that stopped at a target of file pages did nothing after a condition that kept the cache
            small). To keep each hog short, a ballast process holds
            mlocked memory for the whole run (MemAvailable at start minus `--ballast-leave-gb`, default
            6 GB, so about 6 GB stay for page cache, apps and daemons; 0 = no ballast), and a swap file of
            `--swap-gb` (default 4) is on for the whole run; both go at the end. Swap and ballast are there
            for every condition, so all see the same machine.
  The page cache each eviction removed (file pages before minus after) is recorded.

Measurements
  time-to-ready per test launch; total; per-app medians; share of the cold->warm gap closed,
  (cold_total - cond_total) / (cold_total - warm_total), overall, per mode and per chain shape; worst app
  vs cold = max over apps of (median_cond / median_cold - 1); MEMO's top-1 (and top-5) hit rate.
  Bytes prefetched and bytes never used, measured by the bench itself, identically for preload and MEMO,
  with a small BPF program (below): pages inserted into the page cache by the daemon's prefetching process
  (memo-prefetcher, preload) since the eviction, and those of them the launch's process tree did not use
  (read, fault or map) before it was ready. What the daemon's other processes fault back in of their own
  files after an eviction (MEMO's inference service and vLLM engine) is reported apart ("own re-reads");
  a breakdown by inserting command is kept in the JSON. Over the whole test phase as well ("test phase
  pages"): a page the daemon read counts as used when any launch uses it before it leaves the cache, so a
  prefetch that outlived a pressure eviction and served the launch after it counts as used there, while
  the per-launch figures count it as never used (and the next launch's as not prefetched).
  The daemon's work in the gap after each eviction and during each launch (CPU seconds, bytes its
  processes caused to be read from storage, their major faults; per part: collector, inference,
  prefetcher, supervisor) from /proc/PID/stat and /proc/PID/io, with the launches slower than cold listed.
  Daemon CPU seconds (utime+stime of the live tree plus the cutime/cstime of its members, plus the last
  sample of members whose time leaves the tree) and peak RSS and PSS (sums over the tree), sampled every
  0.5 s, over the whole condition and over the test phase.

The BPF program (bench tooling, kept in this file): a pid -> role map (1 daemon, 2 launch) seeded with the
daemon's root pid (started behind a `read` so that it cannot fork before it is registered) and the two
launcher shells, followed through sched:sched_process_fork, cleared on exit.
filemap:mm_filemap_add_to_page_cache by a daemon pid marks (dev, ino, index) pages in an LRU hash (1M
entries) with the current generation; filemap:mm_filemap_get_pages, _map_pages and _fault by a launch
pid mark them used. An eviction bumps the generation (O(1) clear). A second id, set at the start of the
test phase, marks the same pages for the whole phase; a page a launch inserts itself is unmarked (the
daemon's copy of it was evicted). At most 512 pages are marked per event; the rest are counted as
unmarked.

preload configuration: cycle 2 s (the smallest sensible value: preload scans and predicts every cycle and
updates its model half a cycle later, so the cycle must be even), minsize 100 kB, exeprefix/mapprefix
covering the venv, the work dir and /usr, memtotal 0 / memfree 100 / memcached 0 (may use all free
memory), nice 0 instead of 15 and no idle I/O class. It is favourable because preload then sees every
program of the replay, learns within seconds instead of minutes and is never held back by priority or
budget. Its limitations stay: preload identifies programs by /proc/PID/exe, so all python scripts are one
exe (/usr/bin/python3.11) to it; it prefetches only mmapped files (not the .py files, the small-file tree
or gcc's headers, which are read with read()), and only for exes not running at the time (a python app
is often the one still up when the next python app starts). And the kernel caps its readahead(2) calls
at the device's read_ahead_kb (8 MB here; a 64 MB POSIX_FADV_WILLNEED also brought in 8 MB), so of a
large map such as chromium's binary only the start is read.

Timing of a default run (--learn 40 --test 30, all four conditions, both modes), measured on this 2-core VM
at --learn 20 --test 12: a test launch takes about 7 s (eviction: drop 0.1 s, pressure about 6 s; the 3 s
gap; the launch), a learning launch about 4 s, a warm one 4.5 s. That makes about 3.5 min for cold, 2 min
for warm, 6 min for preload and 8 min for memo (its start, the LLM loading included, and the wait until the
CPUs are quiet again take 1-2 min), plus about 1 min of setup (first runs, ballast): 20-25 minutes; add
the package installs on a fresh machine (chromium is about 100 MB). Since the hog asks for MemFree + 256 MB
in every condition, a pressure eviction takes 18-24 s and a default run about 31 minutes.

Helpers reused from tests/lab.py: swapfile, meminfo. bench/launch.py's drop_caches is not imported: that
module allocates a 256 MB buffer and imports the prefetcher at import time, which would sit in this
benchmark's own memory during the pressure runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes as ct
import json
import math
import os
import pwd
import random
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from memo import helpers  # noqa: E402
from memo.client import unix_http  # noqa: E402
from prefetcher import activity  # noqa: E402
from tests.lab import meminfo, swapfile  # noqa: E402

VENV_PY = REPO / ".venv" / "bin" / "python"
MEMO_CLI = REPO / ".venv" / "bin" / "memo"
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"
USER = "memo-replay"
CHAINS = ("direct", "setpriv", "runuser", "env-nice", "sh-exec", "two-level")
CONDITIONS = ("cold", "warm", "preload", "memo")
DAEMONS = ("preload", "memo")
MODES = ("drop", "pressure")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20
DAEMON, LAUNCH = 1, 2  # roles in the BPF pid map

EXAMPLES = """\
examples:
  sudo .venv/bin/python bench/replay.py                          # all four conditions, both modes (~25 min)
  sudo .venv/bin/python bench/replay.py --learn 6 --test 4       # a quick look (~6 min)
  sudo .venv/bin/python bench/replay.py --conditions cold,warm,preload --learn 20 --test 12
  sudo .venv/bin/python bench/replay.py --trace sea-dev --user sea3 --modes drop --chains direct
  sudo .venv/bin/python bench/replay.py --trace /path/to/mine.csv --ballast-leave-gb 0
  .venv/bin/python bench/replay.py --show-sequence --trace purdue   # mapping and sequence only (no root)
"""

# ----------------------------------------------------------------------------------------------- programs

PY_APPS: dict[str, str] = {
    "torch": '''\
"""MEMO replay app: import torch (mostly mmapped shared objects)."""
import time

import torch

torch.ones(16).sum()
print("ready", flush=True)
time.sleep(86400)
''',
    "plot": '''\
"""MEMO replay app: matplotlib (Agg), draw and save a small figure."""
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(3, 2))
ax.plot(range(10), [i * i for i in range(10)])
fig.savefig(Path(__file__).resolve().parent.parent / "out" / "replay_plot.png")
print("ready", flush=True)
time.sleep(86400)
''',
    "sympy": '''\
"""MEMO replay app: import sympy and integrate."""
import time

import sympy

x = sympy.symbols("x")
sympy.integrate(sympy.sin(x) ** 2, x)
print("ready", flush=True)
time.sleep(86400)
''',
    "files": '''\
"""MEMO replay app: read every file of the generated tree with read()."""
import os
import time
from pathlib import Path

root = Path(__file__).resolve().parent.parent / "files"
n = 0
for d, dirs, names in os.walk(root):
    dirs.sort()
    for name in sorted(names):
        with open(os.path.join(d, name), "rb") as f:
            n += len(f.read())
print("ready", n, flush=True)
time.sleep(86400)
''',
    "numpy": '''\
"""MEMO replay app: numpy + PIL, write a small PNG."""
import time
from pathlib import Path

import numpy as np
from PIL import Image

a = (np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)
Image.fromarray(a).save(Path(__file__).resolve().parent.parent / "out" / "replay_image.png")
print("ready", flush=True)
time.sleep(86400)
''',
}


@dataclass(frozen=True)
class Program:
    name: str
    match: str  # substring of MEMO's app name for this program
    shape: str  # its I/O shape, for the table
    ready: bytes  # the readiness token on its stdout/stderr
    foreground: bool = False  # ready when it exits (the shell waits for it)


PROGRAMS = (
    Program("torch", "replay_torch.py", "mmapped .so, ~115 MB", b"ready"),
    Program("plot", "replay_plot.py", "matplotlib: .so + .py + fonts", b"ready"),
    Program("sympy", "replay_sympy.py", "many .py modules", b"ready"),
    Program("files", "replay_files.py", "3,000 small files, read()", b"ready"),
    Program("gcc", "gcc", "exec chain cc1/as, headers", b"ready ", foreground=True),
    Program("chromium", "chromium", "large binary + resources", b"DevTools listening on"),
    Program("numpy", "replay_numpy.py", "numpy + PIL .so", b"ready"),
)


@dataclass(frozen=True)
class Work:
    """The work directory: apps, generated inputs, outputs, FIFOs, the replay user's home."""

    root: Path

    @property
    def apps(self) -> Path:
        return self.root / "apps"

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def src(self) -> Path:
        return self.root / "src" / "replay_gcc.c"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def profile(self) -> Path:
        return self.root / "chromium-profile"

    def argv(self, p: Program) -> list[str]:
        if p.name == "gcc":
            return ["gcc", "-O2", "-c", str(self.src), "-o", str(self.out / "replay_gcc.o")]
        if p.name == "chromium":
            return ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"]
        return [str(VENV_PY), str(self.apps / f"replay_{p.name}.py")]


# ------------------------------------------------------------------------------------------------- trace

@dataclass
class Replay:
    trace: str
    user: str
    rows: int
    mapping: dict[str, str]  # trace app -> program name
    counts: dict[str, int]
    launches: list[str]  # program names, consecutive repeats collapsed


def trace_path(trace: str) -> Path:
    p = Path(trace)
    if p.exists():
        return p
    p = DATA / (trace if trace.endswith(".csv") else f"{trace}.csv")
    if not p.exists():
        raise SystemExit(f"no trace {trace!r} (looked for it as a path and in {DATA})")
    return p


def load_sequence(trace: str, user: str | None, programs: Sequence[Program]) -> Replay:
    path = trace_path(trace)
    with open(path, newline="") as f:
        rows = [(r["user"], r["app"]) for r in csv.DictReader(f)]
    per_user = Counter(u for u, _ in rows)
    if not per_user:
        raise SystemExit(f"{path}: no rows")
    user = user or max(per_user, key=lambda u: (per_user[u], u))
    apps = [a for u, a in rows if u == user]
    if not apps:
        raise SystemExit(f"{path}: no rows for user {user!r} (users: {', '.join(sorted(per_user))})")
    freq = Counter(apps)
    first = {a: i for i, a in reversed(list(enumerate(apps)))}
    top = sorted(freq, key=lambda a: (-freq[a], first[a]))[:len(programs)]
    mapping = {a: programs[i].name for i, a in enumerate(top)}
    seq: list[str] = []
    for a in apps:
        if a in mapping and (not seq or seq[-1] != mapping[a]):
            seq.append(mapping[a])
    return Replay(str(path), user, len(apps), mapping, {a: freq[a] for a in top}, seq)


# ------------------------------------------------------------------------------------------- machine setup

def say(msg: str) -> None:
    print(msg, flush=True)


def apt_install(pkg: str) -> None:
    say(f"installing {pkg} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "-q", pkg], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", pkg], env=env, check=True, capture_output=True)


def preload_pids() -> list[int]:
    return [p for p in all_pids() if exe_of(p) == "/usr/sbin/preload"]


def ensure_packages(conditions: Sequence[str]) -> list[str]:
    """gcc, chromium and (for the preload condition) preload; a preload service started by its package
    is stopped (no systemd here: its init script)."""
    installed = []
    wanted = [("gcc", "gcc"), ("chromium", "chromium")]
    if "preload" in conditions:
        wanted.append(("preload", "preload"))
    for binary, pkg in wanted:
        if not shutil.which(binary):
            apt_install(pkg)
            installed.append(pkg)
    if "preload" in conditions and preload_pids():
        if "preload" not in installed:
            raise SystemExit(f"a preload daemon is running (pids {preload_pids()}); stop it first "
                             "(/etc/init.d/preload stop): it would prefetch in every condition")
        say("preload's package started its service: stopping it")
        subprocess.run(["/etc/init.d/preload", "stop"], capture_output=True)
        kill_pids(preload_pids(), signal.SIGTERM)
    return installed


def ensure_user(work: Work) -> tuple[int, int, Path]:
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        say(f"creating system user {USER} (home {work.home})")
        work.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["useradd", "--system", "--create-home", "--home-dir", str(work.home),
                        "--shell", "/usr/sbin/nologin", USER], check=True)
        pw = pwd.getpwnam(USER)
    return pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)


def c_source(functions: int = 400) -> str:
    """A deterministic C file: 14 system headers and `functions` small functions (~2,800 lines); -O2 takes
    about 1 s here, so that the compiler's start-up (cc1, as, the headers) is a visible part of it."""
    heads = ("ctype.h", "errno.h", "fcntl.h", "math.h", "pthread.h", "signal.h", "stdint.h", "stdio.h",
             "stdlib.h", "string.h", "sys/stat.h", "sys/types.h", "time.h", "unistd.h")
    out = [f"#include <{h}>" for h in heads] + [""]
    for i in range(functions):
        out += [f"int g{i}(int a, int b) {{",
                f"    int c = a * {i + 1} + b;",
                f"    if (c > {i % 17}) c ^= c >> {i % 5 + 1};",
                "    return c;",
                "}",
                ""]
    out += ["int (*const replay_table[])(int, int) = {", *[f"    g{i}," for i in range(functions)], "};", ""]
    return "\n".join(out)


def make_files(root: Path, count: int = 3000, seed: int = 20240) -> None:
    stamp = root / ".complete"
    want = f"{count} {seed}\n"
    if stamp.exists() and stamp.read_text() == want:
        return
    say(f"generating {count} small files under {root} ...")
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(seed)
    for i in range(count):
        d = root / f"d{i // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.bin").write_bytes(rnd.randbytes(rnd.randint(4096, 32768)))
    stamp.write_text(want)


def build_work(work: Work, uid: int, gid: int) -> None:
    """Scripts, inputs and the writable dirs (owned by the replay user); reused when already there."""
    work.root.mkdir(parents=True, exist_ok=True)
    work.root.chmod(0o755)
    for d in (work.apps, work.src.parent, work.run):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    for name, text in PY_APPS.items():
        path = work.apps / f"replay_{name}.py"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        path.chmod(0o644)
    src = c_source()
    if not work.src.exists() or work.src.read_text() != src:
        work.src.write_text(src)
    make_files(work.files)
    for d in (work.out, work.home, work.profile, work.root / "tmp"):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, gid)


def user_env(home: Path, work: Work) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home), "USER": USER,
            "LOGNAME": USER, "LANG": "C.UTF-8", "TMPDIR": str(work.root / "tmp"), "SHELL": "/bin/bash"}


# --------------------------------------------------------------------------------------------------- /proc

def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat fields from field 3 (state) on; None when the process is gone."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """Start time of pid (clock ticks since boot): with the pid, it names one process, not a reused pid."""
    f = stat_fields(pid)
    return int(f[19]) if f else None


def alive(pid: int) -> bool:
    f = stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        f = stat_fields(pid)
        if f:
            kids.setdefault(int(f[1]), []).append(pid)
    return kids


def tree(root: int) -> list[int]:
    kids, out, todo = children_map(), [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def kill_pids(pids: Sequence[int], sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> list[int]:
    """Signal pids, wait until they are gone (or zombies); the ones still alive after timeout_s."""
    for p in pids:
        with contextlib.suppress(OSError):
            os.kill(p, sig)
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        if left:
            time.sleep(0.02)
    return left


def snapshot_procs(pids: Sequence[int]) -> list[tuple[int, int]]:
    """(pid, start time) of the live ones: what kill_snapshot may kill later without hitting a reused pid."""
    out = []
    for p in pids:
        st = start_time(p)
        if st is not None and alive(p):
            out.append((p, st))
    return out


def kill_snapshot(procs: Sequence[tuple[int, int]], timeout_s: float = 10.0) -> list[int]:
    return kill_pids([p for p, st in procs if start_time(p) == st], timeout_s=timeout_s)


def kill_tree(root: int) -> None:
    for _ in range(3):  # a browser may fork while it is being killed
        pids = [p for p in tree(root) if alive(p)]
        if not pids:
            return
        kill_pids(pids)


def user_pids(uid: int) -> list[int]:
    out = []
    for p in all_pids():
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{p}").st_uid == uid and alive(p):
                out.append(p)
    return out


def kill_user(uid: int) -> int:
    """Kill whatever the replay user still runs (nothing of a condition outlives it)."""
    pids = user_pids(uid)
    kill_pids(pids)
    return len(pids)


def file_pages() -> int:
    return meminfo("Active(file)") + meminfo("Inactive(file)")


def cpu_idle_share(window_s: float = 1.0) -> float:
    def read() -> tuple[int, int]:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = read()
    time.sleep(window_s)
    t1, i1 = read()
    return (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_s: float, idle: float = 0.85) -> float:
    """Until the CPUs were mostly idle for two seconds in a row (or max_s); seconds waited."""
    t0, calm = time.monotonic(), 0
    while time.monotonic() - t0 < max_s and calm < 2:
        calm = calm + 1 if cpu_idle_share() >= idle else 0
    return time.monotonic() - t0


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


# -------------------------------------------------------------------------------------------------- BPF

BPF_TEXT = r"""
#define CAP 512
#define DAEMON 1
#define LAUNCH 2

struct pkey { u64 ino; u64 index; u32 dev; u32 pad; };
struct pval { u32 gen; u32 tgid; u32 used; u32 life; u32 used_life; u32 pad; };
struct tval { u64 inserted; u64 used; char comm[16]; };

BPF_HASH(roles, u32, u8, 65536);                                 /* tid -> DAEMON | LAUNCH */
BPF_TABLE("lru_hash", struct pkey, struct pval, pages, 1048576);  /* pages a daemon inserted */
BPF_HASH(by_tgid, u32, struct tval, 4096);                       /* per inserting process */
BPF_HASH(life_by_tgid, u32, struct tval, 4096);  /* the same over a phase, whatever evictions came */
BPF_ARRAY(gen, u32, 1);
BPF_ARRAY(life, u32, 1);
BPF_ARRAY(stats, u64, 4);  /* 0 inserted unmarked, 1 used unmarked, 2 launch misses, 3 daemon events */

static __always_inline void count(int i, u64 n) {
    u64 *v = stats.lookup(&i);
    if (v) __sync_fetch_and_add(v, n);
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u8 *r = roles.lookup(&tgid);
    if (r) {
        u32 child = args->child_pid;
        u8 v = *r;
        roles.update(&child, &v);
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    roles.delete(&tid);
    return 0;
}

/* The loops below stop at min(pages, CAP). The empty asm hides from clang that this bound is >= 1:
   otherwise clang turns the loop into a count-down the verifier cannot bound. */
TRACEPOINT_PROBE(filemap, mm_filemap_add_to_page_cache) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u8 *r = roles.lookup(&tgid);
    if (!r) return 0;
    u64 n = 1ULL << (args->order & 15);
    struct pkey k = {};
    k.ino = args->i_ino;
    k.dev = args->s_dev;
    u64 base = args->index;
    u32 lim = n < CAP ? n : CAP;
    asm volatile("" : "+r"(lim));
    if (*r == LAUNCH) {  /* the launch read it itself: a daemon's earlier copy of the page is gone */
        count(2, n);
        for (u32 i = 0; i < CAP; i++) {
            if (i >= lim) break;
            k.index = base + i;
            pages.delete(&k);
        }
        return 0;
    }
    u32 z = 0;
    u32 *g = gen.lookup(&z);
    u32 *l = life.lookup(&z);
    if (!g || !l) return 0;
    struct pval v = {};
    v.gen = *g;
    v.life = *l;
    v.tgid = tgid;
    for (u32 i = 0; i < CAP; i++) {  /* an LRU hash update does not fail for want of room */
        if (i >= lim) break;
        k.index = base + i;
        pages.update(&k, &v);
    }
    u64 marked = lim;
    struct tval zero = {};
    struct tval *t = by_tgid.lookup_or_try_init(&tgid, &zero);
    if (t) {
        __sync_fetch_and_add(&t->inserted, marked);
        bpf_get_current_comm(&t->comm, sizeof(t->comm));  /* the latest: after exec */
    }
    struct tval *lt = life_by_tgid.lookup_or_try_init(&tgid, &zero);
    if (lt) {
        __sync_fetch_and_add(&lt->inserted, marked);
        bpf_get_current_comm(&lt->comm, sizeof(lt->comm));
    }
    if (n > marked) count(0, n - marked);
    count(3, 1);
    return 0;
}

static __always_inline int use_range(u32 dev, u64 ino, u64 first, u64 last) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u8 *r = roles.lookup(&tgid);
    if (!r || *r != LAUNCH || last < first) return 0;
    u32 z = 0;
    u32 *g = gen.lookup(&z);
    u32 *l = life.lookup(&z);
    if (!g || !l) return 0;
    u32 cur = *g, cur_life = *l;
    u64 n = last - first + 1;
    struct pkey k = {};
    k.ino = ino;
    k.dev = dev;
    u32 lim = n < CAP ? n : CAP;
    asm volatile("" : "+r"(lim));
    for (u32 i = 0; i < CAP; i++) {
        if (i >= lim) break;
        k.index = first + i;
        struct pval *v = pages.lookup(&k);
        if (!v) continue;
        u32 owner = v->tgid;
        if (v->gen == cur && !v->used) {
            v->used = 1;
            struct tval *t = by_tgid.lookup(&owner);
            if (t) __sync_fetch_and_add(&t->used, 1);
        }
        if (v->life == cur_life && !v->used_life) {
            v->used_life = 1;
            struct tval *lt = life_by_tgid.lookup(&owner);
            if (lt) __sync_fetch_and_add(&lt->used, 1);
        }
    }
    if (n > CAP) count(1, n - CAP);
    return 0;
}

TRACEPOINT_PROBE(filemap, mm_filemap_get_pages) {
    return use_range(args->s_dev, args->i_ino, args->index, args->last_index);
}

TRACEPOINT_PROBE(filemap, mm_filemap_map_pages) {
    return use_range(args->s_dev, args->i_ino, args->index, args->last_index);
}

TRACEPOINT_PROBE(filemap, mm_filemap_fault) {
    return use_range(args->s_dev, args->i_ino, args->index, args->index);
}
"""


PREFETCHING_COMMS = ("memo-prefetcher", "preload")


class PageTracer:
    """The bench's own BPF program: pages a daemon inserted since the last eviction, and which of them a
    launch used. Roles: DAEMON for a daemon's process tree, LAUNCH for the launcher shells' trees."""

    def __init__(self) -> None:
        from bcc import BPF

        from collector import kernelfs

        kernelfs.ensure_tracefs()  # unmounted on a fresh VM until the collector's first start
        self.bpf = BPF(text=BPF_TEXT)
        self.roles = self.bpf["roles"]
        self.gen_map = self.bpf["gen"]
        self.stats = self.bpf["stats"]
        self.by_tgid = self.bpf["by_tgid"]
        self.life_map, self.life_by_tgid = self.bpf["life"], self.bpf["life_by_tgid"]
        self.generation = self.life = 0

    def add_root(self, pid: int, role: int) -> None:
        self.roles[ct.c_uint(pid)] = ct.c_ubyte(role)

    def ids(self, role: int) -> list[int]:
        return [k.value for k, v in self.roles.items() if v.value == role]

    def reset(self) -> None:
        """A new generation: earlier marks no longer count (called at each eviction)."""
        self.generation += 1
        self.gen_map[ct.c_int(0)] = ct.c_uint(self.generation)
        self.by_tgid.clear()
        for i in range(4):
            self.stats[ct.c_int(i)] = ct.c_ulonglong(0)

    def start_life(self) -> None:
        """From here on, pages a daemon inserts count as used when any launch uses them before they
        leave the cache, across evictions (life_snapshot); what a launch reads itself unmarks a page."""
        self.life += 1
        self.life_map[ct.c_int(0)] = ct.c_uint(self.life)
        self.life_by_tgid.clear()

    def life_snapshot(self) -> dict[str, dict[str, int]]:
        """Per inserting comm since start_life: prefetched_bytes, used_bytes (by any launch, however
        many evictions later); the rest was never used (evicted unused, or still unused now)."""
        return self._by_comm(self.life_by_tgid)[0]

    def _by_comm(self, table: Any) -> tuple[dict[str, dict[str, int]], int, int]:
        by_comm: dict[str, dict[str, int]] = {}
        inserted = used = 0
        for _, v in table.items():
            comm = v.comm.decode(errors="replace") or "?"
            c = by_comm.setdefault(comm, {"prefetched_bytes": 0, "used_bytes": 0})
            c["prefetched_bytes"] += v.inserted * PAGE
            c["used_bytes"] += v.used * PAGE
            inserted += v.inserted
            used += v.used
        return by_comm, inserted, used

    def snapshot(self) -> dict[str, Any]:
        by_comm, inserted, used = self._by_comm(self.by_tgid)
        st = [self.stats[ct.c_int(i)].value for i in range(4)]
        return {"prefetched_bytes": inserted * PAGE, "used_bytes": used * PAGE,
                "never_used_bytes": (inserted - used) * PAGE, "by_comm": by_comm,
                "unmarked_inserted_pages": st[0], "unmarked_used_pages": st[1],
                "launch_miss_bytes": st[2] * PAGE, "daemon_insert_events": st[3]}

    def close(self) -> None:
        self.bpf.cleanup()


# ------------------------------------------------------------------------------------------ daemon usage

@dataclass
class Usage:
    cpu_s: float = 0.0
    rss: int = 0
    pss: int = 0
    procs: int = 0


class Sampler(threading.Thread):
    """Every `interval` s: CPU seconds, RSS and PSS of the daemon's process tree (the DAEMON pids of the
    BPF map, so reparented members still count). CPU = sum over live members of utime+stime+cutime+cstime,
    plus the last sample of members that left without a live member parent to reap them, plus the
    rusage of reaped roots."""

    def __init__(self, tracer: PageTracer, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.tracer, self.interval = tracer, interval
        self.stop_evt = threading.Event()
        self.lock = threading.RLock()
        self.last: dict[int, tuple[int, int]] = {}  # pid -> (ppid, cpu ticks)
        self.threads: set[int] = set()
        self.lost_ticks = 0
        self.root_cpu_s = 0.0
        self.reaped: set[int] = set()
        self.now = Usage()
        self.phase = "setup"
        self.peaks: dict[str, Usage] = {}
        self.marks: dict[str, float] = {}
        self.names: dict[int, str] = {}  # pid -> which part of the daemon it is
        self.by_name: dict[str, float] = {}  # CPU seconds per part, as of the last sample
        self.name_marks: dict[str, dict[str, float]] = {}
        self.rss_by_name: dict[str, int] = {}  # peak RSS per part during the test phase

    def run(self) -> None:
        while not self.stop_evt.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def _is_process(self, pid: int) -> bool:
        if pid in self.threads:
            return False
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Tgid:"):
                    if int(line.split()[1]) != pid:
                        self.threads.add(pid)
                        return False
                    return True
        except OSError:
            pass
        return False

    @staticmethod
    def _pss(pid: int) -> int:
        return helpers.pss_kb(pid) * 1024

    def sample(self) -> Usage:
        with self.lock:
            live: dict[int, tuple[int, int]] = {}
            rss = pss = 0
            for pid in self.tracer.ids(DAEMON):
                f = stat_fields(pid) if self._is_process(pid) else None
                if f is None:
                    continue
                live[pid] = (int(f[1]), sum(int(x) for x in f[11:15]))  # utime stime cutime cstime
                rss += int(f[21]) * PAGE
                pss += self._pss(pid)
            for pid, (ppid, ticks) in self.last.items():
                if pid not in live and pid not in self.reaped and ppid not in live:
                    self.lost_ticks += ticks
            for pid, (ppid, ticks) in self.last.items():
                if pid not in live and pid not in self.reaped and ppid not in live:
                    name = self._part(pid)
                    self.by_name[name + "_gone"] = self.by_name.get(name + "_gone", 0.0) + ticks / TICK
            self.last = live
            parts: dict[str, float] = {k: v for k, v in self.by_name.items() if k.endswith("_gone")}
            rss_parts: dict[str, int] = {}
            for pid, (_, ticks) in live.items():
                name = self._part(pid)
                parts[name] = parts.get(name, 0.0) + ticks / TICK
                f = stat_fields(pid)
                if f is not None:
                    rss_parts[name] = rss_parts.get(name, 0) + int(f[21]) * PAGE
            self.by_name = parts
            if self.phase == "test":
                for name, b in rss_parts.items():
                    self.rss_by_name[name] = max(self.rss_by_name.get(name, 0), b)
            cpu = (sum(t for _, t in live.values()) + self.lost_ticks) / TICK + self.root_cpu_s
            self.now = Usage(cpu, rss, pss, len(live))
            peak = self.peaks.setdefault(self.phase, Usage())
            peak.rss, peak.pss = max(peak.rss, rss), max(peak.pss, pss)
            peak.procs = max(peak.procs, len(live))
            return self.now

    def _part(self, pid: int) -> str:
        """collector, inference, prefetcher, llm-engine (vLLM's processes), supervisor, or the comm."""
        name = self.names.get(pid)
        if name is None:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                cmd = comm = "?"
            parts = (("memo-collector", "collector"), ("memo-inference", "inference"),
                     ("memo-prefetcher", "prefetcher"), ("VLLM", "llm-engine"), ("lstm_train", "inference"),
                     ("memo.supervisor", "supervisor"), ("resource_tracker", "inference"))
            name = next((n for key, n in parts if key in cmd or key in comm), None)
            if name is None:  # perhaps not yet renamed (vLLM sets its process title after start)
                return comm
            if name != "supervisor":  # a service between the supervisor's fork and its exec looks like it
                self.names[pid] = name
        return name

    def work(self) -> dict[tuple[int, int], tuple[str, int, int, int]]:
        """Per live daemon process (pid, start time): its part, CPU ticks (utime+stime), bytes it caused
        to be read from storage (read_bytes of /proc/PID/io: its readahead, page faults and swap-ins)
        and major faults. Two of these around a window say what the daemon did in it."""
        out: dict[tuple[int, int], tuple[str, int, int, int]] = {}
        with self.lock:
            for pid in self.tracer.ids(DAEMON):
                f = stat_fields(pid) if self._is_process(pid) else None
                if f is None:
                    continue
                try:
                    read = activity.read_bytes(pid)
                except OSError:
                    continue
                out[(pid, int(f[19]))] = (self._part(pid), int(f[11]) + int(f[12]), read, int(f[9]))
        return out

    @staticmethod
    def work_between(a: dict[tuple[int, int], tuple[str, int, int, int]],
                     b: dict[tuple[int, int], tuple[str, int, int, int]]) -> dict[str, dict[str, float]]:
        """Per part: cpu_s, read_bytes and major_faults from sample a to sample b (a process that started
        in between counts from zero; one that ended in between is not seen)."""
        out: dict[str, dict[str, float]] = {}
        for key, (part, ticks, read, majflt) in b.items():
            _, t0, r0, m0 = a.get(key, (part, 0, 0, 0))
            o = out.setdefault(part, {"cpu_s": 0.0, "read_bytes": 0, "major_faults": 0})
            o["cpu_s"] += (ticks - t0) / TICK
            o["read_bytes"] += read - r0
            o["major_faults"] += majflt - m0
        return out

    def add_reaped_root(self, pid: int, cpu_s: float) -> None:
        with self.lock:
            self.reaped.add(pid)
            self.root_cpu_s += cpu_s

    def set_phase(self, phase: str) -> None:
        u = self.sample()
        self.marks[f"{phase}_start_cpu_s"] = u.cpu_s
        self.marks[f"{phase}_start_wall_s"] = time.time()
        self.name_marks[phase] = self._merged_names()
        self.phase = phase

    def _merged_names(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in self.by_name.items():
            name = k.removesuffix("_gone")
            out[name] = out.get(name, 0.0) + v
        return out

    def finish(self) -> dict[str, Any]:
        u = self.sample()
        self.stop_evt.set()
        peaks = {ph: {"peak_rss_bytes": p.rss, "peak_pss_bytes": p.pss, "peak_procs": p.procs}
                 for ph, p in self.peaks.items()}
        test_start = self.marks.get("test_start_cpu_s", u.cpu_s)
        end = self._merged_names()
        start = self.name_marks.get("test", {})
        test_by = {n: round(end.get(n, 0.0) - start.get(n, 0.0), 2) for n in end}
        return {"cpu_s_test_by_part": test_by, "peak_rss_bytes_test_by_part": dict(self.rss_by_name),
                "cpu_s_condition": u.cpu_s, "cpu_s_test": u.cpu_s - test_start,
                "peak_rss_bytes": max((p.rss for p in self.peaks.values()), default=0),
                "peak_pss_bytes": max((p.pss for p in self.peaks.values()), default=0),
                "peak_rss_bytes_test": self.peaks.get("test", Usage()).rss,
                "peak_pss_bytes_test": self.peaks.get("test", Usage()).pss,
                "phases": peaks, "marks": self.marks}


def start_registered(argv: list[str], tracer: PageTracer, role: int, **kw: Any) -> subprocess.Popen[bytes]:
    """Start argv behind `read`, register its pid in the BPF map, then let it exec: nothing it forks can
    escape the map."""
    p = subprocess.Popen(["/bin/sh", "-c", 'read _ && exec "$@"', "sh", *argv], stdin=subprocess.PIPE,
                         start_new_session=True, **kw)
    tracer.add_root(p.pid, role)
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()
    return p


def wait_reaped(p: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, float]:
    """Wait for a child with wait4: its exit status and its CPU seconds (children it reaped included)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            raise TimeoutError(f"{p.args} did not exit within {timeout_s:.0f} s")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ daemons

PRELOAD_CONF = {
    "model": {"cycle": 2, "usecorrelation": "true", "minsize": 100000, "memtotal": 0, "memfree": 100,
              "memcached": 0},
    "system": {"doscan": "true", "dopredict": "true", "autosave": 3600, "mapprefix": "", "exeprefix": "",
               "processes": 30, "sortstrategy": 3},
}


def preload_conf(work: Work) -> dict[str, dict[str, Any]]:
    venv = os.path.realpath(REPO / ".venv")
    conf = json.loads(json.dumps(PRELOAD_CONF))
    conf["system"]["mapprefix"] = f"{venv}/;{work.root}/;/usr/;/lib;/var/cache/;!/"
    conf["system"]["exeprefix"] = f"{venv}/;{work.root}/;/usr/;!/"
    return conf


def conf_text(conf: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n"
                   for sec, kv in conf.items())


class Daemon:
    name = "none"

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def info(self) -> dict[str, Any]:
        return {}


class Preload(Daemon):
    name = "preload"

    def __init__(self, tracer: PageTracer, sampler: Sampler, work: Work) -> None:
        self.tracer, self.sampler = tracer, sampler
        self.dir = Path(tempfile.mkdtemp(prefix="memo-replay-preload-"))
        self.conf = preload_conf(work)
        self.argv = ["/usr/sbin/preload", "-f", "-c", str(self.dir / "preload.conf"),
                     "-s", str(self.dir / "preload.state"), "-l", str(self.dir / "preload.log"),
                     "-V", "9", "-n", "0"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.dir / "preload.conf").write_text(conf_text(self.conf))
        self.proc = start_registered(self.argv, self.tracer, DAEMON, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        if self.proc.poll() is not None:
            raise RuntimeError(f"preload exited at start ({self.proc.returncode}): {self.dir}/preload.log")

    def stop(self) -> None:
        if self.proc is None:
            return
        procs = snapshot_procs(self.tracer.ids(DAEMON))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_snapshot(procs)

    def info(self) -> dict[str, Any]:
        """What preload did, from its log (-V 9): cycles, and how much it chose to read ahead."""
        log = self.dir / "preload.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        plans = [int(kb) for kb in re.findall(r"kb available for preloading, using (\d+)kb of it", text)]
        return {"argv": self.argv, "config": self.conf, "dir": str(self.dir), "log": str(log),
                "predict_cycles": len(plans), "cycles_with_readahead": sum(1 for kb in plans if kb),
                "readahead_planned_bytes": sum(plans) * 1024, "log_tail": text.splitlines()[-12:]}


class Memo(Daemon):
    name = "memo"

    def __init__(self, tracer: PageTracer, sampler: Sampler) -> None:
        self.tracer, self.sampler = tracer, sampler
        self.dir = Path(tempfile.mkdtemp(prefix="memo-replay-memo-"))
        self.dir.chmod(0o755)  # as /run and /var/lib are: inference (the memo user) reaches its folder
        self.env = {**os.environ, "MEMO_PATHS__RUN_DIR": str(self.dir / "run"),
                    "MEMO_PATHS__DATA_DIR": str(self.dir / "data"), "MEMO_INFERENCE__PORT": "0",
                    "MEMO_COLLECTOR__BPF_PIN_DIR": f"/sys/fs/bpf/memo-replay-{os.getpid()}"}
        self.socket = self.dir / "run" / "inference.sock"
        self.started = False
        self.up_output = ""
        self.client: Any = None

    def env_shown(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k.startswith("MEMO_")}

    def start(self) -> None:

        log = self.dir / "memo-up.log"
        with open(log, "wb") as out:
            p = start_registered([str(MEMO_CLI), "up"], self.tracer, DAEMON, stdout=out, stderr=out,
                                 env=self.env)
            self.started = True
            self.sampler.add_reaped_root(p.pid, 0.0)  # its CPU comes from wait4, not from its last sample
            rc, cpu = wait_reaped(p, 330)
        self.sampler.add_reaped_root(p.pid, cpu)
        self.up_output = log.read_text(errors="replace")
        if rc != 0:
            raise RuntimeError(f"memo up failed ({rc}):\n{self.up_output}")
        self.client = unix_http(self.socket, 10.0)

    def get(self, path: str, **params: Any) -> Any:
        try:
            r = self.client.get(path, params=params)
            r.raise_for_status()
            return r.json()
        except Exception as e:  # recorded, the run goes on
            return {"error": str(e)}

    def predictions(self, uid: int, k: int = 5) -> list[str] | None:
        data = self.get("/v1/predictions", uid=uid, k=k)
        if "error" in data:
            return None
        return [p["app"] for p in data.get("predictions", [])]

    def stop(self) -> None:
        if not self.started:
            return
        procs = snapshot_procs(self.tracer.ids(DAEMON))
        r = subprocess.run([str(MEMO_CLI), "down"], env=self.env, capture_output=True, text=True, timeout=200)
        left = kill_snapshot(procs)
        if r.returncode != 0 or left:
            say(f"memo down: rc {r.returncode}, {len(left)} processes left: {r.stdout}{r.stderr}")
        if self.client is not None:
            self.client.close()

    def info(self) -> dict[str, Any]:
        return {"env": self.env_shown(), "dir": str(self.dir), "up_output": self.up_output}

    def final_state(self, uid: int) -> dict[str, Any]:
        return {"apps": self.get("/v1/apps"), "predictions": self.get("/v1/predictions", uid=uid, k=10),
                "feedback": self.get("/v1/feedback"), "users": self.get("/v1/users")}


# ----------------------------------------------------------------------------------------------- launching

class Shell:
    """A long-lived launcher shell reading commands from a pipe, the way a terminal user starts programs."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = open(log, "ab")  # noqa: SIM115 - lives as long as the shell
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, env=env,
                                     cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Drainer(threading.Thread):
    """Reads and discards what running apps still write to their FIFOs, so that none blocks on output."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.fds: set[int] = set()
        self.lock = threading.Lock()
        self.stop_evt = threading.Event()

    def add(self, fd: int) -> None:
        with self.lock:
            self.fds.add(fd)

    def remove(self, fd: int) -> None:
        with self.lock:
            self.fds.discard(fd)

    def run(self) -> None:
        while not self.stop_evt.is_set():
            with self.lock:
                fds = list(self.fds)
            if not fds:
                time.sleep(0.2)
                continue
            with contextlib.suppress(OSError, ValueError):
                ready, _, _ = select.select(fds, [], [], 0.2)
                with self.lock:
                    for fd in ready:
                        if fd in self.fds:
                            with contextlib.suppress(BlockingIOError):
                                os.read(fd, 65536)


@dataclass
class Running:
    program: Program
    pid: int | None
    fifo: Path
    fd: int
    output: bytes = b""
    start: int | None = None  # start_time(pid) at launch


def chain_argv(chain: str, argv: list[str], uid: int, gid: int) -> tuple[str, list[str]]:
    """(which shell, full argv) of one launch shape."""
    if chain == "direct":
        return "user", argv
    if chain == "setpriv":
        return "root", ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    if chain == "runuser":
        return "root", ["runuser", "-u", USER, "--", *argv]
    if chain == "env-nice":
        return "user", ["env", "nice", "-n", "0", *argv]
    if chain == "sh-exec":
        return "user", ["sh", "-c", "exec " + shlex.join(argv)]
    if chain == "two-level":
        cpus = f"0-{(os.cpu_count() or 1) - 1}"
        return "user", ["taskset", "-c", cpus, "ionice", "-c", "2", "-n", "4", *argv]
    raise ValueError(chain)


class Launcher:
    """The two launcher shells (replay user, root) and the apps they start."""

    def __init__(self, work: Work, uid: int, gid: int, home: Path, tracer: PageTracer,
                 drainer: Drainer) -> None:
        self.work, self.uid, self.gid = work, uid, gid
        self.drainer, self.n = drainer, 0
        env = user_env(home, work)
        self.user = Shell(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "bash", "--norc",
                           "--noprofile"], env, home, work.run / "shell-user.log")
        self.root = Shell(["bash", "--norc", "--noprofile"], env, work.root, work.run / "shell-root.log")
        tracer.add_root(self.user.pid, LAUNCH)
        tracer.add_root(self.root.pid, LAUNCH)
        self.live: dict[int, int | None] = {}  # pid -> start time of apps not stopped yet

    def launch(self, p: Program, chain: str, timeout_s: float) -> tuple[Running, float]:
        self.n += 1
        fifo = self.work.run / f"ready-{os.getpid()}-{self.n}"
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
        fifo.chmod(0o666)
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer of its own: select never sees EOF
        which, argv = chain_argv(chain, self.work.argv(p), self.uid, self.gid)
        f = shlex.quote(str(fifo))
        if p.foreground:
            line = f'{shlex.join(argv)} </dev/null >{f} 2>&1; echo "ready $?" >{f}'
        else:
            line = f'{shlex.join(argv)} </dev/null >{f} 2>&1 & echo "pid $!" >{f}'
        shell = self.user if which == "user" else self.root
        buf = bytearray()
        t0 = time.perf_counter()
        shell.send(line)
        ok = read_until(fd, p.ready, time.monotonic() + timeout_s, buf)
        seconds = time.perf_counter() - t0
        if not ok:
            os.close(fd)
            raise RuntimeError(f"{p.name} ({chain}) not ready within {timeout_s:.0f} s: "
                               f"{bytes(buf)[-2000:]!r}")
        pid = None
        if not p.foreground:
            read_until(fd, b"pid ", time.monotonic() + 5, buf, rb"pid \d+\n")
            m = re.search(rb"pid (\d+)\n", buf)
            pid = int(m.group(1)) if m else None
        else:
            m = re.search(rb"ready (\d+)", buf)
            if m and m.group(1) != b"0":
                raise RuntimeError(f"{p.name} failed ({m.group(1).decode()}): {bytes(buf)[-2000:]!r}")
        self.drainer.add(fd)
        start = start_time(pid) if pid else None
        if pid:
            self.live[pid] = start
        return Running(p, pid, fifo, fd, bytes(buf), start), seconds

    def stop(self, r: Running | None) -> None:
        if r is None:
            return
        if r.pid:
            self.kill(r.pid, r.start)
        self.drainer.remove(r.fd)
        with contextlib.suppress(OSError):
            os.close(r.fd)
        r.fifo.unlink(missing_ok=True)
        if r.program.name == "chromium":  # a killed browser leaves its profile lock behind
            for name in ("SingletonLock", "SingletonSocket", "SingletonCookie"):
                with contextlib.suppress(OSError):
                    (self.work.profile / name).unlink()

    def kill(self, pid: int, start: int | None) -> None:
        if start is not None and start_time(pid) == start:
            kill_tree(pid)
        self.live.pop(pid, None)

    def close(self) -> None:
        for pid, start in list(self.live.items()):
            self.kill(pid, start)
        self.user.close()
        self.root.close()


def read_until(fd: int, token: bytes, deadline: float, buf: bytearray, pattern: bytes | None = None) -> bool:
    """Read fd into buf until token (or the regex pattern) appears; False at the deadline."""
    def found() -> bool:
        return re.search(pattern, buf) is not None if pattern else token in buf

    while not found():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if r:
            with contextlib.suppress(BlockingIOError):
                buf += os.read(fd, 65536)
    return True


# ------------------------------------------------------------------------------------------------ eviction

BALLAST = r"""
import ctypes, mmap, sys
n = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
locked = libc.mlockall(3) == 0  # MCL_CURRENT | MCL_FUTURE
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
print("ready", "locked" if locked else "unlocked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def ballast(leave_bytes: int) -> Iterator[dict[str, Any]]:
    """One process holding mlocked anonymous memory (MemAvailable minus leave_bytes) until the end."""
    size = meminfo("MemAvailable") - leave_bytes
    if leave_bytes <= 0 or size < 1 << 30:
        yield {"bytes": 0}
        return
    say(f"ballast: locking {size / 2**30:.1f} GiB (leaves {leave_bytes / 2**30:.1f} GiB available) ...")
    p = subprocess.Popen(["/usr/bin/python3", "-c", BALLAST, str(size)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError("ballast did not start")
        yield {"bytes": size, "locked": line[1] == "locked", "pid": p.pid}
    finally:
        p.kill()
        p.wait()


def hog(demand: int, swap_floor: int, limit_s: float, chunk: int = 64 * MB) -> int:
    """Allocate and write anonymous memory in this process until `demand` bytes are allocated, SwapFree
    is below swap_floor or limit_s passed; free it all again. MB allocated. (In-process, not a child: a
    process exec'd for it would be a launch to MEMO's collector.)"""
    chunks: list[bytearray] = []
    t0 = time.monotonic()
    try:
        while (len(chunks) * chunk < demand and meminfo("SwapFree") > swap_floor
               and time.monotonic() - t0 < limit_s):
            chunks.append(bytearray(b"\x01") * chunk)  # written in full: every page faulted in
        return len(chunks) * chunk // MB
    finally:
        chunks.clear()


class Evictor:
    """drop: drop_caches. pressure: a hog asking for all free memory and `beyond_bytes` more, the same
    demand whatever the page cache holds, so reclaim takes about that much from every condition (a hog
    that stopped once the file pages were below a target did nothing at all after a condition that kept
    the cache small: 12 of MEMO's 15 pressure evictions in one run, 6 of cold's)."""

    def __init__(self, beyond_bytes: int, swap_total: int, limit_s: float = 60.0) -> None:
        self.beyond, self.limit_s = beyond_bytes, limit_s
        self.swap_share = swap_total // 2

    def evict(self, mode: str) -> dict[str, Any]:
        before, cached = file_pages(), meminfo("Cached")
        t = time.perf_counter()
        rec: dict[str, Any] = {"mode": mode}
        if mode == "drop":
            drop_caches()
        else:
            # the hog may push at most half the swap file into swap on top of what is there already
            floor = max(meminfo("SwapFree") - self.swap_share, 256 * MB)
            rec["free_before_bytes"] = meminfo("MemFree")
            rec["hog_mb"] = hog(rec["free_before_bytes"] + self.beyond, floor, self.limit_s)
            rec["swap_used_bytes"] = meminfo("SwapTotal") - meminfo("SwapFree")
        rec["seconds"] = time.perf_counter() - t
        after = file_pages()
        rec.update(file_before_bytes=before, file_after_bytes=after, removed_bytes=before - after,
                   cached_before_bytes=cached, cached_after_bytes=meminfo("Cached"))
        return rec


# --------------------------------------------------------------------------------------------- conditions

class Progress:
    """tqdm on a terminal, a line every 30 s otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.last = total, 0, time.monotonic()
        self.bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="launch", dynamic_ncols=True)

    def step(self, desc: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.last > 30 or self.done == self.total:
            self.last = time.monotonic()
            say(f"  [{self.done}/{self.total}] {desc}")

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            say(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Ctx:
    args: argparse.Namespace
    work: Work
    uid: int
    gid: int
    home: Path
    tracer: PageTracer
    drainer: Drainer
    evictor: Evictor
    programs: dict[str, Program]
    learn: list[str]
    test: list[str]
    chains: tuple[str, ...]
    modes: tuple[str, ...]
    progress: Progress


def chain_of(ctx: Ctx, index: int) -> str:
    return ctx.chains[index % len(ctx.chains)]


def make_daemon(cond: str, ctx: Ctx, sampler: Sampler) -> Daemon:
    if cond == "preload":
        return Preload(ctx.tracer, sampler, ctx.work)
    if cond == "memo":
        return Memo(ctx.tracer, sampler)
    return Daemon()


def hit(prog: Program, apps: list[str] | None, k: int) -> bool | None:
    if apps is None:
        return None
    return any(prog.match in a for a in apps[:k])


def run_condition(cond: str, ctx: Ctx, out: dict[str, Any]) -> None:
    """One condition from a clean machine state to the end of its test phase, recorded into out as it
    goes (an interrupted condition keeps what it measured); everything it started is stopped before it
    returns (or raises)."""
    args = ctx.args
    kill_user(ctx.uid)
    drop_caches()
    quiet_s = wait_quiet(60)
    sampler = Sampler(ctx.tracer)
    sampler.start()
    launcher = Launcher(ctx.work, ctx.uid, ctx.gid, ctx.home, ctx.tracer, ctx.drainer)
    daemon = make_daemon(cond, ctx, sampler)
    out.update(condition=cond, quiet_wait_s=quiet_s, learn=[], test=[], complete=False)
    prev: Running | None = None
    t_start = time.monotonic()
    try:
        if isinstance(daemon, Preload | Memo):
            daemon.start()
            out["settle_s"] = wait_quiet(180)
            sampler.set_phase("learn")
            for i, name in enumerate(ctx.learn):
                r, secs = launcher.launch(ctx.programs[name], chain_of(ctx, i), args.timeout)
                launcher.stop(prev)
                prev = r
                out["learn"].append({"index": i, "program": name, "chain": chain_of(ctx, i), "seconds": secs})
                ctx.progress.step(f"{cond} learn {name}")
                time.sleep(args.gap)
        else:
            if cond == "warm":  # every program once, so that the cache holds all of them
                for name in dict.fromkeys(ctx.learn + ctx.test):
                    r, _ = launcher.launch(ctx.programs[name], "direct", args.timeout)
                    launcher.stop(prev)
                    prev = r
            if ctx.learn:  # the primer: the last learning app is up, as in the daemon conditions
                i = len(ctx.learn) - 1
                r, _ = launcher.launch(ctx.programs[ctx.learn[i]], chain_of(ctx, i), args.timeout)
                launcher.stop(prev)
                prev = r
            time.sleep(args.gap)
        sampler.set_phase("test")
        ctx.tracer.start_life()
        for j, name in enumerate(ctx.test):
            rec, prev = test_launch(cond, ctx, j, name, launcher, daemon, prev, sampler)
            out["test"].append(rec)
            out["pages_test_phase"] = ctx.tracer.life_snapshot()
            ctx.progress.step(f"{cond} test {name} {rec['seconds']:.2f}s")
        sampler.set_phase("end")
        if isinstance(daemon, Memo):
            out["memo_state"] = daemon.final_state(ctx.uid)
        out["complete"] = True
    finally:
        def record_usage() -> None:
            usage = sampler.finish()
            out["daemon_usage"] = usage if daemon.name != "none" else None

        def leftovers() -> None:
            out["left_running_killed"] = kill_user(ctx.uid)
            out["daemon_left_running"] = len([p for p in ctx.tracer.ids(DAEMON) if alive(p)])
            out["daemon"] = daemon.info()

        for step in (lambda: launcher.stop(prev), record_usage, daemon.stop, launcher.close, leftovers):
            try:  # every step runs, whatever the one before did
                step()
            except Exception as e:
                say(f"{cond}: cleanup step failed: {e!r}")
        out["seconds"] = time.monotonic() - t_start


def test_launch(cond: str, ctx: Ctx, j: int, name: str, launcher: Launcher, daemon: Daemon,
                prev: Running | None, sampler: Sampler) -> tuple[dict[str, Any], Running]:
    """Evict (not for warm), wait the gap, ask MEMO, launch, read the page marks, kill the previous app.
    The daemon's work (CPU, storage reads, major faults per part) is recorded for the eviction (which
    also holds its work after the previous launch), the gap after it and the launch: what it does while
    the user waits is its cost."""
    index = len(ctx.learn) + j
    mode = ctx.modes[j % len(ctx.modes)]
    prog = ctx.programs[name]
    chain = chain_of(ctx, index)
    watch = daemon.name != "none"
    w_start = sampler.work() if watch else {}
    evict_at = time.time()  # wall clock, to line records up with the daemons' logs
    ev = ctx.evictor.evict(mode) if cond != "warm" else {"mode": mode, "removed_bytes": 0, "seconds": 0.0}
    ev["at"] = evict_at
    ctx.tracer.reset()
    w_evicted = sampler.work() if watch else {}
    time.sleep(ctx.args.gap)
    rec: dict[str, Any] = {"index": index, "test_index": j, "program": name, "chain": chain, "mode": mode}
    if isinstance(daemon, Memo):
        apps = daemon.predictions(ctx.uid, 5)
        rec["memo_top5"] = apps
        rec["memo_hit1"], rec["memo_hit5"] = hit(prog, apps, 1), hit(prog, apps, 5)
    w_launch = sampler.work() if watch else {}
    rec["launched_at"] = time.time()
    r, secs = launcher.launch(prog, chain, ctx.args.timeout)
    rec["seconds"] = secs
    if watch:
        rec["daemon_work"] = {"evict": Sampler.work_between(w_start, w_evicted),
                              "gap": Sampler.work_between(w_evicted, w_launch),
                              "launch": Sampler.work_between(w_launch, sampler.work())}
    rec["pages"] = ctx.tracer.snapshot()
    rec["evict"] = ev
    launcher.stop(prev)
    return rec, r


# ------------------------------------------------------------------------------------------------ summary

def gap(cold: float | None, warm: float | None, cond: float | None) -> float | None:
    if cold is None or warm is None or cond is None or cold - warm <= 1e-9:
        return None
    return (cold - cond) / (cold - warm)


def totals_by(recs: list[dict[str, Any]], key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in recs:
        out[r[key]] = out.get(r[key], 0.0) + r["seconds"]
    return out


def gap_shares(mine: dict[int, dict[str, Any]], cold: dict[int, dict[str, Any]],
               warm: dict[int, dict[str, Any]], key: str | None = None) -> Any:
    """Share of the cold->warm gap closed over the test launches all three have (by test index), overall
    (key None) or per value of key (mode, chain)."""
    common = sorted(set(mine) & set(cold) & set(warm))

    def share(idx: list[int]) -> float | None:
        if not idx:
            return None
        return gap(*(sum(d[i]["seconds"] for i in idx) for d in (cold, warm, mine)))

    if key is None:
        return share(common)
    values = dict.fromkeys(mine[i][key] for i in common)
    return {v: share([i for i in common if mine[i][key] == v]) for v in values}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    conds = results["conditions"]
    cold = {r["test_index"]: r for r in conds.get("cold", {}).get("test", [])}
    warm = {r["test_index"]: r for r in conds.get("warm", {}).get("test", [])}
    cold_apps = per_app(list(cold.values()))
    summary: dict[str, Any] = {}
    for name, c in conds.items():
        recs = c.get("test", [])
        mine = {r["test_index"]: r for r in recs}
        apps = per_app(recs)
        s: dict[str, Any] = {"total_s": sum(r["seconds"] for r in recs), "launches": len(recs),
                             "complete": c.get("complete", False), "per_app_median_s": apps,
                             "gap_closed": gap_shares(mine, cold, warm),
                             "gap_closed_by_mode": gap_shares(mine, cold, warm, "mode"),
                             "gap_closed_by_chain": gap_shares(mine, cold, warm, "chain"),
                             "total_s_by_mode": totals_by(recs, "mode"),
                             "total_s_by_chain": totals_by(recs, "chain")}
        ratios = {a: apps[a] / cold_apps[a] - 1 for a in apps if cold_apps.get(a)}
        worst = max(ratios, key=lambda a: ratios[a]) if ratios else None
        s["worst_app_vs_cold"] = ratios[worst] if worst else None
        s["worst_app"] = worst
        s["launch_miss_bytes"] = sum(r["pages"]["launch_miss_bytes"] for r in recs)
        # prefetched: what the daemon's prefetching process read ahead; its other processes (MEMO's
        # services and vLLM engine faulting their own code back in after an eviction) are counted apart
        pre = used = own = 0
        for r in recs:
            for comm, x in r["pages"]["by_comm"].items():
                if comm in PREFETCHING_COMMS:
                    pre, used = pre + x["prefetched_bytes"], used + x["used_bytes"]
                else:
                    own += x["prefetched_bytes"]
        s.update(prefetched_bytes=pre, used_bytes=used, never_used_bytes=pre - used, own_reread_bytes=own)
        if "pages_test_phase" in c:  # any launch's use counts, however many evictions later
            ph = [x for comm, x in c["pages_test_phase"].items() if comm in PREFETCHING_COMMS]
            pre_ph, used_ph = sum(x["prefetched_bytes"] for x in ph), sum(x["used_bytes"] for x in ph)
            s["test_phase_pages"] = {"prefetched_bytes": pre_ph, "used_bytes": used_ph,
                                     "never_used_bytes": pre_ph - used_ph,
                                     "never_used_share": (pre_ph - used_ph) / pre_ph if pre_ph else None}
        s["evicted_bytes_mean"] = statistics.mean(r["evict"]["removed_bytes"] for r in recs) if recs else 0
        for k in (1, 5):
            hits = [r[f"memo_hit{k}"] for r in recs if r.get(f"memo_hit{k}") is not None]
            s[f"memo_top{k}_hit_rate"] = sum(hits) / len(hits) if hits else None
        s["by_prediction"] = by_prediction(mine, cold, warm)
        s["daemon_cpu_s_by_window"] = cpu_by_window(recs)
        s["daemon_usage"] = c.get("daemon_usage")
        summary[name] = s
    return summary


def cpu_by_window(recs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The daemon's CPU seconds per window of the test launches (evict, gap, launch) and part."""
    out: dict[str, dict[str, float]] = {}
    for r in recs:
        for window, parts in r.get("daemon_work", {}).items():
            o = out.setdefault(window, {})
            for part, w in parts.items():
                o[part] = round(o.get(part, 0.0) + w["cpu_s"], 2)
    return out


def by_prediction(mine: dict[int, dict[str, Any]], cold: dict[int, dict[str, Any]],
                  warm: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The test launches MEMO's top-1 named (hits) and the others (misses), apart: each set's count,
    median time-to-ready against the same launch cold, and share of its cold->warm gap closed. Where the
    remaining gap lies: in launches it predicted (the prefetch fell short) or in those it did not."""
    out: dict[str, Any] = {}
    for label, want in (("hits", True), ("misses", False)):
        idx = [i for i, r in mine.items() if r.get("memo_hit1") is want and i in cold]
        if not idx:
            continue
        vs_cold = [mine[i]["seconds"] / cold[i]["seconds"] - 1 for i in idx if cold[i]["seconds"] > 0]
        both = [i for i in idx if i in warm]
        closed = gap(*(sum(d[i]["seconds"] for i in both) for d in (cold, warm, mine))) if both else None
        out[label] = {"launches": len(idx), "median_vs_cold": statistics.median(vs_cold) if vs_cold else None,
                      "gap_closed": closed}
        for window in ("gap", "launch"):  # what the daemon did while these launches waited and ran
            works = [w for i in idx if (w := mine[i].get("daemon_work", {}).get(window)) is not None]
            if works:
                out[label][f"daemon_{window}"] = {
                    k: statistics.median(sum(x[k] for x in w.values()) for w in works)
                    for k in ("cpu_s", "read_bytes", "major_faults")}
    return out


def work_line(work: dict[str, dict[str, float]]) -> str:
    """'prefetcher 0.12 s 30 MB, inference ...' for one window of a record's daemon_work."""
    parts = sorted(work.items(), key=lambda kv: -(kv[1]["cpu_s"] + kv[1]["read_bytes"] / (100 * MB)))
    return ", ".join(f"{k} {v['cpu_s']:.2f} s {v['read_bytes'] / MB:.0f} MB {v['major_faults']:.0f} flt"
                     for k, v in parts if v["cpu_s"] >= 0.01 or v["read_bytes"] >= MB) or "nothing"


def per_app(recs: list[dict[str, Any]]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in recs:
        by.setdefault(r["program"], []).append(r["seconds"])
    return {a: statistics.median(v) for a, v in by.items()}


def pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.0%}"


def mb(x: float | None) -> str:
    return "-" if x is None else f"{x / MB:.0f}"


def print_table(results: dict[str, Any]) -> None:
    summary = results["summary"]
    modes = results["modes"]
    print()
    hdr = (f"{'condition':10} {'total s':>8} {'gap closed':>10} "
           + "".join(f"{'gap ' + m:>13}" for m in modes)
           + f" {'worst vs cold':>16} {'top-1':>6} {'missed MB':>9} {'prefetch MB':>11} "
           f"{'never used MB':>13} {'CPU s (test)':>13} {'peak RSS MB':>11} {'peak PSS MB':>11}")
    print(hdr)
    print("-" * len(hdr))
    for name, s in summary.items():
        u = s.get("daemon_usage") or {}
        cpu = f"{u['cpu_s_condition']:.1f} ({u['cpu_s_test']:.1f})" if u else "-"
        worst = "-" if s["worst_app_vs_cold"] is None else f"{s['worst_app_vs_cold']:+.0%} {s['worst_app']}"
        print(f"{name:10} {s['total_s']:8.2f} {pct(s['gap_closed']):>10} "
              + "".join(f"{pct(s['gap_closed_by_mode'].get(m)):>13}" for m in modes)
              + f" {worst:>16} {pct(s['memo_top1_hit_rate']):>6} {mb(s['launch_miss_bytes']):>9} "
              f"{mb(s['prefetched_bytes']):>11} "
              f"{mb(s['never_used_bytes']):>13} {cpu:>13} {mb(u.get('peak_rss_bytes')):>11} "
              f"{mb(u.get('peak_pss_bytes')):>11}")
    print("missed: what the launches read into the page cache themselves; prefetch: what the daemon's\n"
          "prefetching process put into it after each eviction; never used: of that, what the launch did\n"
          "not use before it was ready; CPU: the daemon's tree over the condition (test phase); RSS/PSS:\n"
          "tree sums")
    for name, s in summary.items():
        if (ph := s.get("test_phase_pages")) and ph["prefetched_bytes"]:
            print(f"{name}: over the whole test phase it read ahead {mb(ph['prefetched_bytes'])} MB, of "
                  f"which {mb(ph['never_used_bytes'])} MB ({pct(ph['never_used_share'])}) no launch used "
                  "before they left the cache (a page that outlived an eviction and served a later launch "
                  "counts as used here, not in the per-launch columns)")
    for name, s in summary.items():
        if s.get("own_reread_bytes"):
            print(f"{name}: its other processes read {s['own_reread_bytes'] / MB:.0f} MB of their own files "
                  "back in after the evictions")
    for name, s in summary.items():
        u = s.get("daemon_usage") or {}
        if u.get("cpu_s_test_by_part"):
            parts = ", ".join(f"{k} {v:.1f} s / {u['peak_rss_bytes_test_by_part'].get(k, 0) / MB:.0f} MB"
                              for k, v in sorted(u["cpu_s_test_by_part"].items(), key=lambda kv: -kv[1]))
            print(f"{name}: test-phase CPU / peak RSS per part: {parts}")
        for window, by in (s.get("daemon_cpu_s_by_window") or {}).items():
            print(f"{name}: CPU in the {window} windows: " + ", ".join(
                f"{k} {v:.2f} s" for k, v in sorted(by.items(), key=lambda kv: -kv[1])))
    for name, s in summary.items():
        for label, x in (s.get("by_prediction") or {}).items():
            med = "-" if x["median_vs_cold"] is None else f"{x['median_vs_cold']:+.1%}"
            print(f"{name}: {x['launches']} {label} of its top-1: median {med} against the same launch "
                  f"cold, {pct(x['gap_closed'])} of their cold->warm gap closed")
            for window in ("gap", "launch"):
                if (w := x.get(f"daemon_{window}")) is not None:
                    print(f"    the daemon in the {window} (median): {w['cpu_s']:.2f} s CPU, "
                          f"{w['read_bytes'] / MB:.0f} MB read from storage, "
                          f"{w['major_faults']:.0f} major faults")
    cold = {r["test_index"]: r for r in results["conditions"].get("cold", {}).get("test", [])}
    for name, c in results["conditions"].items():
        slow = [r for r in c["test"] if "daemon_work" in r and r["test_index"] in cold
                and r["seconds"] > 1.02 * cold[r["test_index"]]["seconds"]]
        if slow:
            print(f"{name}: launches slower than the same launch cold, and what the daemon did (CPU, storage "
                  "reads, major faults per part)")
        for r in slow:
            top = (r.get("memo_top5") or ["-"])[0].rsplit("/", 1)[-1]
            print(f"  #{r['index']} {r['program']} ({r['mode']}, {r['chain']}, top-1 {top}) "
                  f"{r['seconds'] / cold[r['test_index']]['seconds'] - 1:+.0%}: "
                  f"gap: {work_line(r['daemon_work']['gap'])}; "
                  f"launch: {work_line(r['daemon_work']['launch'])}")
    apps = list(dict.fromkeys(a for s in summary.values() for a in s["per_app_median_s"]))
    print("\nmedian time-to-ready (s) per app over the test launches (n = launches of it)")
    first = next(iter(results["conditions"].values()))
    n = Counter(r["program"] for r in first["test"])
    print(f"{'app':10} {'n':>3} " + "".join(f"{c:>9}" for c in summary))
    for a in apps:
        print(f"{a:10} {n[a]:>3} " + "".join(
            f"{s['per_app_median_s'].get(a, float('nan')):9.3f}" for s in summary.values()))
    chains = list(dict.fromkeys(r["chain"] for r in first["test"]))
    if len(chains) > 1:
        print("\nshare of the cold->warm gap closed per launch shape")
        print(f"{'chain':10} " + "".join(f"{c:>9}" for c in summary))
        for ch in chains:
            print(f"{ch:10} "
                  + "".join(f"{pct(s['gap_closed_by_chain'].get(ch)):>9}" for s in summary.values()))
    for name, c in results["conditions"].items():
        ev = [r["evict"] for r in c["test"] if r["evict"].get("seconds")]
        for m in modes:
            e = [x for x in ev if x["mode"] == m]
            if e:
                secs = statistics.mean(x["seconds"] for x in e)
                removed = statistics.mean(x["removed_bytes"] for x in e) / MB
                left = statistics.mean(x["file_after_bytes"] for x in e) / MB
                print(f"{name:8} {m:8}: {len(e)} evictions, {secs:.1f} s each, removed {removed:.0f} MB "
                      f"of page cache (left {left:.0f} MB)")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = results["conditions"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    markers = {"drop": "o", "pressure": "^"}
    for name, c in conds.items():
        xs = [r["test_index"] for r in c["test"]]
        ys = [r["seconds"] for r in c["test"]]
        line, = ax.plot(xs, ys, "-", lw=1, label=name)
        for m, mk in markers.items():
            pts = [(x, y) for x, y, r in zip(xs, ys, c["test"], strict=True) if r["mode"] == m]
            if pts:
                ax.plot(*zip(*pts, strict=True), mk, color=line.get_color(), ms=4)
    first = next(iter(conds.values()))
    ax.set_xticks([r["test_index"] for r in first["test"]])
    ax.set_xticklabels([r["program"] for r in first["test"]], rotation=90, fontsize=7)
    ax.set_ylabel("time to ready (s)")
    ax.set_title(f"{Path(results['trace']['name']).stem} user {results['trace']['user']}: test launches "
                 "(o drop, ^ pressure)")
    ax.legend()
    bottom = [0.0] * len(conds)
    for m in results["modes"]:
        vals = [sum(r["seconds"] for r in c["test"] if r["mode"] == m) for c in conds.values()]
        bx.bar(list(conds), vals, bottom=bottom, label=m)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    bx.set_ylabel("total time to ready (s)")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    ap.add_argument("--trace", default="android6", help="trace name in ../shared/data or a CSV path")
    ap.add_argument("--user", help="trace user (default: the one with most rows)")
    ap.add_argument("--learn", type=int, default=40, help="learning launches (default 40)")
    ap.add_argument("--test", type=int, default=30, help="test launches (default 30)")
    ap.add_argument("--gap", type=float, default=3.0, help="seconds between ready/eviction and next launch")
    ap.add_argument("--modes", default="drop,pressure", help="eviction modes, alternating (drop,pressure)")
    ap.add_argument("--chains", choices=("mix", "direct"), default="mix", help="launch shapes (default mix)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="subset of cold,warm,preload,memo")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/memo-replay"),
                    help="where programs, inputs and FIFOs live (default /var/tmp/memo-replay)")
    ap.add_argument("--swap-gb", type=int, default=4, help="swap file size for pressure mode (default 4)")
    ap.add_argument("--ballast-leave-gb", type=float, default=6.0,
                    help="ballast = MemAvailable minus this (default 6; 0 = no ballast)")
    ap.add_argument("--pressure-beyond-mb", type=int, default=256,
                    help="the hog asks for all free memory and this much more (default 256)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds a launch may take to be ready")
    ap.add_argument("--out", default="replay.json", help="file name under bench/results")
    ap.add_argument("--show-sequence", action="store_true", help="print mapping and sequence, then exit")
    args = ap.parse_args(argv)
    args.condition_list = tuple(c for c in args.conditions.split(",") if c)
    args.mode_list = tuple(m for m in args.modes.split(",") if m)
    bad = [c for c in args.condition_list if c not in CONDITIONS]
    bad += [m for m in args.mode_list if m not in MODES]
    if bad or not args.condition_list or not args.mode_list:
        ap.error(f"unknown or empty conditions/modes: {bad}")
    return args


def print_sequence(seq: Replay, learn: list[str], test: list[str], programs: dict[str, Program]) -> None:
    say(f"trace {seq.trace}, user {seq.user} ({seq.rows} rows; {len(seq.launches)} launches after mapping)")
    for app, prog in seq.mapping.items():
        say(f"  {seq.counts[app]:6d} x {app:45} -> {prog:9} ({programs[prog].shape})")
    say(f"  learn ({len(learn)}): {' '.join(learn)}")
    say(f"  test  ({len(test)}): {' '.join(test)}")


def save(results: dict[str, Any], out: Path, complete: bool) -> None:
    results["complete"] = complete
    if results["conditions"] and any(c in results["conditions"] for c in CONDITIONS):
        with contextlib.suppress(Exception):
            results["summary"] = summarize(results)
    out.write_text(json.dumps(results, indent=1, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seq = load_sequence(args.trace, args.user, PROGRAMS)
    programs = {p.name: p for p in PROGRAMS}
    learn = seq.launches[:args.learn]
    test = seq.launches[args.learn:args.learn + args.test]
    print_sequence(seq, learn, test, programs)
    if args.show_sequence:
        return 0
    if len(test) < args.test:
        say(f"warning: the trace gives only {len(test)} test launches after {len(learn)} learning ones")
    if os.geteuid() != 0:
        print("bench/replay.py needs root (eviction, BPF, swap, a dedicated user)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / args.out
    work = Work(args.workdir.resolve())
    installed = ensure_packages(args.condition_list)
    uid, gid, home = ensure_user(work)
    build_work(work, uid, gid)
    conf = preload_conf(work)
    results: dict[str, Any] = {
        "command": [sys.executable, *sys.argv], "options": {k: v for k, v in vars(args).items()},
        "host": os.uname().release, "cpus": os.cpu_count(), "mem_total_bytes": meminfo("MemTotal"),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3], "installed": installed,
        "trace": {"name": seq.trace, "user": seq.user, "rows": seq.rows, "mapping": seq.mapping,
                  "counts": seq.counts},
        "programs": [{"name": p.name, "match": p.match, "shape": p.shape, "argv": work.argv(p)}
                     for p in PROGRAMS if p.name in set(learn + test)],
        "learn_sequence": learn, "test_sequence": test, "modes": list(args.mode_list),
        "chains": list(CHAINS if args.chains == "mix" else ("direct",)),
        "preload_config": ({"values": conf, "text": conf_text(conf)} if "preload" in args.condition_list
                           else None),
        "replay_uid": uid, "conditions": {},
    }
    if "preload" in args.condition_list:
        say("preload configuration:\n  " + conf_text(conf).strip().replace("\n", "\n  "))
    tracer: PageTracer | None = None
    progress = Progress(sum(len(test) + (len(learn) if c in DAEMONS else 0) for c in args.condition_list))
    try:
        with contextlib.ExitStack() as stack:
            say("loading the bench's BPF program ...")
            tracer = PageTracer()
            drainer = Drainer()
            drainer.start()
            stack.callback(drainer.stop_evt.set)
            used = [programs[n] for n in dict.fromkeys(learn + test)]
            warm_up_programs(work, uid, gid, home, tracer, drainer, used, args.timeout)
            if "pressure" in args.mode_list:
                stack.enter_context(swapfile(f"{args.swap_gb}G", where=Path("/var/tmp")))
                results["ballast"] = stack.enter_context(ballast(int(args.ballast_leave_gb * 2**30)))
            evictor = Evictor(args.pressure_beyond_mb * MB, meminfo("SwapTotal"))
            ctx = Ctx(args, work, uid, gid, home, tracer, drainer, evictor, programs, learn, test,
                      tuple(results["chains"]), args.mode_list, progress)
            for cond in args.condition_list:
                progress.write(f"== {cond}")
                run_condition(cond, ctx, results["conditions"].setdefault(cond, {}))
                save(results, out_path, complete=False)
    except KeyboardInterrupt:
        progress.close()
        say("\ninterrupted: apps, daemons, swap and ballast are stopped; partial results saved")
        save(results, out_path, complete=False)
        return 130
    finally:
        progress.close()
        if tracer is not None:
            tracer.close()
        kill_user(uid)
    save(results, out_path, complete=True)
    print_table(results)
    plot(results, RESULTS / (Path(args.out).stem + ".png"))
    say(f"\nwrote {out_path} and {RESULTS / (Path(args.out).stem + '.png')}")
    return 0


def warm_up_programs(work: Work, uid: int, gid: int, home: Path, tracer: PageTracer, drainer: Drainer,
                     programs: list[Program], timeout_s: float) -> None:
    """Each program once before any condition: first-run effects (font caches, the browser profile, the
    compiler's output file) stay out of every measurement."""
    say("first run of each program (not measured) ...")
    launcher = Launcher(work, uid, gid, home, tracer, drainer)
    try:
        for p in programs:
            r, secs = launcher.launch(p, "direct", timeout_s)
            say(f"  {p.name:9} ready in {secs:.2f} s")
            launcher.stop(r)
    finally:
        launcher.close()


if __name__ == "__main__":
    sys.exit(main())
