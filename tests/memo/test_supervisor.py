"""The supervisor's housekeeping on real files: logs stay bounded while their writers keep writing."""

from __future__ import annotations

import os
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
