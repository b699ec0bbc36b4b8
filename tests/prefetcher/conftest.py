"""Fixtures for the prefetcher's tests: lab.py holds the real-kernel helpers (swap file, cgroup, hog)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import lab

PREFETCHER = lab.venv_bin("memo-prefetcher")


@pytest.fixture
def memo_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a memo-* process with its own run and data directories."""
    env = dict(os.environ)
    env.pop("MEMO_CONFIG", None)
    env["MEMO_PATHS__RUN_DIR"] = str(tmp_path / "run")
    env["MEMO_PATHS__DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture
def numpy_profile_files() -> list[str]:
    """The regular files a real program maps: the venv's python3 after `import numpy` (ended before
    the test, so that its mappings do not pin the pages)."""
    code = "import numpy, sys; print('ok', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout and proc.stdout.readline().strip() == "ok"
        files = []
        for line in Path(f"/proc/{proc.pid}/maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/") and parts[5] not in files:
                files.append(parts[5])
    finally:
        proc.kill()
        proc.wait()
    return [f for f in files if os.path.isfile(f)]


@pytest.fixture
def program_copy(numpy_profile_files: list[str], tmp_path: Path) -> list[str]:
    """Private copies (fsynced, on disk) of that program's files: other processes on this machine map
    the originals (libc, numpy), and mapped pages cannot be evicted, so only copies go reliably cold."""
    out = []
    for f in numpy_profile_files:
        dst = tmp_path / "root" / f.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
        with open(dst, "rb+") as fh:
            os.fsync(fh.fileno())
        out.append(str(dst))
    return out
