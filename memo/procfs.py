"""The one reader of per-process files under /proc, for every service and the CLI. Every function takes
``root`` (default /proc), so a test can point it at a recorded tree; a process that is gone (or a file
that cannot be read) gives the empty answer, never an exception: processes end while they are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/proc")
PF_KTHREAD = 0x00200000


def read(pid: int | str, name: str, root: Path = ROOT) -> bytes:
    """/proc/PID/<name>'s bytes; b"" when unreadable."""
    try:
        return (root / str(pid) / name).read_bytes()
    except OSError:
        return b""


def text(pid: int | str, name: str, root: Path = ROOT) -> str:
    """/proc/PID/<name> as text (odd bytes as U+FFFD); "" when unreadable."""
    return read(pid, name, root).decode("utf-8", "replace")


def boot_id(root: Path = ROOT) -> str:
    """This boot's id (/proc/sys/kernel/random/boot_id): what a state file written before a reboot is
    told apart by; "" when unreadable."""
    return text("sys", "kernel/random/boot_id", root).strip()


def link(pid: int | str, name: str, root: Path = ROOT) -> str:
    """A /proc/PID link's target (exe, cwd, fd/N) as text the contract accepts: a name that is not
    UTF-8 gets U+FFFD where its odd bytes were (os.readlink's surrogate escapes cannot be stored); ""
    when unreadable."""
    try:
        return os.fsencode(os.readlink(root / str(pid) / name)).decode("utf-8", "replace")
    except OSError:
        return ""


def field(pid: int | str, name: str, key: str, default: str = "0", root: Path = ROOT) -> str:
    """The first word after ``key:`` in /proc/PID/<name> (status: PPid, Uid...); ``default`` if
    unreadable."""
    for line in text(pid, name, root).splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].split()[0]
    return default


def cmdline(pid: int | str, root: Path = ROOT) -> list[str]:
    """argv, each as text; [] for a process that is gone (or a kernel thread)."""
    raw = read(pid, "cmdline", root)
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]] if raw else []


@dataclass(frozen=True, slots=True)
class Stat:
    """What /proc/PID/stat says that MEMO uses."""

    comm: str
    state: str  # R, S, D, T (stopped), t (traced), Z...
    ppid: int
    flags: int
    start_ticks: int  # since boot, in clock ticks (SC_CLK_TCK)
    utime_ticks: int
    stime_ticks: int

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD) or self.ppid == 2


def stat(pid: int | str, root: Path = ROOT) -> Stat | None:
    """/proc/PID/stat parsed (comm may hold spaces and parentheses: it ends at the last ')'); None
    when the process is gone."""
    raw = text(pid, "stat", root)
    try:
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw[raw.rindex(")") + 2:].split()
        return Stat(comm, f[0], int(f[1]), int(f[6]), int(f[19]), int(f[11]), int(f[12]))
    except (ValueError, IndexError):
        return None


def owner(pid: int | str, root: Path = ROOT) -> int | None:
    """The uid that owns the process (its /proc entry); None when it is gone."""
    try:
        return (root / str(pid)).stat().st_uid
    except OSError:
        return None


def pids(root: Path = ROOT) -> list[int]:
    """The processes now running (their /proc entries), in /proc's order."""
    try:
        return [int(e.name) for e in os.scandir(root) if e.name.isdigit()]
    except OSError:
        return []
