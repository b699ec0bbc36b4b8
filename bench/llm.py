"""bench/llm.py: the LLM member's cost on CPU, and that the service's predictions do not pay for it.

1. Scoring latency: the vLLM engine in this process (the converted SmolLM2-135M), one call per launch
   of a real trace (android6.csv: 24 recent launches, 20 candidates), p50/p99; and the RSS of the
   engine's processes (this one plus its children).
2. GET /v1/predictions p99 at a fixed rate (bench/api.py's load generator) with the LLM member on
   (default models, backend auto) and off, while launches keep arriving so that LLM calls run meanwhile.

Needs vLLM (make setup); prints a table, writes bench/results/llm.json.

examples:
  .venv/bin/python bench/llm.py
  .venv/bin/python bench/llm.py --calls 100 --rate 200 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from memo.client import unix_http

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results" / "llm.json"
TRACE = ROOT.parent / "shared" / "data" / "android6.csv"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3, 2)


def tree_rss_mb(pid: int) -> float:
    import psutil

    p = psutil.Process(pid)
    return round(sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]) / 2**20, 1)


def bench_scoring(calls: int) -> dict:
    from inference.evaluate import load_trace
    from inference.llm import prompt as llm_prompt
    from inference.llm import runtime
    from inference.predictors import Launch
    from memo.config import LLMConfig

    rss0 = tree_rss_mb(os.getpid())
    t0 = time.perf_counter()
    scorer = runtime.start(LLMConfig(backend="engine", timeout_s=60), synchronous=True, wait=True)
    if scorer.state != "ready":
        raise SystemExit(f"the vLLM engine did not start ({scorer.state}); run make setup")
    start_s = time.perf_counter() - t0
    trace = load_trace(TRACE) if TRACE.is_file() else {"u": [(f"app{i % 7}", None) for i in range(400)]}
    seq = [Launch(a, t) for a, t in max(trace.values(), key=len)]
    lat: list[float] = []
    for i in range(50, 50 + calls):
        hist = seq[max(0, i - llm_prompt.HISTORY):i]
        cands = list(dict.fromkeys(x.app for x in reversed(seq[max(0, i - 200):i])))[:20]
        p = llm_prompt.build(hist, cands)
        t1 = time.perf_counter()
        scorer.score(p.text)
        lat.append(time.perf_counter() - t1)
    rss = tree_rss_mb(os.getpid())
    runtime.stop()
    return {"calls": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "mean_ms": round(statistics.mean(lat) * 1e3, 2), "engine_start_and_warmup_s": round(start_s, 1),
            "rss_mb_engine_processes": round(rss - rss0, 1), "rss_mb_total": rss}


def _feed(sock: Path, stop: threading.Event, start_i: int) -> int:
    """A launch every 0.5 s for user 1000 while the load runs: each one triggers an LLM call."""
    import api

    i = start_i
    with unix_http(sock, 30) as c:
        while not stop.wait(0.5):
            pid = 90_000 + i
            app = api.APPS[i % 5]
            ev = [{"type": "fork", "ts_ns": 10**9 + 3 * i, "pid": pid, "ppid": 10, "uid": 1000,
                   "comm": "bash"},
                  {"type": "exec", "ts_ns": 10**9 + 3 * i + 1, "pid": pid, "ppid": 10, "uid": 1000,
                   "cgroup_id": 1, "comm": "x", "filename": app, "exe": app, "argv": [app],
                   "wall_ts": 1.8e9 + 30 * i},
                  {"type": "exit", "ts_ns": 10**9 + 3 * i + 2, "pid": pid, "exit_code": 0, "minflt": 0,
                   "majflt": 0, "swapin": 0}]
            c.post("/v1/events", content=json.dumps({"source_id": "feed", "seq": i, "events": ev}))
            i += 1
    return i - start_i


def bench_service(llm: bool, rate: float, duration: float, launches: int, settle: float) -> dict:
    import api

    with tempfile.TemporaryDirectory(prefix="memo-bench-llm-") as d:
        tmp = Path(d)
        env = {**os.environ, "MEMO_PATHS__RUN_DIR": str(tmp / "run"),
               "MEMO_PATHS__DATA_DIR": str(tmp / "data"),
               "MEMO_INFERENCE__PORT": "0", "MEMO_LOG_LEVEL": "INFO",
               "MEMO_INFERENCE__TCP_USER_DATA": "1",  # this private instance: bench/api.py's TCP load
               "MEMO_INFERENCE__MODELS": json.dumps(["mfu", "mru", "markov", "ppm", "lstm", "llm"]),
               "MEMO_LLM__BACKEND": "engine" if llm else "off"}
        log_path = tmp / "inference.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - the service writes it until it stops
        proc = subprocess.Popen([str(Path(sys.executable).parent / "memo-inference")], env=env,
                                stdout=log_file, stderr=log_file)
        try:
            port_file = tmp / "run" / "inference.port"
            deadline = time.monotonic() + 120
            while not port_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("memo-inference did not start")
                time.sleep(0.1)
            sock, port = tmp / "run" / "inference.sock", int(port_file.read_text())
            api.seed_launches(sock, launches)
            llm_active_s = None
            if llm:  # until the engine is up and the LLM's score shows in the user's explanation
                t0 = time.monotonic()
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                    while time.monotonic() - t0 < 300:
                        time.sleep(3.0)  # the call waits 2 s of quiet after a launch, lands, is re-ranked
                        top = c.get("/v1/predictions", params={"uid": 1000, "k": 1}).json()
                        app = top["predictions"][0]["app"] if top.get("predictions") else api.APPS[0]
                        r = c.get("/v1/explain", params={"uid": 1000, "app": app})
                        if r.status_code != 200:
                            raise SystemExit(f"GET /v1/explain answered {r.status_code}: {r.text[:300]}")
                        ex = r.json()
                        if any(m["name"] == "llm" and m["score"] > 0 for m in ex["models"]):
                            llm_active_s = round(time.monotonic() - t0, 1)
                            break
                        stop = threading.Event()
                        threading.Timer(1.0, stop.set).start()
                        _feed(sock, stop, int(time.monotonic() * 10) % 10**6)
                if llm_active_s is None:
                    tail = log_path.read_text(errors="replace").splitlines()[-15:]
                    raise SystemExit("the LLM member never scored in the service; its log ends:\n"
                                     + "\n".join(tail))
            time.sleep(settle)  # the LSTM's background training of the seed launches holds the GIL meanwhile
            rss = tree_rss_mb(proc.pid)
            stop = threading.Event()
            fed: list[int] = []
            feeder = threading.Thread(target=lambda: fed.append(_feed(sock, stop, 500_000)))
            feeder.start()
            preds = api.bench_predictions(port, rate, duration)
            stop.set()
            feeder.join()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log_file.close()
    return {"llm": llm, **preds, "launches_during_load": fed[0] if fed else 0,
            "service_rss_mb": rss, "llm_active_after_s": llm_active_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="LLM scoring calls timed")
    ap.add_argument("--rate", type=float, default=500.0, help="GET /v1/predictions per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of prediction load per run")
    ap.add_argument("--launches", type=int, default=300, help="seed launches before the load")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds between seeding and the load")
    args = ap.parse_args()
    scoring = bench_scoring(args.calls)
    off = bench_service(False, args.rate, args.duration, args.launches, args.settle)
    on = bench_service(True, args.rate, args.duration, args.launches, args.settle)
    result = {"bench": "llm", "host": platform.node(), "cpus": os.cpu_count(),
              "when": datetime.now().isoformat(timespec="seconds"), "scoring_engine_cpu": scoring,
              "predictions_llm_off": off, "predictions_llm_on": on,
              "command": "python bench/llm.py " + " ".join(sys.argv[1:])}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'measure':34} {'result':34} detail")
    lat = f"p50 {scoring['p50_ms']} ms / p99 {scoring['p99_ms']} ms"
    print(f"{'LLM scoring (vLLM engine, CPU)':34} {lat:34} "
          f"{scoring['calls']} calls, 24 launches + 20 candidates; start+warm-up "
          f"{scoring['engine_start_and_warmup_s']} s")
    print(f"{'engine memory (RSS, all processes)':34} {str(scoring['rss_mb_engine_processes']) + ' MB':34} "
          f"process tree total {scoring['rss_mb_total']} MB")
    for r in (off, on):
        name = "GET /v1/predictions, LLM " + ("on" if r["llm"] else "off")
        lat = f"p50 {r['p50_ms']} ms / p99 {r['p99_ms']} ms"
        print(f"{name:34} {lat:34} "
              f"{r['requests']} req at {r['achieved_rate']}/s, {r['errors']} errors, max {r['max_ms']} ms, "
              f"{r['launches_during_load']} launches meanwhile, service RSS {r['service_rss_mb']} MB")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0 if on["errors"] == 0 and off["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
