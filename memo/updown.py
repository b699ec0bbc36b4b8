"""`memo up` and `memo down`: start MEMO's three services under memo.supervisor, detached, and stop them.

`memo up` is idempotent (a supervisor already holding the run directory's lock means MEMO is up) and
returns once all three services are ready, printing where the API is. `memo down` sends the supervisor
SIGTERM and waits until it has stopped every service; services left by a supervisor that was killed
are stopped from their pid files.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from memo import config as memo_config
from memo.runtime import SERVICES, SUPERVISOR, RunDir, is_alive, lock_holder, read_pid

UP_EXAMPLES = """\
examples:
  sudo memo up                     # start inference, collector and prefetcher; return when ready
  sudo make up                     # the same, after installing whatever is missing
  sudo memo up --foreground        # supervise in this terminal (Ctrl-C stops all three)
  MEMO_PATHS__RUN_DIR=/tmp/r MEMO_PATHS__DATA_DIR=/tmp/d MEMO_INFERENCE__PORT=0 sudo -E memo up
"""
DOWN_EXAMPLES = """\
examples:
  sudo memo down                   # stop all three (the prefetcher restores what it changed)
  sudo make down                   # the same
"""


def _run_dir() -> RunDir:
    return RunDir(memo_config.load().paths.run_dir)


def endpoints(run: RunDir) -> str:
    port = run.port()
    tcp = f"http://127.0.0.1:{port}" if port else "(TCP port not written yet)"
    user = run.user_socket
    return (f"  your predictions: unix:{user}   e.g. curl --unix-socket {user} http://x/v1/predictions\n"
            f"  API (full):       unix:{run.socket}   root and group memo (ingest, every user's data)\n"
            f"  API (TCP):        {tcp}   health, metrics, docs: e.g. curl {tcp}/healthz\n"
            f"  logs:             {run.logs}/   pid files: {run.pids}/\n"
            f"  status:           memo status      stop: make down (or memo down)")


def _uid() -> int:
    return int(os.environ.get("SUDO_UID", os.getuid()))


def wait_up(run: RunDir, supervisor: subprocess.Popen[bytes] | None, timeout_s: float,
            say: Callable[[str], None]) -> bool:
    """Until the supervisor reports all three running; False on timeout or if it exits."""
    deadline = time.monotonic() + timeout_s
    told: set[str] = set()
    while time.monotonic() < deadline:
        state = run.state() or {}
        if supervisor is not None and state.get("pid") != supervisor.pid:
            state = {}  # a previous supervisor's file (it was killed): its "running" proves nothing
        services = state.get("services", {})
        for name in SERVICES:
            s = services.get(name, {})
            if s.get("state") == "running" and name not in told:
                told.add(name)
                say(f"  {name:<11} ready (pid {s.get('pid')})")
        if len(told) == len(SERVICES):
            return True
        if supervisor is not None and supervisor.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def cmd_up(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("memo up: the collector and prefetcher need root: run `sudo make up` (or `sudo memo up`)",
              file=sys.stderr)
        return 2
    run = _run_dir()
    holder = lock_holder(run)
    if holder:
        print(f"MEMO is already running (supervisor pid {holder}); nothing started.")
        print(endpoints(run))
        return 0
    run.make()
    strays = [n for n in SERVICES if is_alive(read_pid(run.pid_file(n)), n)]
    if strays:  # a supervisor that was killed left them: they would hold the pins, the socket, the DB
        print(f"stopping {', '.join(strays)} left by a previous run ...", flush=True)
        stop(run, say=lambda s: print(f"  {s}", flush=True))
    run.state_file.unlink(missing_ok=True)
    if args.foreground:
        from memo.supervisor import main as supervise

        return supervise()
    log = open(run.log_file(SUPERVISOR), "ab")  # noqa: SIM115 - handed to the child
    sup = subprocess.Popen([sys.executable, "-m", "memo.supervisor"], stdin=subprocess.DEVNULL, stdout=log,
                           stderr=log, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    print(f"starting MEMO (supervisor pid {sup.pid}, run directory {run.root}) ...", flush=True)
    if wait_up(run, sup, args.timeout, lambda s: print(s, flush=True)):
        print("MEMO is up.")
        print(endpoints(run))
        return 0
    if sup.poll() == 3:  # lost the race to a supervisor started at the same moment
        print("MEMO is already running (started by another `memo up`).")
        return 0
    tail = run.log_file(SUPERVISOR).read_text(errors="replace").splitlines()[-15:]
    lines = "\n  ".join(tail)
    print(f"memo up: MEMO did not come up within {args.timeout:.0f} s. Supervisor log:\n  {lines}\n"
          f"Service logs: {run.logs}/ ; stop what started with `make down`.", file=sys.stderr)
    return 1


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if is_alive(p)]
        time.sleep(0.1)
    return pids


def stop(run: RunDir, timeout_s: float = 90.0, say: Callable[[str], None] = print) -> bool:
    """Stop the supervisor (it stops the services), then any service a dead supervisor left."""
    holder = lock_holder(run)
    sup = holder if holder and holder > 0 and is_alive(holder, SUPERVISOR) else None
    if sup:
        say(f"stopping MEMO (supervisor pid {sup}) ...")
        os.kill(sup, signal.SIGTERM)
        if _wait_gone([sup], timeout_s):
            say(f"memo down: supervisor {sup} still runs after {timeout_s:.0f} s: killing it")
            os.kill(sup, signal.SIGKILL)
            _wait_gone([sup], 5)
    left = []
    for name in reversed(SERVICES):
        pid = read_pid(run.pid_file(name))
        if is_alive(pid, name):
            assert pid is not None
            say(f"stopping {name} (pid {pid}) left without a supervisor")
            os.kill(pid, signal.SIGTERM)
            left += _wait_gone([pid], 30)
        run.pid_file(name).unlink(missing_ok=True)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    run.pid_file(SUPERVISOR).unlink(missing_ok=True)
    return not left


def cmd_down(args: argparse.Namespace) -> int:
    run = _run_dir()
    if not lock_holder(run) and not any(is_alive(read_pid(run.pid_file(n)), n) for n in SERVICES):
        print(f"MEMO is not running (run directory {run.root}).")
        return 0
    ok = stop(run, args.timeout)
    print("MEMO is stopped." if ok else "memo down: some services had to be killed; see " + str(run.logs))
    return 0 if ok else 1


def add_up_cli(p: argparse.ArgumentParser) -> None:
    p.epilog = UP_EXAMPLES
    p.description = "Start collector, inference and prefetcher, supervised (restarted if they die)."
    p.add_argument("--foreground", action="store_true", help="supervise in this process instead of detaching")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="how long to wait for all three to be ready (default 300)")
    p.set_defaults(handler=cmd_up)


def add_down_cli(p: argparse.ArgumentParser) -> None:
    p.epilog = DOWN_EXAMPLES
    p.description = "Stop MEMO's services cleanly (SIGTERM; cgroup values restored, pins removed)."
    p.add_argument("--timeout", type=float, default=90.0, metavar="S",
                   help="how long to wait before killing (default 90)")
    p.set_defaults(handler=cmd_down)
