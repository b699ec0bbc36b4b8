"""The command line: --help ends with examples; --dry-run prints what it would do and changes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from memo.contract import AppProfile, ProfileRange
from prefetcher import syscalls
from tests.prefetcher.conftest import PREFETCHER


def test_help_has_examples() -> None:
    out = subprocess.run([PREFETCHER, "--help"], capture_output=True, text=True, check=True).stdout
    assert "examples:" in out and "--dry-run" in out


@pytest.mark.root
def test_dry_run_prints_and_changes_nothing(tmp_path: Path, memo_env: dict[str, str]) -> None:
    data = tmp_path / "f"
    data.write_bytes(os.urandom(1 << 20))
    fd = os.open(data, os.O_RDONLY)
    os.fsync(fd)
    syscalls.drop_file_cache(fd)
    prof = tmp_path / "p.json"
    ranges = [ProfileRange(path=str(data), offset=0, length=1 << 20)]
    prof.write_text(AppProfile(app="/usr/bin/true", launches=1, bytes=1, ranges=ranges).model_dump_json())
    out = subprocess.run([PREFETCHER, "--dry-run", "--once", "--psi-max", "100", "--profile", str(prof)],
                         env=memo_env, capture_output=True, text=True, timeout=60)
    try:
        assert out.returncode == 0, out.stderr
        assert "dry-run: would read ahead 1048576 bytes in 1 files for /usr/bin/true" in out.stdout, out
        assert syscalls.cachestat(fd).nr_cache == 0
        assert not (Path(memo_env["MEMO_PATHS__DATA_DIR"]) / "prefetcher-state.json").exists()
    finally:
        os.close(fd)
