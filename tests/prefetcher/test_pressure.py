"""Under real memory pressure (PSI some avg10 above the threshold) the prefetcher does nothing and
says so in its log; with the pressure below the threshold the same command acts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from memo import pressure
from memo.contract import AppProfile, ProfileRange
from prefetcher import budget, syscalls
from tests import lab
from tests.prefetcher.conftest import PREFETCHER

pytestmark = pytest.mark.root
MB = 1 << 20


def test_psi_is_there_and_parses() -> None:
    assert pressure.PSI_MEMORY.exists(), \
        "this kernel has no /proc/pressure/memory: the vmstat fallback is used"
    p = budget.PressureGauge(limit=5.0).read()
    assert p.source == "psi_some_avg10" and p.value >= 0
    assert pressure.parse_psi("some avg10=1.50 avg60=0.00 avg300=0.00 total=7\n")["some"]["avg10"] == 1.5


def test_vmstat_fallback_without_psi(tmp_path: Path) -> None:
    g = budget.PressureGauge(limit=5.0, psi_path=tmp_path / "absent")
    assert g.read().source == "majfault+pswpin_per_s"
    assert not g.read().high


def test_does_nothing_under_pressure(tmp_path: Path, memo_env: dict[str, str]) -> None:
    data = tmp_path / "file"
    data.write_bytes(os.urandom(8 * MB))
    fd = os.open(data, os.O_RDONLY)
    os.fsync(fd)
    syscalls.drop_file_cache(fd)
    prof = tmp_path / "profile.json"
    ranges = [ProfileRange(path=str(data), offset=0, length=8 * MB)]
    prof.write_text(AppProfile(app="/usr/bin/true", launches=1, bytes=1, ranges=ranges).model_dump_json())
    cmd = [PREFETCHER, "--once", "--profile", str(prof)]
    try:
        with lab.thrashing("pressure"):
            out = subprocess.run(cmd + ["--psi-max", "1.0"], env=memo_env, capture_output=True, text=True,
                                 timeout=60)
        assert out.returncode == 0, out.stderr
        assert "above the threshold: doing nothing" in out.stderr, out.stderr
        assert syscalls.cachestat(fd).nr_cache == 0, "it read ahead under pressure"

        acted = subprocess.run(cmd + ["--psi-max", "100"], env=memo_env, capture_output=True, text=True,
                               timeout=60)
        assert "read ahead" in acted.stderr, acted.stderr
        assert syscalls.cachestat(fd).nr_cache * syscalls.PAGE_SIZE == 8 * MB
    finally:
        os.close(fd)
