"""Fixtures for the collector's kernel tests: a real `memo-collector` process, started and stopped
the way a user would (SIGTERM), reading what it prints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = [sys.executable, "-m", "collector.main"]


class Collector:
    """`memo-collector ARGS` as a subprocess; stdout kept in memory, stderr in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._err = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(COLLECTOR + args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)

    def stderr(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "memo-collector: ready" in self.stderr():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited {self.proc.returncode}:\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"collector not ready after {timeout} s:\n{self.stderr()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
            self._err.close()
        return rc

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]


@pytest.fixture
def collector_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a collector that touches nothing outside tmp_path but its own pin dir."""
    env = dict(os.environ)
    env.update({
        "MEMO_PATHS__RUN_DIR": str(tmp_path / "run"),
        "MEMO_PATHS__DATA_DIR": str(tmp_path / "data"),
        "MEMO_COLLECTOR__BPF_PIN_DIR": f"/sys/fs/bpf/memo-test-{os.getpid()}",
        "PYTHONPATH": str(REPO),
    })
    env.pop("MEMO_CONFIG", None)
    return env


@pytest.fixture
def start_collector(tmp_path: Path, collector_env: dict[str, str]) -> Iterator:
    """start_collector(args, env=None) -> a ready Collector; any left running is stopped at teardown."""
    started: list[Collector] = []

    def start(args: list[str], env: dict[str, str] | None = None, ready: bool = True) -> Collector:
        c = Collector(args, env or collector_env, tmp_path / f"collector-{len(started)}.log")
        started.append(c)
        if ready:
            c.wait_ready()
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.stop()
    pins = Path(collector_env["MEMO_COLLECTOR__BPF_PIN_DIR"])
    if pins.exists():  # a collector that crashed leaves its pins: a test failure, but clean up
        shutil.rmtree(pins)
    from collector.loader import lock_path

    lock_path(pins).unlink(missing_ok=True)
