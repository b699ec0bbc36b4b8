"""Started as root (as `memo up` starts it), inference binds its sockets, then runs as the memo user,
which owns <data_dir>/inference and nothing else (inference/runas.py). On the real service, real users."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.store import Store
from tests.inference.conftest import Service
from tests.inference.events import batch, session

try:
    MEMO = pwd.getpwnam("memo")
except KeyError:
    MEMO = None
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root"),
    pytest.mark.skipif(MEMO is None, reason="no user memo (`make setup` creates it as root)"),
]


def _uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")


@pytest.fixture
def root() -> Iterator[Path]:
    """A folder the memo user can pass through (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="memo-runas-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_inference_started_as_root_runs_as_memo_and_owns_only_its_folder(root: Path) -> None:
    assert MEMO is not None
    data = root / "data"
    data.mkdir(mode=0o700)
    legacy = Store(data / "inference.sqlite3")  # an older MEMO's database, directly in data_dir
    legacy.close()
    neighbour = data / "spool"  # the collector's, beside it: root's, and stays so
    neighbour.mkdir(mode=0o700)
    (root / "secret").write_text("root's")
    own = data / "inference"
    own.mkdir(mode=0o700)
    os.link(root / "secret", own / "planted")  # a second link to a root file: never handed over

    svc = Service(root, MEMO_INFERENCE__RUN_AS="memo")
    svc.start()
    try:
        events = session(["/usr/bin/vim", "/usr/bin/git"] * 3, uid=1000)
        svc.unix.post("/v1/events", content=batch("r", 1, events)).raise_for_status()
        svc.wait_launches(1000, 6)
        assert svc.proc is not None
        assert _uids(svc.proc.pid) == [MEMO.pw_uid] * 4
        assert svc.tcp.get("/healthz").json()["detail"]["user"] == "memo"
        assert svc.unix.get("/v1/predictions", params={"uid": 1000}).json()["predictions"]
        assert not (data / "inference.sqlite3").exists(), "the old database moves into data/inference"
        db = svc.db
        assert (db.stat().st_uid, stat.S_IMODE(db.stat().st_mode)) == (MEMO.pw_uid, 0o600)
        assert (own.stat().st_uid, stat.S_IMODE(own.stat().st_mode)) == (MEMO.pw_uid, 0o700)
        assert (data.stat().st_uid, stat.S_IMODE(data.stat().st_mode)) == (0, 0o711)
        assert neighbour.stat().st_uid == 0 and (root / "secret").stat().st_uid == 0
        assert svc.socket.stat().st_uid == 0, "bound as root, before the switch"
        svc.restart()  # root again at start: binds over its own old sockets, becomes memo again
        assert svc.proc is not None and _uids(svc.proc.pid) == [MEMO.pw_uid] * 4
        assert {u["uid"]: u["launches"] for u in svc.unix.get("/v1/users").json()}[1000] == 6
    finally:
        assert svc.stop() == 0  # it cannot remove its files from root's run dir: no error for that


def test_a_folder_memo_cannot_reach_keeps_it_root_and_says_why(root: Path) -> None:
    private = root / "private"
    private.mkdir(mode=0o700)
    svc = Service(private, MEMO_INFERENCE__RUN_AS="memo")
    svc.start()
    try:
        assert svc.proc is not None and _uids(svc.proc.pid)[0] == 0
        assert svc.tcp.get("/healthz").json()["detail"]["user"] == "root"
        assert "running as root: user memo cannot reach" in (private / "service.log").read_text()
    finally:
        svc.stop()
