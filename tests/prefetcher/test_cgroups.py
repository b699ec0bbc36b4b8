"""cgroup protection: a program's cgroup swappiness is lowered while it is predicted, and put back on
SIGTERM, and after SIGKILL by the next start (real memo-prefetcher processes, real cgroup v1)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefetcher import cgroups
from tests import lab
from tests.prefetcher.conftest import PREFETCHER

pytestmark = pytest.mark.root


def wait_for(pred, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A process of a program of its own (a copy of sleep) in a fresh v1 memory cgroup, swappiness 60."""
    exe = tmp_path / "memo-test-app"
    shutil.copy2("/usr/bin/sleep", exe)
    with lab.memory_cgroup("swappiness") as cg:
        (cg / "memory.swappiness").write_text("60")
        proc = subprocess.Popen([str(exe), "300"])
        try:
            (cg / "cgroup.procs").write_text(str(proc.pid))
            yield str(exe), cg
        finally:
            proc.kill()
            proc.wait()


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PREFETCHER, "--poll-interval", "0.2", "--psi-max", "100", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def swappiness(cg: Path) -> int:
    return int((cg / "memory.swappiness").read_text())


def test_lowered_then_restored_on_sigterm(sleeper: tuple[str, Path], memo_env: dict[str, str]) -> None:
    exe, cg = sleeper
    p = start(memo_env, "--app", exe)
    try:
        assert wait_for(lambda: swappiness(cg) == 10), "swappiness was not lowered"
        state = json.loads((Path(memo_env["MEMO_PATHS__DATA_DIR"]) / "prefetcher-state.json").read_text())
        assert [(c["old"], c["new"]) for c in state["changes"]] == [("60", "10")]
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=15)
    finally:
        p.kill()
    assert p.returncode == 0, out
    assert swappiness(cg) == 60, out
    assert "restored" in out


def test_restored_after_sigkill_by_next_start(sleeper: tuple[str, Path], memo_env: dict[str, str]) -> None:
    exe, cg = sleeper
    p = start(memo_env, "--app", exe)
    try:
        assert wait_for(lambda: swappiness(cg) == 10)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        p.kill()
    assert swappiness(cg) == 10  # a crash leaves it changed...
    p = start(memo_env, "--app", "/nonexistent/other-app")  # ...the next start puts it back
    try:
        assert wait_for(lambda: swappiness(cg) == 60), "not restored by the next start"
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=15)
    finally:
        p.kill()
    assert "previous run" in out, out
    # --restore alone does the same (for a unit's ExecStopPost, or by hand)
    q = start(memo_env, "--app", exe)
    try:
        assert wait_for(lambda: swappiness(cg) == 10)
        q.send_signal(signal.SIGKILL)
        q.wait(timeout=10)
    finally:
        q.kill()
    subprocess.run([PREFETCHER, "--restore"], env=memo_env, check=True, capture_output=True, timeout=30)
    assert swappiness(cg) == 60


def test_v2_memory_low_journalled(tmp_path: Path) -> None:
    """cgroup v2 has no memory controller enabled on this machine: the v2 logic runs on a directory
    shaped like a v2 cgroup (memory.current / memory.low files)."""
    d = tmp_path / "cg"
    d.mkdir()
    (d / "memory.current").write_text("123456\n")
    (d / "memory.low").write_text("0\n")
    tuner = cgroups.CgroupTuner(tmp_path / "state.json", swappiness_low=10)
    assert tuner.protect(cgroups.Cgroup(d, 2), "app")
    assert (d / "memory.low").read_text() == "123456"
    again = cgroups.CgroupTuner(tmp_path / "state.json", swappiness_low=10)  # as after a crash
    assert again.restore() == 1
    assert (d / "memory.low").read_text() == "0"
