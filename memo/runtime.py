"""The run directory that `memo up` and its supervisor share: where logs, pid files and state live.

<run_dir>/logs/<service>.log, <run_dir>/pids/<service>.pid, <run_dir>/supervisor.json (what the
supervisor last saw), <run_dir>/supervisor.lock (held by the one running supervisor) and
<run_dir>/notify.sock (where the services say they are ready); inference's sockets and port file are
named in memo.config. Pid files
are checked against /proc/PID/cmdline before they are trusted, so a recycled pid is never signalled.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memo import helpers, procfs
from memo.config import PORT_FILE_NAME, SOCKET_NAME, USER_SOCKET_NAME

SERVICES = ("inference", "collector", "prefetcher")
"""Start order; stop order is the reverse."""
SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def state_file(self) -> Path:
        return self.root / "supervisor.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def port_file(self) -> Path:
        return self.root / PORT_FILE_NAME

    @property
    def notify_socket(self) -> Path:
        """Where the services say READY=1 (memo.notify) to the supervisor."""
        return self.root / "notify.sock"

    @property
    def socket(self) -> Path:
        return self.root / SOCKET_NAME

    @property
    def user_socket(self) -> Path:
        return self.root / USER_SOCKET_NAME

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def make(self) -> None:
        """The run directory and its pid files are for every user's `memo status` to read (the socket's
        own mode decides who may connect); the logs name programs and files: MEMO's alone."""
        for d, mode in ((self.root, 0o755), (self.pids, 0o755), (self.logs, 0o700)):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, mode)

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def port(self) -> int | None:
        try:
            return int(self.port_file.read_text())
        except (OSError, ValueError):
            return None


def command(service: str) -> list[str]:
    """The argv that starts a service: the venv's console script, else `python -m` its main module."""
    script = Path(sys.executable).parent / f"memo-{service}"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", f"{service}.main"]


def runs(pid: int, service: str) -> bool:
    """pid's command line is memo-<service> (console script, or `python -m <service>.main`), or the
    supervisor for service == "supervisor"."""
    argv = procfs.cmdline(pid)
    if service == SUPERVISOR:
        return "memo.supervisor" in argv[:4]
    head = [os.path.basename(a) for a in argv[:2]]
    return f"memo-{service}" in head or f"{service}.main" in argv[:4]


def is_alive(pid: int | None, service: str = "") -> bool:
    """pid runs and (when ``service`` is given) it is that service, not a recycled pid."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not service or runs(pid, service)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pid(path: Path, pid: int) -> None:
    helpers.atomic_write(path, f"{pid}\n", mode=0o644)


def find_processes(service: str) -> list[int]:
    """Pids running memo-<service> (used when no supervisor tracks them, e.g. under systemd)."""
    me = os.getpid()
    return sorted(pid for pid in procfs.pids() if pid != me and runs(pid, service))


def lock_holder(run: RunDir) -> int | None:
    """The pid of the running supervisor if one holds the lock, else None (a stale lock is free)."""
    if not run.lock_file.exists():
        return None
    fd = os.open(run.lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(run.pid_file(SUPERVISOR)) or read_pid(run.lock_file) or -1
    finally:
        os.close(fd)
    return None


def take_lock(run: RunDir) -> int | None:
    """An fd holding the supervisor lock (the kernel releases it when this process dies), or None if
    another supervisor holds it."""
    run.make()
    while True:
        fd = os.open(run.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the supervisor that held it removes the file as it exits: a lock on that one is no lock
            if os.stat(run.lock_file).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
