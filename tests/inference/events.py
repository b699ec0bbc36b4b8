"""Event and batch builders for the inference tests (plain dicts, as a collector sends them)."""

from __future__ import annotations

import itertools
import json

_ts = itertools.count(1_000_000_000, 1_000_000)


def exec_ev(pid: int, ppid: int, exe: str, argv: list[str] | None = None, uid: int = 1000,
            wall_ts: float = 0.0) -> dict:
    return {"type": "exec", "ts_ns": next(_ts), "pid": pid, "ppid": ppid, "uid": uid, "cgroup_id": 1,
            "comm": exe.rsplit("/", 1)[-1][:15], "filename": exe, "exe": exe, "argv": argv or [exe],
            "wall_ts": wall_ts}


def fork_ev(pid: int, ppid: int, uid: int = 1000) -> dict:
    return {"type": "fork", "ts_ns": next(_ts), "pid": pid, "ppid": ppid, "uid": uid, "comm": "x"}


def exit_ev(pid: int) -> dict:
    return {"type": "exit", "ts_ns": next(_ts), "pid": pid, "exit_code": 0, "minflt": 1, "majflt": 0,
            "swapin": 0}


def page_ev(pid: int, path: str, index: int, nr: int = 1, ino: int = 7) -> dict:
    return {"type": "pagecache", "ts_ns": next(_ts), "pid": pid, "dev": 8, "ino": ino, "index": index,
            "nr_pages": nr, "path": path}


def batch(source: str, seq: int, events: list[dict]) -> bytes:
    return json.dumps({"source_id": source, "seq": seq, "events": events}).encode()


def session(apps: list[str], uid: int = 1000, shell_pid: int = 100, start_pid: int = 1000,
            t0: float = 1.7e9) -> list[dict]:
    """An interactive shell that runs ``apps`` one after another (each a launch)."""
    evs = [exec_ev(shell_pid, 1, "/usr/bin/bash", ["-bash"], uid=uid)]
    for i, app in enumerate(apps):
        pid = start_pid + i
        evs += [fork_ev(pid, shell_pid, uid), exec_ev(pid, shell_pid, app, uid=uid, wall_ts=t0 + 60 * i),
                exit_ev(pid)]
    return evs
