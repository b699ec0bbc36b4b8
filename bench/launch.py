"""Launch benchmark: real programs started cold, after MEMO's prefetch of their profile, and warm.

Run as root: `.venv/bin/python bench/launch.py [--runs 3] [--only NAME ...]`. Prints a table and
writes bench/results/launch.json.

Per program:
1. the profile is learnt the way MEMO learns it: `memo-collector --stdout` records the page-cache
   records (type "pagecache") of a cold launch (drop_caches first), attributed to the launched process
   tree through the fork records, and merged into byte ranges like the inference service does;
2. a second recorded cold launch says which pages a launch really reads (the reference for "used");
3. timed runs, each repeated: cold (drop_caches), prefetched (drop_caches, then `memo-prefetcher
   --once --profile`, wait for its reads to land), warm (right after); each starts with the CPU
   caches scrubbed (256 MB streamed through them), so only the page cache differs.
Reported: cold, prefetched, warm (median seconds), the share of the cold-warm gap closed, and the
prefetched bytes the reference launch never read (waste). Programs missing from this machine are
installed with apt-get (chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inference.profiles import merge  # noqa: E402
from memo import config as memo_config  # noqa: E402
from memo.contract import AppProfile  # noqa: E402
from prefetcher import pagecache  # noqa: E402
from prefetcher.budget import Budget  # noqa: E402

VENV = REPO / ".venv" / "bin"
PY = str(VENV / "python")
RESULTS = REPO / "bench" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Program:
    name: str
    argv: list[str]
    apt: str = ""  # Debian package that provides it, installed when missing


PROGRAMS = [
    Program("python3 import numpy", [PY, "-c", "import numpy"]),
    Program("python3 import torch", [PY, "-c", "import torch"]),
    Program("bpftool prog help", ["bpftool", "prog", "help"], apt="bpftool"),
    Program("chromium --headless", ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                    "--dump-dom", "about:blank"], apt="chromium"),
]


def ensure_installed(p: Program) -> None:
    if shutil.which(p.argv[0]) or os.path.isabs(p.argv[0]):
        return
    print(f"installing {p.apt} for {p.name} ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", p.apt], check=True, env=env, stdout=subprocess.DEVNULL)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def wait_io_idle(timeout_s: float = 60.0) -> None:
    """Until no block device has reads in flight (the prefetch's readahead has landed)."""
    devs = [d for d in Path("/sys/block").iterdir() if (d / "inflight").exists()]
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        busy = any(int((d / "inflight").read_text().split()[0]) for d in devs)
        quiet = 0 if busy else quiet + 1
        time.sleep(0.02)


_SCRUB = np.ones(256 << 20 >> 3)  # 256 MB, more than any last-level cache


def scrub_cpu_caches() -> None:
    """Stream 256 MB through the CPU caches, so that every timed run starts from the same cache
    state: a warm run right after another would otherwise inherit that run's code and data in the
    caches, an advantage no page-cache prefetch can give (nor take away)."""
    _SCRUB.sum()


def timed(argv: list[str]) -> float:
    scrub_cpu_caches()
    t = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=300)
    return time.perf_counter() - t


@dataclass
class Recording:
    pages: set[tuple[str, int]] = field(default_factory=set)  # (path, page index)
    pathless_pages: int = 0
    pids: int = 0
    seconds: float = 0.0


def record(argv: list[str]) -> Recording:
    """Run argv cold under `memo-collector --stdout`; its process tree's page-cache records.

    Records the collector could not name (path "": mostly file-system metadata of the block device)
    are what the inference service leaves out of profiles too; they are counted (pathless_pages)."""
    out_file = RESULTS / "launch-collector.jsonl"
    env = {**os.environ, "MEMO_COLLECTOR__LAUNCH_WINDOW_S": "120"}
    with open(out_file, "w") as out:
        coll = subprocess.Popen([str(VENV / "memo-collector"), "--stdout"], stdout=out,
                                stderr=subprocess.PIPE, text=True, env=env)
        assert coll.stderr is not None
        deadline = time.monotonic() + 120
        for line in coll.stderr:
            if "ready" in line:
                break
            if time.monotonic() > deadline or coll.poll() is not None:
                raise RuntimeError(f"memo-collector did not start: {line}")
        drop_caches()
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait(timeout=300)
        seconds = time.perf_counter() - t
        time.sleep(1.0)
        coll.send_signal(signal.SIGINT)
        try:
            coll.wait(timeout=60)
        except subprocess.TimeoutExpired:
            coll.kill()
    events = [json.loads(line) for line in out_file.read_text().splitlines() if line.startswith("{")]
    events.sort(key=lambda e: e.get("ts_ns", 0))
    tree = {proc.pid}
    rec = Recording(seconds=seconds)
    for e in events:
        if e["type"] == "fork" and e["ppid"] in tree:
            tree.add(e["pid"])
        elif e["type"] == "pagecache" and e["pid"] in tree:
            if e["path"]:
                rec.pages.update((e["path"], e["index"] + i) for i in range(e["nr_pages"]))
            else:
                rec.pathless_pages += e["nr_pages"]
    rec.pids = len(tree)
    return rec


def profile_of(app: str, rec: Recording) -> AppProfile:
    """Merged byte ranges, as the inference service serves them (inference.profiles.merge)."""
    pages = [(path, 0, 0, idx, 1) for path, idx in sorted(rec.pages)]
    ranges = merge(pages)
    return AppProfile(app=app, launches=1, bytes=sum(r.length for r in ranges), ranges=ranges)


def bench(p: Program, runs: int, cap: int) -> dict:
    ensure_installed(p)
    timed(p.argv)  # first run ever (config files, caches the program writes) out of the measurement
    learn = record(p.argv)
    reference = record(p.argv)
    app = os.path.realpath(shutil.which(p.argv[0]) or p.argv[0])
    profile = profile_of(app, learn)
    prof_file = RESULTS / "launch-profile.json"
    prof_file.write_text(profile.model_dump_json())
    cold, pre, warm, waste, prefetched, prefetch_s = [], [], [], [], [], []
    for _ in range(runs):
        drop_caches()
        cold.append(timed(p.argv))
        drop_caches()
        plan = pagecache.prefetch_profile(profile, Budget(1 << 62), cap, dry_run=True)
        t = time.perf_counter()
        subprocess.run([str(VENV / "memo-prefetcher"), "--once", "--psi-max", "100", "--profile",
                        str(prof_file)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "MEMO_PREFETCHER__PER_APP_CAP_BYTES": str(cap)})
        wait_io_idle()
        prefetch_s.append(time.perf_counter() - t)
        pre.append(timed(p.argv))
        warm.append(timed(p.argv))
        done = {(f.path, off // PAGE + i) for f in plan.files for off, n in f.runs for i in range(n // PAGE)}
        prefetched.append(len(done) * PAGE)
        waste.append(len(done - reference.pages) / len(done) if done else 0.0)
    c, f, w = statistics.median(cold), statistics.median(pre), statistics.median(warm)
    return {
        "program": p.name, "argv": p.argv, "runs": runs,
        "cold_s": c, "prefetched_s": f, "warm_s": w,
        "gap_closed": (c - f) / (c - w) if c > w else 0.0,
        "prefetched_bytes": int(statistics.median(prefetched)),
        "never_used_share": statistics.median(waste),
        "profile_bytes": profile.bytes, "profile_files": len({r.path for r in profile.ranges}),
        "pathless_pages": learn.pathless_pages,
        "recorded_pids": learn.pids,
        "reference_bytes": len(reference.pages) * PAGE,
        "per_app_cap_bytes": cap, "capped": plan.truncated,
        "prefetch_s": statistics.median(prefetch_s),
        "samples": {"cold": cold, "prefetched": pre, "warm": warm},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=[], help="substrings of program names to run")
    ap.add_argument("--cap-mb", type=int, default=memo_config.load().prefetcher.per_app_cap_bytes >> 20,
                    help="per-app cap in MB (default: prefetcher.per_app_cap_bytes)")
    ap.add_argument("--out", default="launch.json", help="file name under bench/results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/launch.py needs root (drop_caches, eBPF collector)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in PROGRAMS:
        if args.only and not any(s in p.name for s in args.only):
            continue
        print(f"== {p.name}", flush=True)
        rows.append(bench(p, args.runs, args.cap_mb << 20))
    (RESULTS / args.out).write_text(json.dumps({"host": os.uname().release, "rows": rows}, indent=2))
    print(f"\n{'program':24} {'cold s':>8} {'prefetch s':>10} {'warm s':>8} {'gap closed':>10} "
          f"{'prefetched':>11} {'never used':>10}")
    for r in rows:
        print(f"{r['program']:24} {r['cold_s']:8.3f} {r['prefetched_s']:10.3f} {r['warm_s']:8.3f} "
              f"{r['gap_closed']:10.0%} {r['prefetched_bytes'] / 2**20:9.1f}MB {r['never_used_share']:10.0%}"
              f"{' (capped)' if r['capped'] else ''}")
    print(f"\nwrote {RESULTS / args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
