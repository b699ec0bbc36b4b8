"""Swap benchmark: touch time of a swapped-out process without MEMO, with MEMO's swap-in, and never swapped.

Run as root: `.venv/bin/python bench/swap.py [--mb 300] [--limit-mb 150] [--runs 3]`. Prints a table and
writes bench/results/swap.json. It makes its own swap file (fallocate + mkswap + swapon) and cgroup v1
memory cgroup and removes both at the end, also on failure.

A python3 process writes --mb MB of anonymous memory under a --limit-mb limit, so about half of it goes
to swap; then the limit is lifted (the user comes back, there is room again) and the process reads one
byte per page. Conditions: never swapped (same process, same memory, no limit); swapped, touched as
is; swapped, after `memo-prefetcher --once --app <python>` (process_madvise WILLNEED + fault-in);
swapped, after WILLNEED alone (the swap-in module with map_back off, to show what each step is worth).
Target: with MEMO within 1.2x of never swapped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prefetcher import swapin  # noqa: E402
from prefetcher.budget import Budget  # noqa: E402

RESULTS = REPO / "bench" / "results"
V1 = Path("/sys/fs/cgroup/memory")
PYTHON = f"/var/tmp/memo-bench-python-{os.getpid()}"
"""A private copy of python3: the swap-in acts on processes of this executable only, none of anyone else's."""
MB = 1 << 20

HOG = r"""
import sys, time
buf = None
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "alloc":
        n = int(arg[0]) << 20
        buf = bytearray(n)
        for i in range(0, n, 4096):
            buf[i] = (i >> 12) & 0xFF or 1
        print("ok", flush=True)
    elif cmd == "touch":
        t = time.perf_counter(); s = 0
        for i in range(0, len(buf), 4096):
            s += buf[i]
        print(f"{time.perf_counter() - t:.6f}", flush=True)
"""


@contextlib.contextmanager
def lab(size: str = "1G") -> Iterator[Path]:
    """A swap file and a v1 memory cgroup, removed afterwards whatever happens."""
    swap = Path(f"/var/tmp/memo-bench-swap-{os.getpid()}")
    shutil.copy2(os.path.realpath("/usr/bin/python3"), PYTHON)
    cg = V1 / f"memo-bench-swap-{os.getpid()}"
    try:
        subprocess.run(["fallocate", "-l", size, str(swap)], check=True)
        swap.chmod(0o600)
        subprocess.run(["mkswap", str(swap)], check=True, capture_output=True)
        subprocess.run(["swapon", str(swap)], check=True)
        cg.mkdir()
        yield cg
    finally:
        if cg.exists():
            for pid in (cg / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (V1 / "cgroup.procs").write_text(pid)
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        subprocess.run(["swapoff", str(swap)], capture_output=True)
        swap.unlink(missing_ok=True)
        Path(PYTHON).unlink(missing_ok=True)


class Hog:
    def __init__(self) -> None:
        self.p = subprocess.Popen([PYTHON, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)

    def cmd(self, line: str) -> str:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def touch(self) -> float:
        return float(self.cmd("touch"))


def limit(cg: Path, nbytes: int | None) -> None:
    (cg / "memory.limit_in_bytes").write_text(str(nbytes if nbytes else -1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--limit-mb", type=int, default=150)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/swap.py needs root", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    app = os.path.realpath(PYTHON)
    times: dict[str, list[float]] = {"never swapped": [], "swapped, no MEMO": [],
                                     "swapped, MEMO swap-in": [], "swapped, WILLNEED only": []}
    swapped_mb: list[float] = []
    prefetcher = str(REPO / ".venv" / "bin" / "memo-prefetcher")
    with lab() as cg:
        for _ in range(args.runs):
            # never swapped: its own process, same size, no limit, same pause before the touch
            fresh = Hog()
            try:
                fresh.cmd(f"alloc {args.mb}")
                time.sleep(0.5)
                times["never swapped"].append(fresh.touch())
            finally:
                fresh.p.kill()
                fresh.p.wait()
            for cond in ("swapped, no MEMO", "swapped, MEMO swap-in", "swapped, WILLNEED only"):
                h = Hog()
                try:
                    (cg / "cgroup.procs").write_text(str(h.p.pid))
                    limit(cg, args.limit_mb * MB)
                    h.cmd(f"alloc {args.mb}")
                    limit(cg, None)
                    swapped_mb.append(swapin.swap_bytes(h.p.pid) / MB)
                    if cond == "swapped, MEMO swap-in":
                        subprocess.run([prefetcher, "--once", "--psi-max", "100", "--app", app],
                                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    elif cond == "swapped, WILLNEED only":
                        swapin.swap_in(app, Budget(1 << 62), map_back=False)
                    time.sleep(0.5)
                    times[cond].append(h.touch())
                finally:
                    h.p.kill()
                    h.p.wait()
    base = statistics.median(times["never swapped"])
    rows = [{"condition": k, "touch_s": statistics.median(v),
             "vs_never_swapped": statistics.median(v) / base, "samples": v} for k, v in times.items()]
    out = {"mb": args.mb, "limit_mb": args.limit_mb, "swapped_mb_median": statistics.median(swapped_mb),
           "rows": rows}
    (RESULTS / "swap.json").write_text(json.dumps(out, indent=2))
    print(f"{args.mb} MB process under a {args.limit_mb} MB cgroup v1 limit, "
          f"{out['swapped_mb_median']:.0f} MB in swap (median of {args.runs} runs)\n")
    print(f"{'condition':26} {'touch ms':>9} {'x never swapped':>16}")
    for r in rows:
        print(f"{r['condition']:26} {r['touch_s'] * 1000:9.1f} {r['vs_never_swapped']:16.2f}")
    print(f"\nwrote {RESULTS / 'swap.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
