"""Small things every service needs: how MEMO's helper processes (the LLM engine, the LSTM trainer) run
(below the user's programs, never past the service that started them), what a process holds, the one
atomic file write, merged intervals, and a bounded map of the most recently used entries.

PR_SET_PDEATHSIG fires when the *thread* that started the child ends, not only the process: a parent
must start such a child from a thread that lives as long as the child should.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from memo import procfs

K = TypeVar("K")
V = TypeVar("V")
NICE = 19
_PR_SET_PDEATHSIG, _PR_GET_PDEATHSIG = 1, 2
_IOPRIO_SET, _IOPRIO_WHO_PROCESS = 251, 1  # x86_64 syscall number
IOPRIO_IDLE = 3 << 13  # IOPRIO_CLASS_IDLE in the class bits of an ioprio value


def bind_to_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """``sig`` to this process when its parent goes; False if ``parent`` is already gone (then exit)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    return os.getppid() == parent


def parent_death_signal() -> int:
    """The signal this process gets when its parent goes (0: none)."""
    sig = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_PDEATHSIG, ctypes.byref(sig))
    return sig.value


def lowest_priority() -> None:
    """Nice 19 and the idle I/O class: this process gets only what the user's programs leave."""
    os.setpriority(os.PRIO_PROCESS, 0, NICE)
    ctypes.CDLL(None, use_errno=True).syscall(_IOPRIO_SET, _IOPRIO_WHO_PROCESS, 0, IOPRIO_IDLE)


def private_files() -> None:
    """Files and folders this process creates are its user's alone (umask 077): the store, the spool
    and the logs hold every user's launches and their argv. Shared ends (the socket, the port file)
    set their mode explicitly."""
    os.umask(0o077)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a reader (or the next start after a crash) sees the old
    file or the new one, never a part. The temporary file has a random name (O_EXCL: nothing planted in
    the folder is followed) and ``mode``; ``durable`` also fsyncs it and the folder, so the new file
    survives a power cut (the spool, saved cgroup values, model state), at a few ms of I/O."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def pss_kb(pid: int | str = "self") -> int:
    """Proportional set size of a process (kB; 0 if unreadable), from /proc/PID/smaps_rollup."""
    try:
        return int(procfs.field(pid, "smaps_rollup", "Pss"))
    except ValueError:
        return 0


def protocol_channel() -> int:
    """A private copy of stdout for a helper's protocol with its parent; fd 1 (and sys.stdout) become
    stderr, so that whatever a library prints cannot corrupt the channel."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return fd


def end_child(proc: subprocess.Popen[bytes], grace_s: float = 0.0) -> None:
    """End a helper that holds nothing to save: SIGTERM and ``grace_s`` to go (0: SIGKILL at once), then
    SIGKILL; reaped, its pipes closed."""
    if grace_s > 0:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) intervals, sorted and merged where they overlap or touch."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


class Recent(OrderedDict[K, V]):
    """A dict that keeps its ``size`` most recently used entries: reading (get) or writing an entry marks
    it used, and a write past ``size`` drops the least recently used. For caches of parsed or merged
    profiles, where a few programs are in use at a time and each entry holds thousands of ranges."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
