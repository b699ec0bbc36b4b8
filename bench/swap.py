"""Swap benchmark: touch time of a swapped-out process without MEMO, with MEMO's swap-in, and never swapped.

Run as root: `.venv/bin/python bench/swap.py [--mb 300] [--limit-mb 150] [--runs 3]`. Prints a table and
writes bench/results/swap.json. It makes its own swap file (fallocate + mkswap + swapon) and cgroup v1
memory cgroup and removes both at the end, also on failure.

A python3 process writes --mb MB of anonymous memory under a --limit-mb limit, so about half of it goes
to swap; then the limit is lifted (the user comes back, there is room again) and the process reads one
byte per page. Conditions: never swapped (same process, same memory, no limit); swapped, touched as
is; swapped, after `memo-prefetcher --once --app <python>` (process_madvise WILLNEED, fault-in, huge-page
collapse of full extents); and, to show what each step is worth, swapped after WILLNEED + fault-in
without the collapse, and after WILLNEED alone.
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
from tests import lab  # noqa: E402  (the kernel lab the tests use: swap file, cgroup, hog)

RESULTS = REPO / "bench" / "results"
PYTHON = f"/var/tmp/memo-bench-python-{os.getpid()}"
"""A private copy of python3: the swap-in acts on processes of this executable only, none of anyone else's."""
MB = 1 << 20

@contextlib.contextmanager
def private_python() -> Iterator[str]:
    """A private copy of python3: the swap-in acts on processes of this executable only."""
    shutil.copy2(lab.exe_python(), PYTHON)
    try:
        yield PYTHON
    finally:
        Path(PYTHON).unlink(missing_ok=True)


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
                                     "swapped, MEMO swap-in": [], "swapped, no collapse": [],
                                     "swapped, WILLNEED only": []}
    swapped_mb: list[float] = []
    prefetcher = str(REPO / ".venv" / "bin" / "memo-prefetcher")
    with private_python(), lab.swapfile(), lab.memory_cgroup("bench-swap") as cg:
        for _ in range(args.runs):
            # never swapped: its own process, same size, no limit, same pause before the touch
            fresh = lab.Hog(PYTHON)
            try:
                fresh.alloc(args.mb)
                time.sleep(0.5)
                times["never swapped"].append(fresh.touch())
            finally:
                fresh.close()
            for cond in ("swapped, no MEMO", "swapped, MEMO swap-in", "swapped, no collapse",
                         "swapped, WILLNEED only"):
                h = lab.Hog(PYTHON)
                try:
                    (cg / "cgroup.procs").write_text(str(h.pid))
                    lab.set_limit(cg, args.limit_mb * MB)
                    h.alloc(args.mb)
                    lab.set_limit(cg, None)
                    swapped_mb.append(swapin.swap_bytes(h.pid) / MB)
                    if cond == "swapped, MEMO swap-in":
                        subprocess.run([prefetcher, "--once", "--psi-max", "100", "--app", app],
                                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    elif cond == "swapped, no collapse":
                        swapin.swap_in(app, Budget(1 << 62), collapse=False)
                    elif cond == "swapped, WILLNEED only":
                        swapin.swap_in(app, Budget(1 << 62), map_back=False)
                    time.sleep(0.5)
                    times[cond].append(h.touch())
                finally:
                    h.close()
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
