"""The supervisor's housekeeping on real files and processes: logs stay bounded while their writers keep
writing; the idle loop sleeps until a child exits or a duty is due."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from memo.config import Config, PathsConfig, ServicesConfig
from memo.supervisor import Supervisor


def test_a_log_past_its_bound_is_kept_once_and_started_again(tmp_path: Path) -> None:
    cfg = Config(paths=PathsConfig(run_dir=tmp_path / "run", data_dir=tmp_path / "data"),
                 services=ServicesConfig(log_max_bytes=1000))
    sup = Supervisor(cfg)
    sup.run.make()
    log = sup.run.log_file("collector")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # as the child holds it
    os.write(fd, b"old line\n" * 200)
    sup.rotate_logs()
    os.write(fd, b"new line\n")
    os.close(fd)
    assert log.read_bytes() == b"new line\n", "the writer goes on at the start of the emptied file"
    assert (log.parent / "collector.log.1").read_bytes() == b"old line\n" * 200
    small = sup.run.log_file("inference")
    small.write_bytes(b"x" * 10)
    sup.rotate_logs()
    assert small.read_bytes() == b"x" * 10 and not (log.parent / "inference.log.1").exists()
    assert oct(os.stat(log.parent).st_mode & 0o777) == "0o700", "logs name users' programs: root's alone"


def _switches() -> int:
    """This thread's voluntary context switches: one per sleep."""
    status = Path("/proc/thread-self/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def test_the_idle_loop_sleeps_until_a_child_exits_or_something_is_due(tmp_path: Path) -> None:
    """No timer ticks while every service runs (they faulted the supervisor back in under memory
    pressure): the wait ends when a child's pidfd says it exited, else when the next duty is due."""
    cfg = Config(paths=PathsConfig(run_dir=tmp_path / "run", data_dir=tmp_path / "data"),
                 services=ServicesConfig(watchdog_s=0))
    sup = Supervisor(cfg)
    sup.run.make()
    children = list(sup.children.values())
    try:
        for child, seconds in zip(children, ("60", "60", "0.6"), strict=True):
            child.proc = subprocess.Popen(["sleep", seconds])
            child.pidfd = os.pidfd_open(child.proc.pid)
            child.state = "running"
        t0, s0 = time.monotonic(), _switches()
        sup._wait(next_rotate=t0 + 30)
        waited = time.monotonic() - t0
        assert 0.5 < waited < 10, f"woke after {waited:.2f} s: on a tick, or not at the child's exit"
        assert _switches() - s0 <= 3, "slept in one wait"
        assert sup.reap(children[2]) and children[2].pidfd is None
        children[2].state = "running"  # as if restarted at once, with nothing to wait for
        t0 = time.monotonic()
        sup._wait(next_rotate=t0 + 0.8)
        assert 0.7 < time.monotonic() - t0 < 10, "the next duty ends the wait"
    finally:
        for child in children:
            if child.proc is not None:
                child.proc.kill()
                child.proc.wait()
            child.forget()
