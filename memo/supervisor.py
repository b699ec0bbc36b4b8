"""MEMO's own small supervisor (systemd is not PID 1 on every machine): starts inference, waits until it
says it is ready (READY=1 on $NOTIFY_SOCKET, memo.notify, as systemd's Type=notify units do; no log line
is read for it), then starts collector and prefetcher; restarts a service that dies, with exponential backoff;
on SIGTERM stops them in reverse order (each gets SIGTERM, so the prefetcher restores its cgroup
values and the collector removes its pins) and exits.

One supervisor per run directory (an flock). Children die with it (PR_SET_PDEATHSIG), so a killed
supervisor never leaves orphans. What it sees is written to <run_dir>/supervisor.json for `memo up`,
`memo status` and tests. Run it with `memo up` (detached) or `python -m memo.supervisor` (foreground).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from memo import config as memo_config
from memo import helpers, logs, notify, placement, procfs
from memo.client import InferenceClient
from memo.contract import Health
from memo.runtime import SERVICES, SUPERVISOR, RunDir, command, take_lock, write_pid

log = logging.getLogger("memo-supervisor")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe is noise

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_S = 60.0
"""A service that ran this long before dying starts again at the first backoff step."""
READY_TIMEOUT_S = {"inference": 120.0, "collector": 180.0, "prefetcher": 60.0}
STOP_TIMEOUT_S = 30.0
TICK_S = 0.1
"""Between passes while a service starts or waits for its restart."""
ROTATE_CHECK_S = 30.0
WATCH_S = 10.0
"""How often the watchdog looks at a running service (more often when services.watchdog_s is short)."""
IDLE_WAIT_MAX_S = 60.0
"""While every service runs, the loop sleeps until a child exits (its pidfd), a READY notice or a signal
arrives, or the watchdog or the log rotation is due: no timer ticks (two a second cost 1.3-2 s of CPU in
a bench/replay session: each tick faulted the supervisor's memory back in under memory pressure)."""


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
    history: list[dict[str, float | int]] = field(default_factory=list)
    stalled_since: float | None = None  # monotonic time the watchdog first saw it stuck
    ready: bool = False  # it said READY=1 (memo.notify) since it was started
    next_watch: float = 0.0
    pidfd: int | None = None  # readable once the process has exited

    def forget(self) -> None:
        """The process is gone (reaped): drop it and its pidfd."""
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.proc, self.pidfd = None, None

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
        self._health: InferenceClient | None = None  # see _healthz
        self.notices: notify.Listener | None = None  # where the services say READY=1 (serve opens it)
        self._wakeup: tuple[socket.socket, socket.socket] | None = None  # signal.set_wakeup_fd's pair

    # ---------------------------------------------------------------- health

    def _healthz(self, timeout_s: float) -> Health:
        """GET /healthz on inference's socket (the watchdog's question), through one client for the
        supervisor's life: making one costs ~10 ms of CPU."""
        if self._health is None:
            self._health = InferenceClient.unix(self.run.socket)
        return self._health.health(timeout_s=timeout_s)

    # ---------------------------------------------------------------- processes

    def spawn(self, child: Child) -> None:
        logf = self.run.log_file(child.name)
        out = open(logf, "ab")  # noqa: SIM115 - the child owns it from here
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.notices is not None:
            env[notify.ENV] = str(self.notices.path)
        where = self.placement
        me = os.getpid()

        def before_exec() -> None:
            helpers.bind_to_parent(me, signal.SIGTERM)
            if where is not None:
                where.enter(child.name)

        child.proc = subprocess.Popen(command(child.name), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                      env=env, start_new_session=True, preexec_fn=before_exec)
        out.close()
        try:  # not reaped by anyone but this process, so the pid cannot be reused before this
            child.pidfd = os.pidfd_open(child.proc.pid)
        except OSError as exc:  # a kernel before 5.3: the loop's timeout still sees the exit
            log.warning("no pidfd for %s: %s", child.name, exc)
        child.started_at = time.time()
        child.state = "starting"
        child.ready = False
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
        child.forget()
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
        child.forget()
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
        # states and pids, for every user's `memo status`
        helpers.atomic_write(self.run.state_file, json.dumps(data, indent=1), mode=0o644)

    # ---------------------------------------------------------------- the loop

    def step(self) -> None:
        """One pass: reap, restart what is due, promote what became ready. Collector and prefetcher wait
        for inference only at first start; later they ride out its restarts (spool, retries)."""
        now = time.monotonic()
        first = self.children["inference"]
        self._hear()
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
                if child.ready:
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

    def _hear(self) -> None:
        """Take the READY=1 notices the services sent, each by the pid the kernel gave for its sender."""
        if self.notices is None:
            return
        by_pid = {c.pid: c for c in self.children.values() if c.pid}
        for pid, fields in self.notices.receive():
            child = by_pid.get(pid)
            if child is not None and fields.get("READY") == "1":
                child.ready = True

    def _stuck(self, child: Child) -> str:
        """Why a running child looks stuck ("" when it does not): stopped by a signal, or, for
        inference, no answer from /healthz or a degraded one (its model threads died)."""
        st = procfs.stat(child.pid) if child.pid else None
        if st is None:
            return ""
        if st.state in ("T", "t"):
            return "stopped by a signal"
        if child.name != "inference":
            return ""
        try:
            health = self._healthz(timeout_s=5.0)
        except (OSError, httpx.HTTPError, ValueError) as exc:
            return f"/healthz unanswered ({type(exc).__name__})"
        if health.status != "ok":
            return f"/healthz says {health.status}: {health.detail.get('reason', '')}"
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
            {"inference": svc.inference_memory_high, "collector": svc.collector_memory_high},
            cpu_idle=svc.cpu_idle)
        log.info("services run in %s (cpu weight %d%s, io weight %d)",
                 ", ".join(sorted({str(Path(d).parent) for d in self.placement.where("inference")
                                   .values()})), svc.cpu_weight,
                 ", idle scheduling class" if self.placement.cpu_idle else "", svc.io_weight)

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

    def _wait(self, next_rotate: float) -> None:
        """Sleep until something needs a pass: TICK_S while a service starts or backs off; otherwise
        until a child exits, a notice or a signal arrives, or the watchdog or log rotation is due."""
        now = time.monotonic()
        if not all(c.state == "running" for c in self.children.values()):
            timeout = TICK_S
        else:
            due = [next_rotate, now + IDLE_WAIT_MAX_S]
            if self.cfg.services.watchdog_s > 0:
                due += [c.next_watch for c in self.children.values()]
            timeout = max(0.0, min(due) - now)
        fds = [c.pidfd for c in self.children.values() if c.pidfd is not None]
        if any(c.proc is not None and c.pidfd is None for c in self.children.values()):
            timeout = min(timeout, TICK_S)  # an exit only a poll can see
        if self.notices is not None:
            fds.append(self.notices.sock.fileno())
        if self._wakeup is not None:
            fds.append(self._wakeup[0].fileno())
        try:
            ready = select.select(fds, [], [], timeout)[0]
        except OSError:
            time.sleep(TICK_S)
            return
        if self._wakeup is not None and self._wakeup[0].fileno() in ready:
            with contextlib.suppress(OSError):
                self._wakeup[0].recv(4096)  # the signal's byte: its handler has run already

    def serve(self) -> int:
        def _stop(signum: int, _frame: object) -> None:
            if not self.stopping:
                log.info("signal %s: stopping all services", signal.Signals(signum).name)
            self.stopping = True
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _stop)
        # a signal writes a byte here, which ends the loop's wait (select is otherwise resumed after it)
        self._wakeup = socket.socketpair()
        for end in self._wakeup:
            end.setblocking(False)
        signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        self.confine()
        self.notices = notify.Listener(self.run.notify_socket)
        self.spawn(self.children["inference"])
        try:
            next_rotate = 0.0
            while not self.stopping:
                self.step()
                if time.monotonic() >= next_rotate:
                    next_rotate = time.monotonic() + ROTATE_CHECK_S
                    self.rotate_logs()
                self._wait(next_rotate)
        finally:
            self.stopping = True
            self.save()
            for name in reversed(SERVICES):
                self.stop_child(self.children[name])
            if self.placement is not None:
                self.placement.remove()
            if self.notices is not None:
                self.notices.close()
            signal.set_wakeup_fd(-1)
            for end in self._wakeup or ():
                end.close()
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
