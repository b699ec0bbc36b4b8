"""bench/api.py: the inference service's API under load.

1. Event ingest over the Unix socket: pre-built batches (collector-sized, a realistic mix: mostly
   page-cache records, plus fork/exec/exit of short processes) POSTed back to back; events/s.
2. GET /v1/predictions over TCP at a fixed rate (default 500 req/s) from a load generator in a separate
   process; latency measured from each request's *scheduled* send time (no coordinated omission).
   The same load against a floor in the same run: a bare uvicorn app that answers MEMO's own response
   body, so a slow machine (a p99 of tens of ms there too) is told apart from a slow service.

Starts its own `memo-inference` on a temp dir. Prints a table; writes bench/results/api.json.

examples:
  .venv/bin/python bench/api.py
  .venv/bin/python bench/api.py --rate 1000 --duration 20 --batches 100
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memo.client import unix_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "api.json"
APPS = [f"/usr/bin/app{i}" for i in range(40)]


def start_service(tmp: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    env = {**os.environ, "MEMO_PATHS__RUN_DIR": str(tmp / "run"), "MEMO_PATHS__DATA_DIR": str(tmp / "data"),
           "MEMO_INFERENCE__PORT": "0", "MEMO_LOG_LEVEL": "WARNING",
           # this private instance serves predictions on TCP too, for the load generator's plain HTTP
           "MEMO_INFERENCE__TCP_USER_DATA": "1",
           # the service alone; bench/llm.py measures it with the LLM on
           "MEMO_LLM__BACKEND": os.environ.get("MEMO_LLM__BACKEND", "off")}
    exe = Path(sys.executable).parent / "memo-inference"
    proc = subprocess.Popen([str(exe)], env=env, stdout=subprocess.DEVNULL)
    port_file = tmp / "run" / "inference.port"
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("memo-inference did not start")
        time.sleep(0.05)
    return proc, tmp / "run" / "inference.sock", int(port_file.read_text())


def make_batches(n: int, size: int, seed: int = 1) -> list[bytes]:
    """Collector-like batches: per 1,000 events ~2 short processes (fork, exec, exit), the rest page-cache."""
    rng = random.Random(seed)
    ts = 10**12
    pid = 50_000
    bodies = []
    for seq in range(n):
        events: list[dict] = []
        while len(events) < size:
            ts += 1000
            if rng.random() < 0.002:
                pid += 1
                app = rng.choice(APPS)
                events += [
                    {"type": "fork", "ts_ns": ts, "pid": pid, "ppid": 1, "uid": 1000, "comm": "bash"},
                    {"type": "exec", "ts_ns": ts + 1, "pid": pid, "ppid": 1, "uid": 1000, "cgroup_id": 1,
                     "comm": app[-15:], "filename": app, "exe": app, "argv": [app, "--flag"],
                     "cgroup_path": "/user.slice", "wall_ts": 1.7e9 + ts / 1e9},
                    {"type": "exit", "ts_ns": ts + 2, "pid": pid, "exit_code": 0, "minflt": 100, "majflt": 1,
                     "swapin": 0}]
            else:
                events.append({"type": "pagecache", "ts_ns": ts, "pid": pid, "dev": 2049,
                               "ino": rng.randrange(1, 5000), "index": rng.randrange(0, 10_000),
                               "nr_pages": rng.choice([1, 1, 4, 16]), "path": f"/usr/lib/lib{pid % 97}.so"})
        bodies.append(json.dumps({"source_id": "bench", "seq": seq, "events": events[:size]}).encode())
    return bodies


def bench_ingest(sock: Path, bodies: list[bytes]) -> dict:
    with unix_http(sock, 60) as c:
        c.post("/v1/events", content=bodies[0]).raise_for_status()  # warm-up (not counted)
        n_events = 0
        per_batch = []
        t0 = time.perf_counter()
        for body in bodies[1:]:
            t = time.perf_counter()
            r = c.post("/v1/events", content=body)
            r.raise_for_status()
            per_batch.append(time.perf_counter() - t)
            n_events += r.json()["accepted"]
        elapsed = time.perf_counter() - t0
    return {"events": n_events, "batches": len(bodies) - 1, "seconds": round(elapsed, 3),
            "events_per_s": round(n_events / elapsed),
            "batch_ms_p50": round(statistics.median(per_batch) * 1e3, 2),
            "batch_ms_p99": round(sorted(per_batch)[int(0.99 * (len(per_batch) - 1))] * 1e3, 2)}


def seed_launches(sock: Path, n: int) -> None:
    rng = random.Random(2)
    events: list[dict] = [{"type": "exec", "ts_ns": 1, "pid": 10, "ppid": 1, "uid": 1000, "cgroup_id": 1,
                           "comm": "bash", "filename": "/usr/bin/bash", "exe": "/usr/bin/bash",
                           "argv": ["-bash"]}]
    seqs = [APPS[i % 7] if rng.random() < 0.7 else rng.choice(APPS) for i in range(n)]
    for i, app in enumerate(seqs):
        pid = 100 + i
        events += [{"type": "fork", "ts_ns": 10 + 3 * i, "pid": pid, "ppid": 10, "uid": 1000, "comm": "bash"},
                   {"type": "exec", "ts_ns": 11 + 3 * i, "pid": pid, "ppid": 10, "uid": 1000, "cgroup_id": 1,
                    "comm": "x", "filename": app, "exe": app, "argv": [app], "wall_ts": 1.7e9 + 30 * i},
                   {"type": "exit", "ts_ns": 12 + 3 * i, "pid": pid, "exit_code": 0, "minflt": 0, "majflt": 0,
                    "swapin": 0}]
    with unix_http(sock, 60) as c:
        body = json.dumps({"source_id": "seed", "seq": 0, "events": events})
        c.post("/v1/events", content=body).raise_for_status()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            users = {u["uid"]: u["launches"] for u in c.get("/v1/users").json()}
            if users.get(1000, 0) >= n:
                return
            time.sleep(0.1)
    raise SystemExit("the models did not learn the seed launches in time")


def wait_learnt(sock: Path, timeout: float = 120.0) -> None:
    """Until the models have learnt every launch ingest produced (predictions are then steady-state)."""
    with unix_http(sock, 60) as c:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            launches = c.get("/healthz").json()["detail"]["launches"]
            learnt = sum(u["launches"] for u in c.get("/v1/users").json())
            if learnt >= launches:
                return
            time.sleep(0.2)


def _load(port: int, rate: float, duration: float, out: mp.Queue) -> None:
    """Open-loop GETs at ``rate``/s over one keep-alive connection; latency from the scheduled time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    uids = [1000, 1000, 1000, 2000]  # mostly a known user, some cold-start
    lat: list[float] = []
    errors = 0
    n = int(rate * duration)
    start = time.perf_counter() + 0.2
    for i in range(n):
        due = start + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        conn.request("GET", f"/v1/predictions?uid={uids[i % len(uids)]}&k=5")
        resp = conn.getresponse()
        resp.read()
        lat.append(time.perf_counter() - due)
        errors += resp.status != 200
    out.put((lat, errors, time.perf_counter() - start))


def _serve_floor(body: bytes, port_q: mp.Queue) -> None:
    """The floor: uvicorn serving a fixed body on a socket bound as inference/server.py binds its own."""
    import asyncio

    import uvicorn

    from inference.server import bind_tcp

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    sock = bind_tcp("127.0.0.1", 0)
    port_q.put(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    asyncio.run(server.serve(sockets=[sock]))


def bench_floor(port: int, rate: float, duration: float) -> dict:
    """bench_predictions against the floor app, answering what MEMO answered for the first request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/predictions?uid=1000&k=5")
    body = conn.getresponse().read()
    conn.close()
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    server = ctx.Process(target=_serve_floor, args=(body, q), daemon=True)
    server.start()
    try:
        floor_port = q.get(timeout=60)
        time.sleep(1.0)  # past its startup
        return bench_predictions(floor_port, rate, duration)
    finally:
        server.terminate()
        server.join(timeout=10)


def bench_predictions(port: int, rate: float, duration: float) -> dict:
    q: mp.Queue = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_load, args=(port, rate, duration, q))
    p.start()
    lat, errors, elapsed = q.get(timeout=duration + 60)
    p.join()
    lat.sort()

    def pct(x: float) -> float:
        return round(lat[min(len(lat) - 1, int(x * len(lat)))] * 1e3, 3)

    return {"rate_target": rate, "requests": len(lat), "achieved_rate": round(len(lat) / elapsed, 1),
            "errors": errors, "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1e3, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=500.0, help="GET /v1/predictions per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of prediction load")
    ap.add_argument("--batches", type=int, default=61, help="ingest batches (first is warm-up)")
    ap.add_argument("--batch-size", type=int, default=5000, help="events per batch")
    ap.add_argument("--launches", type=int, default=500, help="seed launches for the predictions user")
    args = ap.parse_args()
    bodies = make_batches(args.batches, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="memo-bench-api-") as d:
        proc, sock, port = start_service(Path(d))
        try:
            seed_launches(sock, args.launches)
            ingest = bench_ingest(sock, bodies)
            wait_learnt(sock)
            preds = bench_predictions(port, args.rate, args.duration)
            floor = bench_floor(port, args.rate, args.duration)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    result = {"bench": "api", "host": platform.node(), "cpus": os.cpu_count(), "ingest_unix_socket": ingest,
              "predictions_tcp": preds, "predictions_floor_bare_uvicorn": floor,
              "targets": {"ingest_events_per_s": 50_000, "predictions_p99_ms": 5.0},
              "command": "python bench/api.py " + " ".join(sys.argv[1:])}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    rows = [("ingest (unix socket)", f"{ingest['events_per_s']:,} events/s",
             f"{ingest['events']:,} events in {ingest['batches']} batches of {args.batch_size}; "
             f"batch p50 {ingest['batch_ms_p50']} ms, p99 {ingest['batch_ms_p99']} ms", ">= 50,000/s"),
            ("GET /v1/predictions (tcp)", f"p50 {preds['p50_ms']} ms / p99 {preds['p99_ms']} ms",
             f"{preds['requests']} requests at {preds['achieved_rate']}/s, {preds['errors']} errors, "
             f"max {preds['max_ms']} ms", "p99 < 5 ms"),
            ("  floor: bare uvicorn", f"p50 {floor['p50_ms']} ms / p99 {floor['p99_ms']} ms",
             f"the same load and body on this machine, max {floor['max_ms']} ms", "")]
    print(f"{'measure':28} {'result':32} {'target':12} detail")
    for name, res, detail, target in rows:
        print(f"{name:28} {res:32} {target:12} {detail}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    ok = ingest["events_per_s"] >= 50_000 and preds["p99_ms"] < 5.0 and preds["errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
