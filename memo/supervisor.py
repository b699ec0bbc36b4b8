"""MEMO's own small supervisor (systemd is not PID 1 on every machine): starts inference, waits until it
answers, then starts collector and prefetcher; restarts a service that dies, with exponential backoff;
on SIGTERM stops them in reverse order (each gets SIGTERM, so the prefetcher restores its cgroup
values and the collector removes its pins) and exits.

One supervisor per run directory (an flock). Children die with it (PR_SET_PDEATHSIG), so a killed
supervisor never leaves orphans. What it sees is written to <run_dir>/supervisor.json for `memo up`,
`memo status` and tests. Run it with `memo up` (detached) or `python -m memo.supervisor` (foreground).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from memo import config as memo_config
from memo import helpers, logs, placement
from memo.runtime import SERVICES, SUPERVISOR, RunDir, command, take_lock, write_pid

log = logging.getLogger("memo-supervisor")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe is noise

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_S = 60.0
"""A service that ran this long before dying starts again at the first backoff step."""
READY_TIMEOUT_S = {"inference": 120.0, "collector": 180.0, "prefetcher": 60.0}
STOP_TIMEOUT_S = 30.0
TICK_S = 0.1
ROTATE_CHECK_S = 30.0
WATCH_S = 10.0
"""How often the watchdog looks at a running service (more often when services.watchdog_s is short)."""
"""Between passes while a service starts or waits for its restart."""
IDLE_TICK_S = 0.5
"""Between passes while every service runs: a death is still seen within half a second."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    state: str = "stopped"  # starting, running, backoff, stopped, failed
    restarts: int = 0
    failures: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None
    log_offset: int = 0
    history: list[dict[str, float | int]] = field(default_factory=list)
    stalled_since: float | None = None  # monotonic time the watchdog first saw it stuck
    next_watch: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class Supervisor:
    def __init__(self, cfg: memo_config.Config) -> None:
        self.cfg = cfg
        self.run = RunDir(cfg.paths.run_dir)
        self.children = {name: Child(name) for name in SERVICES}
        self.placement: placement.Placement | None = None
        self.stopping = False
        self.started = time.time()
        self._health: httpx.Client | None = None  # see _healthz
        self._ready: dict[str, Callable[[Child], bool]] = {
            "inference": self._inference_ready, "collector": self._collector_ready,
            "prefetcher": self._logged("memo-prefetcher: started", quiet_after_s=2.0)}

    # ---------------------------------------------------------------- readiness

    def _inference_ready(self, child: Child) -> bool:
        """Its socket answers /healthz and it has (re)written the port file since it started."""
        try:
            if self.run.port_file.stat().st_mtime < child.started_at - 1:
                return False
            return self._healthz(timeout_s=2.0).status_code == 200
        except (OSError, httpx.HTTPError):
            return False

    def _healthz(self, timeout_s: float) -> httpx.Response:
        """GET /healthz on inference's socket, through one client for the supervisor's life (making
        one costs ~10 ms of CPU; readiness asks every 0.1 s, the watchdog every 10 s)."""
        if self._health is None:
            self._health = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.run.socket)),
                                        base_url="http://memo-inference")
        return self._health.get("/healthz", timeout=timeout_s)

    def _collector_ready(self, child: Child) -> bool:
        """Its programs are pinned (eBPF), or it says it is ready (any source, at log level INFO)."""
        try:
            pin = self.cfg.collector.bpf_pin_dir / "prog_memo_exec"
            pinned = pin.lstat().st_ctime >= child.started_at - 1
        except OSError:
            pinned = False
        return pinned or self._logged("memo-collector: ready", quiet_after_s=10.0)(child)

    def _logged(self, marker: str, quiet_after_s: float) -> Callable[[Child], bool]:
        """Ready once the child's own log line (tagged with its pid) says ``marker``; at a log level that
        hides INFO lines, once it has run ``quiet_after_s`` without exiting."""
        quiet = logging.getLevelName(self.cfg.log_level.upper()) > logging.INFO

        def ready(child: Child) -> bool:
            if quiet:
                return time.time() - child.started_at >= quiet_after_s
            try:
                with open(self.run.log_file(child.name), "rb") as f:
                    f.seek(child.log_offset)
                    text = f.read().decode(errors="replace")
            except OSError:
                return False
            tag = f"[{child.pid}] "
            return any(tag in line and marker in line for line in text.splitlines())
        return ready

    # ---------------------------------------------------------------- processes

    def spawn(self, child: Child) -> None:
        logf = self.run.log_file(child.name)
        out = open(logf, "ab")  # noqa: SIM115 - the child owns it from here
        child.log_offset = out.tell()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        where = self.placement
        me = os.getpid()

        def before_exec() -> None:
            helpers.bind_to_parent(me, signal.SIGTERM)
            if where is not None:
                where.enter(child.name)

        child.proc = subprocess.Popen(command(child.name), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                      env=env, start_new_session=True, preexec_fn=before_exec)
        out.close()
        child.started_at = time.time()
        child.state = "starting"
        write_pid(self.run.pid_file(child.name), child.proc.pid)
        log.info("%s started (pid %d), log %s", child.name, child.proc.pid, logf)
        self.save()

    def reap(self, child: Child) -> bool:
        """True if the child has exited (and schedules its restart)."""
        if child.proc is None or child.proc.poll() is None:
            return False
        rc = child.proc.returncode
        ran = time.time() - child.started_at
        child.failures = 0 if ran >= STABLE_S else child.failures + 1
        delay = BACKOFF_S[min(max(child.failures, 1), len(BACKOFF_S)) - 1]
        child.last_exit = rc
        child.history.append({"pid": child.proc.pid, "rc": rc, "ran_s": round(ran, 2), "at": time.time()})
        del child.history[:-10]
        child.proc = None
        child.state = "backoff"
        child.next_start = time.monotonic() + delay
        self.run.pid_file(child.name).unlink(missing_ok=True)
        log.warning("%s exited with %s after %.1f s; restarting in %.1f s (see %s)", child.name, rc, ran,
                    delay, self.run.log_file(child.name))
        self.save()
        return True

    def stop_child(self, child: Child) -> None:
        if child.proc is None:
            return
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within %.0f s: killing it", child.name, STOP_TIMEOUT_S)
                child.proc.kill()
                child.proc.wait()
        log.info("%s stopped (exit %s)", child.name, child.proc.returncode)
        if child.name == "inference":  # run as inference.run_as, it cannot remove them from root's folder
            for f in (self.run.socket, self.run.user_socket, self.run.port_file):
                f.unlink(missing_ok=True)
        child.last_exit = child.proc.returncode
        child.proc = None
        child.state = "stopped"
        self.run.pid_file(child.name).unlink(missing_ok=True)
        self.save()

    # ---------------------------------------------------------------- state

    def save(self) -> None:
        data = {
            "pid": os.getpid(), "started": self.started, "stopping": self.stopping,
            "run_dir": str(self.run.root), "socket": str(self.run.socket), "port": self.run.port(),
            "services": {n: {"pid": c.pid, "state": c.state, "restarts": c.restarts, "last_exit": c.last_exit,
                             "since": c.started_at, "log": str(self.run.log_file(n)), "exits": c.history,
                             "cgroups": self.placement.where(n) if self.placement else {}}
                         for n, c in self.children.items()},
        }
        tmp = self.run.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.chmod(tmp, 0o644)  # states and pids, for every user's `memo status`
        os.replace(tmp, self.run.state_file)

    # ---------------------------------------------------------------- the loop

    def step(self) -> None:
        """One pass: reap, restart what is due, promote what became ready. Collector and prefetcher wait
        for inference only at first start; later they ride out its restarts (spool, retries)."""
        now = time.monotonic()
        first = self.children["inference"]
        for child in self.children.values():
            if self.reap(child):
                continue
            if child.state == "backoff" and now >= child.next_start:
                child.restarts += 1
                self.spawn(child)
            elif child.state == "stopped" and child.name != "inference" and first.state == "running" \
                    and not child.history:
                self.spawn(child)
            elif child.state == "running" and self.cfg.services.watchdog_s > 0 and now >= child.next_watch:
                child.next_watch = now + min(WATCH_S, self.cfg.services.watchdog_s / 3)
                self._watch(child, now)
            elif child.state == "starting":
                if self._ready[child.name](child):
                    child.state = "running"
                    log.info("%s is ready (pid %d, %.1f s)", child.name, child.pid,
                             time.time() - child.started_at)
                    self.save()
                elif time.time() - child.started_at > READY_TIMEOUT_S[child.name]:
                    log.error("%s not ready after %.0f s: restarting it", child.name,
                              READY_TIMEOUT_S[child.name])
                    assert child.proc is not None
                    child.proc.kill()
                    child.proc.wait()

    def _stuck(self, child: Child) -> str:
        """Why a running child looks stuck ("" when it does not): stopped by a signal, or, for
        inference, no answer from /healthz or a degraded one (its model threads died)."""
        try:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] in ("T", "t"):
                return "stopped by a signal"
        except (OSError, IndexError):
            return ""
        if child.name != "inference":
            return ""
        try:
            health = self._healthz(timeout_s=5.0).json()
        except (OSError, httpx.HTTPError, ValueError) as exc:
            return f"/healthz unanswered ({type(exc).__name__})"
        if health.get("status") != "ok":
            return f"/healthz says {health.get('status')}: {health.get('detail', {}).get('reason', '')}"
        return ""

    def _watch(self, child: Child, now: float) -> None:
        why = self._stuck(child)
        if not why:
            child.stalled_since = None
            return
        if child.stalled_since is None:
            child.stalled_since = now
            log.warning("%s (pid %d) looks stuck: %s", child.name, child.pid, why)
        elif now - child.stalled_since >= self.cfg.services.watchdog_s:
            log.error("%s (pid %d) stuck for %.0f s (%s): killing it, to be restarted", child.name, child.pid,
                      now - child.stalled_since, why)
            child.stalled_since = None
            assert child.proc is not None
            child.proc.kill()
            child.proc.wait()

    def confine(self) -> None:
        """The services' own cgroups (low CPU and I/O weight, memory ceilings), when root and enabled."""
        svc = self.cfg.services
        if not svc.confine or not placement.usable():
            return
        self.placement = placement.Placement.make(
            SERVICES, svc.cpu_weight, svc.io_weight,
            {"inference": svc.inference_memory_high, "collector": svc.collector_memory_high})
        log.info("services run in %s (cpu weight %d, io weight %d)",
                 ", ".join(sorted({str(Path(d).parent) for d in self.placement.where("inference")
                                   .values()})), svc.cpu_weight, svc.io_weight)

    def rotate_logs(self) -> None:
        """Bound each log (services.log_max_bytes): copy it to <name>.log.1, then truncate it in place.
        The writers hold it open in append mode, so they go on at its new end; a line written between
        the copy and the truncation is lost, which is the price of not restarting anyone."""
        limit = self.cfg.services.log_max_bytes
        if limit <= 0:
            return
        for name in (*SERVICES, SUPERVISOR):
            path = self.run.log_file(name)
            try:
                if path.stat().st_size <= limit:
                    continue
            except FileNotFoundError:  # not started yet
                continue
            try:
                shutil.copyfile(path, path.with_name(path.name + ".1"))
                os.truncate(path, 0)
            except OSError as exc:
                log.warning("cannot rotate %s: %s", path, exc)
                continue
            log.info("%s was over %d bytes: moved to %s.1", path, limit, path.name)

    def serve(self) -> int:
        def _stop(signum: int, _frame: object) -> None:
            if not self.stopping:
                log.info("signal %s: stopping all services", signal.Signals(signum).name)
            self.stopping = True
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _stop)
        self.confine()
        self.spawn(self.children["inference"])
        try:
            next_rotate = 0.0
            while not self.stopping:
                self.step()
                if time.monotonic() >= next_rotate:
                    next_rotate = time.monotonic() + ROTATE_CHECK_S
                    self.rotate_logs()
                steady = all(c.state == "running" for c in self.children.values())
                time.sleep(IDLE_TICK_S if steady else TICK_S)
        finally:
            self.stopping = True
            self.save()
            for name in reversed(SERVICES):
                self.stop_child(self.children[name])
            if self.placement is not None:
                self.placement.remove()
            self.run.pid_file(SUPERVISOR).unlink(missing_ok=True)
        log.info("all services stopped")
        return 0


def main() -> int:
    cfg = memo_config.load()
    helpers.private_files()
    logs.setup("memo-supervisor", cfg.log_level)
    sup = Supervisor(cfg)
    lock = take_lock(sup.run)
    if lock is None:
        print(f"memo-supervisor: another supervisor runs in {sup.run.root}", file=sys.stderr)
        return 3
    write_pid(sup.run.pid_file(SUPERVISOR), os.getpid())
    try:
        return sup.serve()
    finally:
        sup.run.lock_file.unlink(missing_ok=True)  # still held: a supervisor started now makes a new one
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
