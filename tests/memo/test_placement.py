"""MEMO's services in cgroups of their own (real cgroups of this kernel: v1 cpu/blkio/memory here)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memo import placement

pytestmark = pytest.mark.root
MB = 1 << 20


def test_hierarchies_prefer_an_enabled_v2_controller(tmp_path: Path) -> None:
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu io\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {v2} cgroup2 rw 0 0\n"
                      f"cgroup {tmp_path}/cpu cgroup rw,nosuid,cpu 0 0\n"
                      f"cgroup {tmp_path}/memory cgroup rw,memory 0 0\n")
    h = placement.hierarchies(mounts)
    assert (h["cpu"].version, h["io"].version, h["memory"].version) == (2, 2, 1)
    assert h["memory"].root == tmp_path / "memory"


@pytest.fixture
def placed() -> Iterator[placement.Placement]:
    if os.geteuid() != 0:
        pytest.skip("cgroups need root")
    if not placement.hierarchies():
        pytest.skip("no cpu, io or memory cgroup controller on this kernel")
    p = placement.Placement.make(("learn", "act"), cpu_weight=10, io_weight=10,
                                 memory_high={"learn": 200 * MB}, name=f"memo-test-{os.getpid()}",
                                 cpu_idle=True)
    yield p
    p.remove()


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_a_users_program_takes_the_cpu_from_memos_idle_group(placed: placement.Placement) -> None:
    """The kernel fact cpu_idle relies on: with both spinning on one CPU, a program outside the group
    gets nearly all of it (a weight of 10 against 100 would leave MEMO about a tenth)."""
    if not placed.cpu_idle:
        pytest.skip("this kernel has no cpu.idle (Linux < 5.15)")
    cpu = min(os.sched_getaffinity(0))
    spin = ["python3", "-c", "while True: pass"]
    pin = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731
    memo = subprocess.Popen(spin, preexec_fn=lambda: (pin(), placed.enter("learn")))
    user = subprocess.Popen(spin, preexec_fn=pin)
    try:
        time.sleep(0.5)  # both started
        m0, u0 = _cpu_ticks(memo.pid), _cpu_ticks(user.pid)
        time.sleep(2.0)
        m, u = _cpu_ticks(memo.pid) - m0, _cpu_ticks(user.pid) - u0
    finally:
        for p in (memo, user):
            p.kill()
            p.wait()
    assert u > 0 and m / (m + u) < 0.03, f"MEMO's group got {m} ticks, the user's program {u}"


def test_a_service_runs_in_its_own_low_weight_groups_that_are_removed_after(
        placed: placement.Placement) -> None:
    child = subprocess.Popen(["sleep", "30"], preexec_fn=lambda: placed.enter("learn"))
    try:
        cgroups = Path(f"/proc/{child.pid}/cgroup").read_text()
        for c, d in placed.where("learn").items():
            h = placed.hier[c]
            rel = "/" + str(Path(d).relative_to(h.root))
            assert rel in cgroups, (c, rel, cgroups)
            assert str(child.pid) in (Path(d) / "cgroup.procs").read_text().split()
        top = {c: Path(d).parent for c, d in placed.where("learn").items()}
        if "cpu" in top:
            h = placed.hier["cpu"]
            name = "cpu.weight" if h.version == 2 else "cpu.shares"
            if placed.cpu_idle:  # the idle class's own weight replaces the group's
                assert (top["cpu"] / "cpu.idle").read_text().strip() == "1"
            else:
                assert int((top["cpu"] / name).read_text()) == (10 if h.version == 2 else 102)
        if "memory" in top:
            h = placed.hier["memory"]
            name = "memory.high" if h.version == 2 else "memory.soft_limit_in_bytes"
            assert int((top["memory"] / "learn" / name).read_text()) == 200 * MB
            assert (top["memory"] / "act" / name).read_text().strip() in ("max", str(2**63 - 4096))
    finally:
        child.kill()
        child.wait()
    placed.remove()
    assert not any(Path(d).parent.exists() for d in placed.where("learn").values())
