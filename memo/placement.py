"""Where MEMO's own services run: cgroups of their own, so that the user's programs always win.

Under `memo up` the supervisor puts each service in <hierarchy>/memo/<service>: the `memo` group has a
low CPU weight and a low I/O weight (a tenth of a default group's: MEMO gets the CPU and the disk that
the user's programs leave, and all it needs when they are idle), and the services that learn
(inference with its engine and trainer processes, the collector) get a memory ceiling: on cgroup v2
memory.high (above it the kernel throttles the group and reclaims its memory), on v1 a soft limit
(under global pressure the kernel reclaims from the groups above theirs first). The prefetcher has
none: the page cache it fills is charged to it and belongs to the programs it was read for.

The `memo` group is also in the idle scheduling class (cpu.idle, services.cpu_idle): a weight only
shares the CPU's time under contention, and a woken MEMO thread may still run ahead of a starting
program's; an idle group's threads never preempt the user's and run on what the CPUs leave.

cgroup v2 where the controller is enabled there: cpu.weight, io.weight, memory.high. cgroup v1
otherwise (this machine: v1 cpu, blkio and memory, an empty v2 hierarchy beside them): cpu.shares,
blkio.bfq.weight (or blkio.weight), memory.soft_limit_in_bytes (reclaimed first under global pressure;
v1 has no memory.high). systemd installs do the same with memo.slice and the units' MemoryHigh=. A
machine without a controller, or a supervisor that is not root, runs the services unconfined and says
so once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MOUNTS = Path("/proc/mounts")
GROUP = "memo"
V1_NAMES = {"cpu": "cpu", "io": "blkio", "memory": "memory"}


@dataclass(frozen=True)
class Hierarchy:
    controller: str  # cpu, io or memory
    root: Path
    version: int


def hierarchies(mounts: Path = MOUNTS) -> dict[str, Hierarchy]:
    """For each of cpu, io and memory, the hierarchy that has it: v2 where enabled there, else v1."""
    out: dict[str, Hierarchy] = {}
    v1: dict[str, Path] = {}
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        where, fstype, opts = Path(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup2":
            try:
                available = (where / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            for c in ("cpu", "io", "memory"):
                if c in available:
                    out.setdefault(c, Hierarchy(c, where, 2))
        elif fstype == "cgroup":
            for c, name in V1_NAMES.items():
                if name in opts:
                    v1.setdefault(c, where)
    for c, where in v1.items():
        out.setdefault(c, Hierarchy(c, where, 1))
    return out


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError as exc:
        log.debug("cannot write %s to %s: %s", value, path, exc)
        return False


@dataclass
class Placement:
    """The cgroups of one `memo up`: made at start, entered by each service, removed at stop."""

    cpu_weight: int
    io_weight: int
    memory_high: dict[str, int]  # service -> bytes; absent or 0 = no ceiling
    hier: dict[str, Hierarchy]
    name: str = GROUP
    cpu_idle: bool = False  # the group in the idle scheduling class; False where the kernel has none

    @classmethod
    def make(cls, services: tuple[str, ...], cpu_weight: int, io_weight: int,
             memory_high: dict[str, int], mounts: Path = MOUNTS, name: str = GROUP,
             cpu_idle: bool = False) -> Placement:
        p = cls(cpu_weight, io_weight, memory_high, hierarchies(mounts), name, cpu_idle)
        p._create(services)
        return p

    def group(self, h: Hierarchy) -> Path:
        return h.root / self.name

    def _create(self, services: tuple[str, ...]) -> None:
        missing = sorted({"cpu", "io", "memory"} - set(self.hier))
        if missing:
            log.warning("no %s controller on this machine: MEMO's services run without that limit",
                        ", ".join(missing))
        for c, h in list(self.hier.items()):
            top = self.group(h)
            try:
                top.mkdir(exist_ok=True)
                if h.version == 2:  # controllers must be enabled on the way down to the leaves
                    _write(h.root / "cgroup.subtree_control", f"+{c}")
                    _write(top / "cgroup.subtree_control", f"+{c}")
                for s in services:
                    (top / s).mkdir(exist_ok=True)
            except OSError as exc:
                log.warning("cannot create %s (%s): MEMO's services run without a %s limit", top, exc, c)
                del self.hier[c]
                continue
            self._limit(h, top, services)

    def _limit(self, h: Hierarchy, top: Path, services: tuple[str, ...]) -> None:
        if h.controller == "cpu":
            idle = top / "cpu.idle"
            if idle.exists():  # an earlier run's idle group takes no weight (v2) until it is left
                _write(idle, "0")
            if h.version == 2:
                _write(top / "cpu.weight", str(self.cpu_weight))
            else:
                _write(top / "cpu.shares", str(max(2, self.cpu_weight * 1024 // 100)))
            if self.cpu_idle and not _write(idle, "1"):
                log.warning("no cpu.idle in %s (Linux < 5.15): MEMO's services run at CPU weight %d only",
                            top, self.cpu_weight)
                self.cpu_idle = False
        elif h.controller == "io":
            if h.version == 2:
                _write(top / "io.weight", f"default {self.io_weight}")
            elif not _write(top / "blkio.bfq.weight", str(self.io_weight)):
                _write(top / "blkio.weight", str(max(10, self.io_weight)))
        else:
            for s in services:  # 0: no ceiling (also over what an earlier run left in the group)
                high = self.memory_high.get(s, 0)
                if h.version == 2:
                    _write(top / s / "memory.high", str(high) if high > 0 else "max")
                else:
                    _write(top / s / "memory.soft_limit_in_bytes", str(high) if high > 0 else "-1")

    def enter(self, service: str) -> None:
        """Move the calling process into the service's groups (run in the child before exec)."""
        for h in self.hier.values():
            _write(self.group(h) / service / "cgroup.procs", "0")

    def where(self, service: str) -> dict[str, str]:
        """controller -> the service's cgroup directory (for `memo status` and tests)."""
        return {c: str(self.group(h) / service) for c, h in self.hier.items()}

    def remove(self, wait_s: float = 3.0) -> None:
        """Remove the groups once the services have stopped (their children, killed with them, may take
        a moment to go; a group that still holds processes after ``wait_s`` stays)."""
        deadline = time.monotonic() + wait_s
        for h in self.hier.values():
            for d in self.group(h).glob("*/"):
                while time.monotonic() < deadline and _procs(d):
                    time.sleep(0.1)
        for h in self.hier.values():
            top = self.group(h)
            for d in sorted(top.glob("*/"), reverse=True) if top.is_dir() else []:
                if (d / "cgroup.procs").exists():
                    with contextlib.suppress(OSError):
                        d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _procs(d: Path) -> bool:
    try:
        return bool((d / "cgroup.procs").read_text().split())
    except OSError:
        return False


def usable() -> bool:
    return os.geteuid() == 0
