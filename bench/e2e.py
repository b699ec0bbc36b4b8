"""Benchmark: exec -> updated prediction visible over HTTP, through all three real services.

MEMO is started as `make up` starts it (`memo up`: supervisor, inference, collector, prefetcher) on a
temp run/data dir. A user (its own uid) alternately launches two private copies of /bin/true; after
each exec the client polls GET /v1/predictions over the read-only TCP listener until the answer names
that launch as last_app. Latency = first such answer - the moment before the exec. It covers the
eBPF record, the collector's batching (collector.flush_interval_s), the POST over the Unix socket,
ingest, segmentation, the models' update and the HTTP read. Measured for the default configuration
and with a shorter collector flush interval. Target: p50 and p99 < 50 ms.

Prints a table and writes bench/results/e2e.json.

examples:
  sudo .venv/bin/python bench/e2e.py
  sudo .venv/bin/python bench/e2e.py --launches 100 --flush 0.2 0.02 0.005
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memo.client import unix_http

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "e2e.json"
MEMO = str(Path(sys.executable).parent / "memo")
UID = 4343
TARGET_MS = 50.0


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def run_config(flush_s: float, launches: int, models: list[str] | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="memo-bench-e2e-"))
    lab = Path(tempfile.mkdtemp(prefix="memo-bench-lab-", dir="/var/tmp"))
    lab.chmod(0o755)
    apps = []
    for name in ("x", "y"):
        exe = lab / f"memo-bench-{name}"
        shutil.copyfile("/bin/true", exe)
        exe.chmod(0o755)
        apps.append(str(exe))
    env = {k: v for k, v in os.environ.items() if k != "MEMO_CONFIG"}
    env.update({"MEMO_PATHS__RUN_DIR": str(root / "run"), "MEMO_PATHS__DATA_DIR": str(root / "data"),
                "MEMO_INFERENCE__PORT": "0",
                "MEMO_COLLECTOR__BPF_PIN_DIR": f"/sys/fs/bpf/memo-bench-{os.getpid()}",
                "MEMO_COLLECTOR__FLUSH_INTERVAL_S": str(flush_s), "MEMO_LOG_LEVEL": "WARNING"})
    if models:
        env["MEMO_INFERENCE__MODELS"] = json.dumps(models)
    lat: list[float] = []
    try:
        up = subprocess.run([MEMO, "up", "--timeout", "240"], env=env, capture_output=True, text=True)
        if up.returncode != 0:
            raise SystemExit(f"memo up failed:\n{up.stdout}{up.stderr}")
        # The Unix socket, as the prefetcher asks: TCP serves no user's launches (inference.tcp_user_data).
        with unix_http(root / "run" / "inference.sock", 5) as http:
            models_used = http.get("/healthz").json()["detail"].get("models", "")
            for i in range(launches + 4):  # the first 4 warm up the user's model
                app = apps[i % 2]
                t0 = time.perf_counter()
                subprocess.run([app], user=UID, group=UID, extra_groups=[], check=True)
                while True:
                    p = http.get("/v1/predictions", params={"uid": UID}).json()
                    if p.get("last_app") == app:
                        break
                    if time.perf_counter() - t0 > 10:
                        raise SystemExit(f"launch {i} of {app} not visible after 10 s")
                    time.sleep(0.001)
                if i >= 4:
                    lat.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.05)
    finally:
        subprocess.run([MEMO, "down"], env=env, capture_output=True, text=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(lab, ignore_errors=True)
    return {"flush_interval_s": flush_s, "models": models_used, "launches": len(lat),
            "p50_ms": round(statistics.median(lat), 1), "p90_ms": round(_pct(lat, 90), 1),
            "p99_ms": round(_pct(lat, 99), 1), "max_ms": round(max(lat), 1),
            "mean_ms": round(statistics.fmean(lat), 1), "min_ms": round(min(lat), 1),
            "under_target": sum(x < TARGET_MS for x in lat) / len(lat)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="\n".join(__doc__.split("\n")[-4:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", type=int, default=50)
    ap.add_argument("--flush", type=float, nargs="+", default=[0.02],
                    help="collector.flush_interval_s values to measure (default: the config's)")
    ap.add_argument("--models", default="", help="comma-separated inference.models (default: the config's)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/e2e.py needs root (eBPF, a second uid)", file=sys.stderr)
        return 2
    models = [m for m in args.models.split(",") if m] or None
    rows = [run_config(f, args.launches, models) for f in args.flush]
    cols = ("flush_interval_s", "launches", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "under_target")
    print(f"exec -> updated prediction visible over HTTP (target < {TARGET_MS:.0f} ms); "
          f"models: {rows[0]['models']}")
    print("  ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>16}" if c != "under_target" else f"{r[c]:>16.0%}" for c in cols))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "e2e exec -> prediction latency", "host": platform.node(), "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(), "target_ms": TARGET_MS, "results": rows,
        "command": "sudo .venv/bin/python bench/e2e.py " + " ".join(sys.argv[1:])}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
