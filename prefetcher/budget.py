"""How much the prefetcher may bring into memory this cycle, and whether it may act at all.

Two signals: MemAvailable (the kernel's estimate of memory usable without swapping) gives the byte
budget, a share of it per cycle; PSI memory "some" (/proc/pressure/memory, present on this kernel) says
whether tasks are already stalling on memory — then prefetching would only add to the reclaim it
competes with, so the prefetcher does nothing. The share of time stalled is taken over the interval
since the previous reading (from PSI's `total`) when that is recent, else from avg10: avg10 decays
over ~10 s, so after a burst of pressure it would hold the prefetcher back long after memory is free
again. Kernels without PSI (CONFIG_PSI=n or psi=0) fall back to the rate of major faults plus swap-ins
from /proc/vmstat over the last cycle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from memo.pressure import PSI_MEMORY, parse_psi
from prefetcher import activity

MEMINFO = Path("/proc/meminfo")


def meminfo(path: Path = MEMINFO) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


@dataclass
class Pressure:
    """One reading of the pressure signal, with what it was and why it says stop."""

    source: str
    value: float
    limit: float

    @property
    def high(self) -> bool:
        return self.value > self.limit

    def __str__(self) -> str:
        return f"{self.source}={self.value:.2f} (limit {self.limit:.2f})"


INTERVAL_MIN_S = 0.2
INTERVAL_MAX_S = 10.0


@dataclass
class PressureGauge:
    """PSI 'some' (% of time stalled; over the last interval when recent, else avg10) where the kernel
    has it; else major faults + swap-ins per second (vmstat)."""

    limit: float
    psi_path: Path = PSI_MEMORY
    fault_rate_limit: float = 2000.0
    _last: tuple[float, int] | None = field(default=None, init=False)
    _last_psi: tuple[float, float] | None = field(default=None, init=False)  # (monotonic s, total us)

    def read(self) -> Pressure:
        try:
            some = parse_psi(self.psi_path.read_text())["some"]
        except (OSError, KeyError, ValueError):
            return self._fault_rate()
        now, last = time.monotonic(), self._last_psi
        self._last_psi = (now, some["total"])
        if last is not None and INTERVAL_MIN_S <= now - last[0] <= INTERVAL_MAX_S:
            share = 100.0 * (some["total"] - last[1]) / 1e6 / (now - last[0])
            return Pressure("psi_some_share", max(0.0, share), self.limit)
        return Pressure("psi_some_avg10", some["avg10"], self.limit)

    def _fault_rate(self) -> Pressure:
        vm = activity.vmstat()
        count = vm.get("pgmajfault", 0) + vm.get("pswpin", 0)
        now = time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (count - self._last[1]) / (now - self._last[0])
        self._last = (now, count)
        return Pressure("majfault+pswpin_per_s", rate, self.fault_rate_limit)


@dataclass
class Budget:
    """Bytes the prefetcher may still bring in this cycle: a share of MemAvailable, spent as it goes."""

    total: int
    spent: int = 0

    @classmethod
    def from_meminfo(cls, share: float, cap: int | None = None) -> Budget:
        total = int(meminfo().get("MemAvailable", 0) * share)
        return cls(min(total, cap) if cap is not None else total)

    @property
    def left(self) -> int:
        return max(0, self.total - self.spent)

    def take(self, nbytes: int) -> int:
        """Grant up to nbytes (what is left), and count it as spent."""
        granted = min(nbytes, self.left)
        self.spent += granted
        return granted
