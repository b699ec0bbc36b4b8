"""The `memo` CLI's own logic: every subcommand has help with examples, errors say what to do next,
pid files are trusted only for the right process, and `memo trace` prints readable lines."""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memo import runtime
from memo.trace import Printer

MEMO = [sys.executable, "-m", "memo.cli"]
REPO = Path(__file__).resolve().parents[2]
NEW = ("up", "down", "status", "predict", "profile", "explain", "trace")


@pytest.mark.parametrize("name", NEW)
def test_every_subcommand_has_help_with_examples(name: str) -> None:
    r = subprocess.run(MEMO + [name, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "examples:" in r.stdout and f"memo {name}" in r.stdout


def test_queries_say_how_to_start_inference(tmp_path: Path) -> None:
    """No service in this run dir: each query exits 1 with the next step, not a traceback."""
    env = {**os.environ, "MEMO_PATHS__RUN_DIR": str(tmp_path / "run"), "MEMO_PATHS__DATA_DIR": str(tmp_path)}
    env.pop("MEMO_CONFIG", None)
    for args in (["predict"], ["profile", "vim"], ["explain", "vim"], ["status", "--interval", "0"]):
        r = subprocess.run(MEMO + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "inference is not running" in r.stdout + r.stderr and "make up" in r.stdout + r.stderr
        assert "Traceback" not in r.stderr


def test_down_when_nothing_runs(tmp_path: Path) -> None:
    env = {**os.environ, "MEMO_PATHS__RUN_DIR": str(tmp_path / "run")}
    env.pop("MEMO_CONFIG", None)
    r = subprocess.run(MEMO + ["down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "not running" in r.stdout


def test_pid_files_are_checked_against_the_process(tmp_path: Path) -> None:
    run = runtime.RunDir(tmp_path)
    run.make()
    runtime.write_pid(run.pid_file("collector"), os.getpid())
    pid = runtime.read_pid(run.pid_file("collector"))
    assert pid == os.getpid()
    assert runtime.is_alive(pid)
    assert not runtime.is_alive(pid, "collector")  # pytest is not memo-collector: a recycled pid
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "memo-x"])
    try:
        assert not runtime.runs(sleeper.pid, "collector")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not runtime.is_alive(sleeper.pid)


def test_supervisor_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    run = runtime.RunDir(tmp_path)
    assert runtime.lock_holder(run) is None
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from memo import runtime; "
        f"assert runtime.take_lock(runtime.RunDir(Path({str(tmp_path)!r}))) is not None; "
        "print('locked', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert runtime.lock_holder(run) == holder.pid
        assert runtime.take_lock(run) is None
    finally:
        holder.kill()
        holder.wait()
    assert runtime.lock_holder(run) is None  # the kernel dropped it with the process
    fd = runtime.take_lock(run)
    assert fd is not None
    os.close(fd)


def test_trace_lines() -> None:
    p = Printer(io.StringIO(), uid=None, exits=True)
    ex = p.line({"type": "exec", "ts_ns": 1_000_000_000, "pid": 42, "ppid": 1, "uid": 1000, "cgroup_id": 1,
                 "comm": "vim", "filename": "/usr/bin/vim", "exe": "/usr/bin/vim.basic",
                 "argv": ["vim", "notes.txt"]})
    assert ex is not None and "EXEC" in ex and "/usr/bin/vim.basic: vim notes.txt" in ex and " 42 " in ex
    end = p.line({"type": "exit", "ts_ns": 1_250_000_000, "pid": 42, "exit_code": 0, "minflt": 10,
                  "majflt": 2, "swapin": 0})
    assert end is not None and "EXIT" in end and "ran 250.0 ms" in end and "majflt 2" in end
    assert p.line({"type": "exit", "ts_ns": 2, "pid": 7, "exit_code": 0, "minflt": 0, "majflt": 0,
                   "swapin": 0}) is None  # an exit whose exec was not traced
    assert "3 records dropped" in (p.line({"type": "lost", "ts_ns": 3, "pid": 0, "count": 3}) or "")
    hostile = p.line({"type": "exec", "ts_ns": 1_300_000_000, "pid": 43, "ppid": 1, "uid": 1000,
                      "cgroup_id": 1,
                      "comm": "x\x1b", "filename": "/x", "exe": "/x",
                      "argv": ["x", "\x1b]0;owned\x07", "two\nlines", "a b"]})
    assert hostile is not None and "\x1b" not in hostile and "\n" not in hostile, hostile
    assert r"'\x1b]0;owned\x07' 'two\x0alines' 'a b'" in hostile
    only = Printer(io.StringIO(), uid=0, exits=False)
    assert only.line({"type": "exec", "ts_ns": 1, "pid": 5, "ppid": 1, "uid": 1000, "cgroup_id": 1,
                      "comm": "x", "filename": "/x"}) is None


def test_a_lock_file_removed_by_its_exiting_holder_is_no_lock(tmp_path: Path) -> None:
    """The supervisor removes its lock file as it exits; a lock taken on that file meanwhile is retaken."""
    run = runtime.RunDir(tmp_path)
    fd = runtime.take_lock(run)
    assert fd is not None
    stale = os.open(run.lock_file, os.O_RDWR)  # opened before the holder removed it
    run.lock_file.unlink()
    os.close(fd)
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a late starter locks the removed file...
    try:
        fresh = runtime.take_lock(run)  # ...and still is not the supervisor: the path's file decides
        assert fresh is not None and run.lock_file.exists()
        os.close(fresh)
    finally:
        os.close(stale)
