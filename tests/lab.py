"""The real-kernel lab shared by the collector's and prefetcher's tests and bench/swap.py: a swap file, a
cgroup v1 memory cgroup, a process with anonymous memory to swap out. Each cleans up in a finally
block, also when the test fails."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from memo import pressure

V1_MEMORY = Path("/sys/fs/cgroup/memory")
PAGE = os.sysconf("SC_PAGE_SIZE")

HOG = r"""
import sys, time
buf = None
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "alloc":
        n = int(arg[0]) << 20
        buf = bytearray(n)
        for i in range(0, n, 4096):
            buf[i] = (i >> 12) & 0xFF or 1
        print("ok", flush=True)
    elif cmd == "touch":
        t = time.perf_counter(); s = 0
        for i in range(0, len(buf), 4096):
            s += buf[i]
        print(f"{time.perf_counter() - t:.6f}", flush=True)
    elif cmd == "thrash":
        end = time.monotonic() + float(arg[0])
        while time.monotonic() < end:
            for i in range(0, len(buf), 4096):
                buf[i] = (buf[i] + 1) & 0xFF
        print("ok", flush=True)
"""

# Takes free memory fast: argv[2] anonymous mappings of argv[1] bytes, populated one every argv[3] s.
FILLER = r"""
import mmap, sys, time
chunk, n, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = []
for i in range(n):
    held.append(mmap.mmap(-1, chunk, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE))
    if i == 2:  # under way: the first steps of a fresh process can stall for a few tenths of a second
        print("filling", flush=True)
    time.sleep(pause)
print("full", flush=True)
sys.stdin.read()
"""


def psi_avg10() -> float:
    """PSI memory "some" avg10: the share of the last ~10 s some task stalled on memory (%)."""
    return pressure.parse_psi(pressure.PSI_MEMORY.read_text())["some"]["avg10"]


def proc_kb(path: Path, key: str) -> int | None:
    """Bytes of the "key: N kB" line of a /proc file; None when it has no such line."""
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def meminfo(key: str) -> int:
    value = proc_kb(Path("/proc/meminfo"), key)
    if value is None:
        raise KeyError(key)
    return value


def vmswap(pid: int) -> int:
    return proc_kb(Path(f"/proc/{pid}/status"), "VmSwap") or 0


def anon_huge(pid: int) -> int:
    """Bytes of pid's anonymous memory mapped by huge pages."""
    return proc_kb(Path(f"/proc/{pid}/smaps_rollup"), "AnonHugePages") or 0


@contextlib.contextmanager
def swapfile(size: str = "1G", where: Path = Path("/var/tmp")) -> Iterator[Path]:
    """fallocate + mkswap + swapon a file; swapoff and remove it afterwards, whatever happened."""
    path = where / f"memo-test-swap-{os.getpid()}"
    try:
        subprocess.run(["fallocate", "-l", size, str(path)], check=True)
        path.chmod(0o600)
        subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
        subprocess.run(["swapon", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["swapoff", str(path)], capture_output=True)
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def memory_cgroup(name: str) -> Iterator[Path]:
    """A fresh cgroup v1 memory cgroup; its tasks are moved back to the root before it is removed."""
    path = V1_MEMORY / f"memo-test-{name}-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        for _ in range(50):
            pids = (path / "cgroup.procs").read_text().split()
            for pid in pids:
                with contextlib.suppress(OSError):
                    (V1_MEMORY / "cgroup.procs").write_text(pid)
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def filling_memory(share: float = 1 / 3, chunks: int = 20, pause_s: float = 0.05
                   ) -> Iterator[Callable[[], None]]:
    """A process taking `share` of the free memory in `chunks` steps (a program filling memory, as
    bench/replay's hog does before reclaim starts); entered once it has taken three steps. Yields
    wait_full(), which returns once it holds all of it; the memory is freed on exit."""
    free = meminfo("MemFree")
    chunk = max(32 << 20, int(free * share / chunks)) // PAGE * PAGE
    proc = subprocess.Popen([sys.executable, "-c", FILLER, str(chunk), str(chunks), str(pause_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out = proc.stdout
    assert out is not None

    def wait_full() -> None:
        assert out.readline().strip() == "full"

    try:
        assert out.readline().strip() == "filling"
        yield wait_full
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def thrashing(name: str, seconds: float = 30.0, min_avg10: float = 2.0, timeout_s: float = 20.0
              ) -> Iterator[Callable[[], None]]:
    """Real memory pressure: with a swap file on, a process that swaps its 128 MB in and out of a 64 MB
    memory cgroup for `seconds` (its tasks stall on memory, so PSI some rises). Entered once avg10
    reached min_avg10; yields stop(), which ends the process early. Everything is undone on exit."""
    with swapfile("1G"), memory_cgroup(name) as cg:
        hog = Hog()
        try:
            (cg / "cgroup.procs").write_text(str(hog.pid))
            set_limit(cg, 64 << 20)
            hog.alloc(128)
            hog.thrash_start(seconds)
            deadline = time.monotonic() + timeout_s
            while psi_avg10() < min_avg10 and time.monotonic() < deadline:
                time.sleep(0.5)
            level = psi_avg10()
            assert level >= min_avg10, f"could not create memory pressure (avg10={level})"
            yield hog.close
        finally:
            hog.close()


class Hog:
    """A python3 process holding `alloc` MB of written anonymous memory; `touch()` reads one byte per
    page and returns how long that took (its own clock)."""

    def __init__(self, python: str = "/usr/bin/python3") -> None:
        self.proc = subprocess.Popen([python, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.pid = self.proc.pid

    def _cmd(self, line: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def alloc(self, mb: int) -> None:
        assert self._cmd(f"alloc {mb}") == "ok"

    def touch(self) -> float:
        return float(self._cmd("touch"))

    def thrash_start(self, seconds: float) -> None:
        """Write one byte per page in a loop for `seconds` (answers later: thrash_wait)."""
        assert self.proc.stdin
        self.proc.stdin.write(f"thrash {seconds}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def set_limit(cg: Path, nbytes: int | None) -> None:
    (cg / "memory.limit_in_bytes").write_text(str(nbytes if nbytes is not None else -1))


def wait_swapcache_settles(timeout_s: float = 10.0) -> int:
    """SwapCached once it stops growing (process_madvise WILLNEED reads asynchronously)."""
    last, deadline = -1, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = meminfo("SwapCached")
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    return last


def exe_python() -> str:
    return os.path.realpath("/usr/bin/python3")


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)
