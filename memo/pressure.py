"""Memory pressure as the kernel reports it (PSI, /proc/pressure/memory): one parser for every service."""

from __future__ import annotations

from pathlib import Path

PSI_MEMORY = Path("/proc/pressure/memory")


def parse_psi(text: str) -> dict[str, dict[str, float]]:
    """'some avg10=0.00 avg60=0.00 avg300=0.00 total=0' lines -> {'some': {'avg10': 0.0, ...}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        out[kind] = {k: float(v) for k, v in (f.split("=", 1) for f in fields)}
    return out


def memory_some_avg10(path: Path = PSI_MEMORY) -> float | None:
    """% of the last ~10 s in which some task stalled on memory; None where the kernel has no PSI."""
    try:
        return parse_psi(path.read_text())["some"]["avg10"]
    except (OSError, KeyError, ValueError):
        return None
