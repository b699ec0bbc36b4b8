"""Shield the memory of programs about to be used: lower their cgroup's swappiness, and put it back.

cgroup v1: memory.swappiness of the program's memory cgroup. cgroup v2 has no per-cgroup swappiness:
memory.low (set to the cgroup's current usage) protects it from reclaim, and memory.reclaim
"N swappiness=S" is the v2 way to reclaim proactively at a chosen swappiness.

Every change is journalled before it is made: the old value goes into a state file (atomic write,
fsync) under data_dir, so a SIGTERM restores it, and so does the next start after a crash or SIGKILL.
The root cgroup is never touched (its swappiness is the whole machine's).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memo import helpers, procfs

log = logging.getLogger(__name__)

MOUNTS = Path("/proc/mounts")


def _mounts() -> tuple[Path | None, Path | None]:
    """(cgroup v1 memory mount, cgroup2 mount) of this machine."""
    v1 = v2 = None
    try:
        for line in MOUNTS.read_text().splitlines():
            _, where, fstype, opts, *_ = line.split()
            if fstype == "cgroup" and "memory" in opts.split(",") and v1 is None:
                v1 = Path(where)
            elif fstype == "cgroup2" and v2 is None:
                v2 = Path(where)
    except OSError:
        pass
    return v1, v2


@dataclass(frozen=True)
class Cgroup:
    """A non-root memory cgroup of a process: its directory and hierarchy version."""

    path: Path
    version: int


def cgroup_of(pid: int) -> Cgroup | None:
    """The memory cgroup that governs pid (v1 memory controller first, else v2 with memory enabled)."""
    v1, v2 = _mounts()
    lines = procfs.text(pid, "cgroup").splitlines()
    if not lines:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if rel == "/":
            continue
        if v1 is not None and "memory" in controllers.split(","):
            d = v1 / rel.lstrip("/")
            if (d / "memory.swappiness").exists():
                return Cgroup(d, 1)
        if v2 is not None and controllers == "":
            d = v2 / rel.lstrip("/")
            if (d / "memory.low").exists():
                return Cgroup(d, 2)
    return None


@dataclass
class Change:
    """One file write the prefetcher made, with the value to put back."""

    file: str
    old: str
    new: str
    app: str
    ts: float


class CgroupTuner:
    """Applies and journals cgroup changes; restore() puts every journalled value back."""

    def __init__(self, state_file: Path, swappiness_low: int, dry_run: bool = False) -> None:
        self.state_file = state_file
        self.swappiness_low = swappiness_low
        self.dry_run = dry_run
        self.changes: dict[str, Change] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.state_file.read_text())
            self.changes = {c["file"]: Change(**c) for c in data.get("changes", [])}
        except FileNotFoundError:
            self.changes = {}
        except (OSError, ValueError, TypeError) as exc:
            log.error("unreadable state file %s (%s): nothing to restore from it", self.state_file, exc)
            self.changes = {}

    def _save(self) -> None:
        if self.dry_run:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        helpers.atomic_write(self.state_file, json.dumps(
            {"pid": os.getpid(), "changes": [asdict(c) for c in self.changes.values()]}))

    def _write(self, file: Path, new: str, app: str) -> bool:
        key = str(file)
        try:
            old = file.read_text().strip()
        except OSError:
            return False
        if key in self.changes or old == new:
            return False
        if self.dry_run:
            print(f"dry-run: would write {new} to {file} (now {old}) for {app}", flush=True)
            return True
        self.changes[key] = Change(key, old, new, app, time.time())
        self._save()  # journal first: a crash between here and the write restores a value never changed
        try:
            file.write_text(new)
        except OSError as exc:
            log.warning("cannot write %s to %s: %s", new, file, exc)
            del self.changes[key]
            self._save()
            return False
        log.info("set %s = %s (was %s) for %s", file, new, old, app)
        return True

    def protect(self, cg: Cgroup, app: str) -> bool:
        """Lower swappiness (v1) or raise memory.low to the current usage (v2) of a program's cgroup."""
        if cg.version == 1:
            f = cg.path / "memory.swappiness"
            try:
                if int(f.read_text()) <= self.swappiness_low:
                    return False
            except (OSError, ValueError):
                return False
            return self._write(f, str(self.swappiness_low), app)
        try:
            usage = int((cg.path / "memory.current").read_text())
            low = (cg.path / "memory.low").read_text().strip()
        except (OSError, ValueError):
            return False
        if low != "max" and int(low) >= usage:
            return False
        return self._write(cg.path / "memory.low", str(usage), app)

    def restore_app(self, app: str) -> int:
        """Put back the values changed for one app (it is no longer predicted)."""
        return self._restore([c for c in self.changes.values() if c.app == app])

    def restore(self) -> int:
        """Put back every journalled value (SIGTERM, and at start after a crash)."""
        return self._restore(list(self.changes.values()))

    def _restore(self, changes: list[Change]) -> int:
        n = 0
        for c in changes:
            try:
                Path(c.file).write_text(c.old)
                log.info("restored %s = %s", c.file, c.old)
                n += 1
            except FileNotFoundError:
                log.info("%s is gone (cgroup removed): nothing to restore", c.file)
            except OSError as exc:
                log.warning("cannot restore %s = %s: %s (kept in the state file)", c.file, c.old, exc)
                continue
            self.changes.pop(c.file, None)
        self._save()
        return n

    @property
    def apps(self) -> set[str]:
        return {c.app for c in self.changes.values()}


def reclaim(cg: Cgroup, nbytes: int, swappiness: int) -> bool:
    """cgroup v2 proactive reclaim of nbytes at the given swappiness (0 = file pages only)."""
    if cg.version != 2:
        return False
    try:
        (cg.path / "memory.reclaim").write_text(f"{nbytes} swappiness={swappiness}")
        return True
    except OSError as exc:  # EAGAIN when less could be reclaimed than asked
        log.info("memory.reclaim %s: %s", cg.path, exc)
        return False
