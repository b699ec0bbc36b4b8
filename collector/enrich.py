"""What the kernel cannot cheaply tell: exe path, argv, cgroup path, and (dev, ino) -> file path.

Read from /proc as soon as a record arrives; a process that is already gone leaves the field empty
(short-lived helpers often are). File names come from openat records of launching processes and
from /proc/PID/maps (mmapped libraries), looked up by the kernel's (dev, ino).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict

from memo import procfs
from memo.contract import MAX_ARG_CHARS, MAX_ARGS, MAX_PATH, ExecEvent, PageCacheEvent, is_file_path

MAX_FILES = 65536
MAPS_RESCAN_S = 1.0


def kernel_dev(st_dev: int) -> int:
    """stat()'s st_dev in the kernel's internal encoding (major << 20 | minor), as tracepoints give."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def exe(pid: int) -> str:
    return procfs.link(pid, "exe")


def absolute(filename: str, *pids: int) -> str:
    """A relative exec'd name made absolute when /proc/PID/exe is gone (a short-lived process): against
    the process's cwd, else its parent's (a shell's `./tool` resolves there, and the shell usually
    outlives it). "" when no cwd can be read: the app is then never stored under a relative name."""
    for pid in pids:
        if path := _join(procfs.link(pid, "cwd"), filename):
            return path
    return ""


def _join(cwd: str, filename: str) -> str:
    return os.path.normpath(os.path.join(cwd, filename)) if cwd.startswith("/") else ""


def argv(pid: int) -> list[str]:
    """The command line, cut to what the contract carries (MAX_ARGS entries of MAX_ARG_CHARS)."""
    return [a[:MAX_ARG_CHARS] for a in procfs.cmdline(pid)[:MAX_ARGS]]


def cgroup_path(pid: int) -> str:
    """The v2 path if the process has one, else the v1 memory controller's (what MEMO acts on)."""
    lines = procfs.text(pid, "cgroup").splitlines()
    by_ctl = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctl in parts[1].split(",") or [""]:
                by_ctl[ctl] = parts[2]
    return (by_ctl.get("memory") or by_ctl.get("", ""))[:MAX_PATH]


class FileIndex:
    """A bounded (dev, ino) -> path map fed by openat records and /proc/PID/maps."""

    def __init__(self, limit: int = MAX_FILES) -> None:
        self._paths: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._guessed: set[tuple[int, int]] = set()  # named only by what a process opened them by
        self._limit = limit
        self._maps_scanned: dict[int, float] = {}

    def _put(self, key: tuple[int, int], path: str, exact: bool = True) -> None:
        """exact: the kernel's name (an fd's or a mapping's link), not one a process opened it by."""
        self._paths[key] = path
        self._paths.move_to_end(key)
        if exact:
            self._guessed.discard(key)
        else:
            self._guessed.add(key)
        while len(self._paths) > self._limit:
            self._guessed.discard(self._paths.popitem(last=False)[0])

    def learn_open(self, pid: int, fd: int, filename: str, key: tuple[int, int] | None = None) -> None:
        """A file opened by pid. ``key``: its (dev, ino) as the kernel read it; a file already known by
        the kernel's name is done with then, without a look at /proc (a program opens the same
        hundreds of files at every start, and this runs while it starts). Otherwise two
        self-consistent guesses: the name it was opened by (resolved against the process's cwd; the
        file may have been renamed since), and what the fd points to now (it may have been closed
        and reused since). For the same file the fd's name wins: it is the kernel's, without links,
        which is what the prefetcher opens. When both agree, one stat serves."""
        if key is not None and key in self._paths and key not in self._guessed:
            self._paths.move_to_end(key)
            return
        fd_link = f"/proc/{pid}/fd/{fd}"
        real, real_key = "", None
        try:
            real = os.readlink(fd_link).removesuffix(" (deleted)")
            st = os.stat(fd_link)
            real_key = (kernel_dev(st.st_dev), st.st_ino)
        except OSError:
            pass
        try:
            if not filename.startswith("/"):
                filename = os.path.join(os.readlink(f"/proc/{pid}/cwd"), filename)
            filename = os.path.normpath(filename)
            if filename != real:
                st = os.stat(filename)
                self._put((kernel_dev(st.st_dev), st.st_ino), filename, exact=False)
        except OSError:
            pass
        if real_key is not None and real.startswith("/"):
            self._put(real_key, real)

    def learn_file(self, path: str, exact: bool = True) -> None:
        """A file known by name (an exec'd binary: execve reads it without an openat); exact: the
        kernel's name (/proc/PID/exe), not the name it was exec'd by."""
        try:
            st = os.stat(path)
        except OSError:
            return
        self._put((kernel_dev(st.st_dev), st.st_ino), path, exact)

    def learn_maps(self, pid: int, force: bool = False) -> None:
        """File mappings of pid (at most once per MAPS_RESCAN_S per pid unless forced)."""
        now = time.monotonic()
        if not force and now - self._maps_scanned.get(pid, 0.0) < MAPS_RESCAN_S:
            return
        self._maps_scanned[pid] = now
        if len(self._maps_scanned) > 4096:
            self._maps_scanned = {p: t for p, t in self._maps_scanned.items() if now - t < MAPS_RESCAN_S}
        for line in procfs.text(pid, "maps").splitlines():
            parts = line.split(None, 5)
            if len(parts) < 6 or not parts[5].startswith("/") or parts[4] == "0":
                continue
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            self._put(((major << 20) | minor, int(parts[4])), parts[5].removesuffix(" (deleted)"))

    def path(self, dev: int, ino: int) -> str:
        return self._paths.get((dev, ino), "")


class Enricher:
    """Fills the collector-side fields of exec and pagecache events."""

    def __init__(self) -> None:
        self.files = FileIndex()

    def exec(self, ev: ExecEvent) -> ExecEvent:
        """Fill exe, argv, cgroup; learn the new image's files (binary, loader, libraries mapped so
        far), whose pages execve itself reads before any openat could name them."""
        cwd = procfs.link(ev.pid, "cwd")  # read once: a gone process's answer is "" both times
        path = exe(ev.pid)
        exact = bool(path)
        if not path and not ev.filename.startswith("/"):
            path = _join(cwd, ev.filename) or absolute(ev.filename, ev.ppid)
        self.files.learn_file(path or ev.filename, exact)
        self.files.learn_maps(ev.pid, force=True)
        return ev.model_copy(update={
            "exe": path, "argv": argv(ev.pid), "cgroup_path": cgroup_path(ev.pid),
            "cwd": cwd if cwd.startswith("/") and len(cwd) <= MAX_PATH else "",
            "wall_ts": wall_time(ev.ts_ns)})

    def pagecache(self, ev: PageCacheEvent) -> PageCacheEvent:
        path = self.files.path(ev.dev, ev.ino)
        if not path:
            self.files.learn_maps(ev.pid)
            path = self.files.path(ev.dev, ev.ino)
        # A name the contract refuses (a control character, a file under /dev/shm) stays unknown: one
        # odd file must not make the whole batch invalid.
        return ev.model_copy(update={"path": path}) if path and is_file_path(path) else ev


def wall_time(ts_ns: int) -> float:
    """CLOCK_MONOTONIC ns (bpf_ktime_get_ns) -> Unix time."""
    return time.time() - (time.monotonic_ns() - ts_ns) / 1e9
