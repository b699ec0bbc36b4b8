"""Naming the files a launch opens (bpf/files.c, collector/enrich.py): the kernel's open record carries
the opened file's (dev, ino), so that a file the collector has already named by the kernel's name costs
it no look at /proc while the launch runs, and a file known only by the name it was opened by (a
symlink, a file closed before the collector looked) still gets the kernel's name on a later open."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import enrich
from collector.enrich import kernel_dev
from memo import config as memo_config


def _key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return kernel_dev(st.st_dev), st.st_ino


def test_a_file_known_by_the_kernels_name_is_not_looked_up_again(tmp_path: Path) -> None:
    real = tmp_path / "lib.so"
    real.write_bytes(b"x" * 4096)
    files = enrich.FileIndex()
    with open(real, "rb") as f:
        files.learn_open(os.getpid(), f.fileno(), str(real), _key(real))
    assert files.path(*_key(real)) == str(real)
    # the same file opened again under another name, by a process gone since: nothing is resolved
    files.learn_open(2**22 + 1, 3, str(tmp_path / "other-name"), _key(real))
    assert files.path(*_key(real)) == str(real)


def test_a_name_opened_through_a_symlink_gives_way_to_the_kernels_name(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "data.bin"
    real.write_bytes(b"x" * 4096)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    via_link = tmp_path / "link" / "data.bin"
    files = enrich.FileIndex()
    # the first open was closed before the collector looked: only the name it was opened by is known
    files.learn_open(os.getpid(), 10_000, str(via_link), _key(real))
    assert files.path(*_key(real)) == str(via_link)
    # a later open whose fd can be read: the guess is not trusted, the fd's (link-free) name wins
    with open(via_link, "rb") as f:
        files.learn_open(os.getpid(), f.fileno(), str(via_link), _key(real))
    assert files.path(*_key(real)) == str(real)


@pytest.fixture
def bpf_source(collector_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator:
    from collector import sources

    for k, v in collector_env.items():
        monkeypatch.setenv(k, v)
    src = sources.BPFSource(memo_config.load().collector)
    try:
        yield src
    finally:
        src.close()


@pytest.mark.root
@pytest.mark.bpf
def test_open_records_carry_the_opened_files_dev_and_ino(bpf_source, tmp_path: Path) -> None:
    data = tmp_path / "opened.bin"
    data.write_bytes(b"y" * 8192)
    seen: list[tuple[int, int, str, tuple[int, int] | None]] = []
    index = bpf_source.enricher.files
    learn = index.learn_open

    def record(pid: int, fd: int, name: str, key: tuple[int, int] | None = None) -> None:
        seen.append((pid, fd, name, key))
        learn(pid, fd, name, key)

    index.learn_open = record  # observe what the kernel sent, then handle it as usual
    child = subprocess.run([sys.executable, "-c", f"open({str(data)!r}, 'rb').read()"], check=True)
    assert child.returncode == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(name == str(data) for _, _, name, _ in seen):
        bpf_source.loaded.bpf.ring_buffer_consume()
        time.sleep(0.05)
    mine = [s for s in seen if s[2] == str(data)]
    assert mine, f"no open record names {data}; got {[s[2] for s in seen][:10]}"
    assert all(key == _key(data) for _, _, _, key in mine)
    assert index.path(*_key(data)) == str(data)
