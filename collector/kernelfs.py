"""The pseudo file systems eBPF needs: tracefs (tracepoints) and bpffs (pins).

Neither is mounted on a minimal VM; mounting them is what `mount -t tracefs|bpf` would do by hand.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)
TRACEFS = Path("/sys/kernel/tracing")
BPFFS = Path("/sys/fs/bpf")


def _mounted(path: Path, fstype: str) -> bool:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[1] == str(path) and parts[2] == fstype:
            return True
    return False


def _mount(fstype: str, path: Path) -> None:
    if _mounted(path, fstype):
        return
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", fstype, fstype, str(path)], check=True, capture_output=True)
    log.info("mounted %s at %s", fstype, path)


def ensure_tracefs() -> Path:
    """tracefs at /sys/kernel/tracing (bcc finds tracepoints there when debugfs is absent)."""
    if not (TRACEFS / "events").is_dir() and not Path("/sys/kernel/debug/tracing/events").is_dir():
        _mount("tracefs", TRACEFS)
    return TRACEFS


def ensure_bpffs() -> Path:
    _mount("bpf", BPFFS)
    return BPFFS


def tracepoint_format(category: str, event: str) -> str:
    """The tracepoint's format file ('' if the kernel lacks it)."""
    for root in (TRACEFS, Path("/sys/kernel/debug/tracing")):
        fmt = root / "events" / category / event / "format"
        if fmt.exists():
            return fmt.read_text()
    return ""
