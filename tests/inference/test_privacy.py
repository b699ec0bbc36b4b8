"""A user's launch history is private to that user (issue 13), checked on a real service by a real
unprivileged process (uid 65534): the store is unreadable, TCP serves no user's data, and the per-user
socket answers each caller about themself only, whoever they claim to be."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inference.conftest import Service, _running
from tests.inference.events import batch, session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
NOBODY = 65534
ASK = r"""
import json, socket, sys
path, method, target = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(path)
except OSError as exc:
    print(json.dumps({"status": 0, "error": str(exc)})); sys.exit()
s.sendall(f"{method} {target} HTTP/1.1\r\nHost: memo\r\nContent-Length: 0\r\n"
          "Connection: close\r\n\r\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
print(json.dumps({"status": int(head.split()[1]), "body": body.decode(errors="replace")}))
"""


def _as_nobody(*args: str) -> dict:
    out = subprocess.run(["/usr/bin/python3", "-c", ASK, *args], capture_output=True, text=True, timeout=30,
                         user=NOBODY, group=NOBODY, extra_groups=[], check=True)
    return json.loads(out.stdout)


@pytest.fixture
def open_service() -> Iterator[Service]:
    """A service whose run directory other users can reach (pytest's tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="memo-privacy-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield from _running(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_store_and_its_folder_are_memos_alone(open_service: Service) -> None:
    svc = open_service
    events = session(["/usr/bin/vim"] * 3, uid=1000)
    svc.unix.post("/v1/events", content=batch("p", 1, events)).raise_for_status()
    db = svc.db
    assert stat.S_IMODE(svc.db.parent.stat().st_mode) == 0o700
    for f in (db, db.with_name(db.name + "-wal")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    probe = subprocess.run(["/usr/bin/python3", "-c", f"open({str(db)!r}, 'rb')"], capture_output=True,
                           text=True, user=NOBODY, group=NOBODY, extra_groups=[])
    assert probe.returncode != 0 and "PermissionError" in probe.stderr


def test_tcp_serves_health_metrics_and_docs_but_no_users_data(open_service: Service) -> None:
    svc = open_service
    for path in ("/healthz", "/metrics", "/openapi.json", "/v1/sources"):
        assert svc.tcp.get(path).status_code == 200, path
    for path in ("/v1/predictions?uid=0", "/v1/explain?uid=0&app=/usr/bin/vim", "/v1/users", "/v1/apps",
                 "/v1/apps/%2Fusr%2Fbin%2Fvim/profile", "/v1/feedback", "/v1/predictions/changes?since=0"):
        r = svc.tcp.get(path)
        assert r.status_code == 403 and "tcp_user_data" in r.json()["detail"], path


def test_the_user_socket_answers_each_user_about_themself(open_service: Service) -> None:
    svc = open_service
    events = session(["/usr/bin/vim", "/usr/bin/git"] * 4, uid=1000) + \
        session(["/usr/bin/less", "/usr/bin/man"] * 4, uid=NOBODY, shell_pid=200, start_pid=5000)
    svc.unix.post("/v1/events", content=batch("p", 1, events)).raise_for_status()
    svc.wait_launches(1000, 8)
    svc.wait_launches(NOBODY, 8)
    sock = str(svc.run_dir / "inference-user.sock")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
    assert _as_nobody(str(svc.socket), "GET", "/v1/users")["status"] == 0, \
        "inference.sock is not for everyone"

    mine = _as_nobody(sock, "GET", "/v1/predictions")
    assert mine["status"] == 200
    got = json.loads(mine["body"])
    assert got["uid"] == NOBODY
    assert {p["app"] for p in got["predictions"]} >= {"/usr/bin/less", "/usr/bin/man"}
    assert _as_nobody(sock, "GET", f"/v1/predictions?uid={NOBODY}")["status"] == 200
    assert _as_nobody(sock, "GET", "/v1/explain?app=/usr/bin/man")["status"] == 200
    theirs = _as_nobody(sock, "GET", "/v1/predictions?uid=1000")
    assert theirs["status"] == 403 and "not yours" in theirs["body"]
    for path in ("/v1/users", "/v1/apps", "/v1/apps/%2Fusr%2Fbin%2Fvim/profile", "/v1/feedback",
                 "/v1/predictions/changes?since=0", "/v1/explain?uid=1000&app=/usr/bin/vim"):
        assert _as_nobody(sock, "GET", path)["status"] == 403, path
    assert _as_nobody(sock, "POST", "/v1/events")["status"] == 405
    assert _as_nobody(sock, "GET", "/healthz")["status"] == 200


def test_the_prior_shows_a_new_user_only_what_three_users_share(service: Service) -> None:
    """inference.prior_min_users (3): a program one user runs never reaches another's predictions, through
    the cross-user prior that new users (and every user's back-off) see; also after a restart."""
    shared, alone = "/usr/bin/vim", "/home/a/bin/payroll-export"
    events = session([shared, alone] * 4, uid=1000)
    events += session([shared, "/usr/bin/git"] * 4, uid=1001, shell_pid=200, start_pid=3000)
    service.unix.post("/v1/events", content=batch("p", 1, events)).raise_for_status()
    service.wait_launches(1001, 8)

    def new_users_apps() -> set[str]:
        got = service.unix.get("/v1/predictions", params={"uid": 4242}).json()
        return {p["app"] for p in got["predictions"]}

    def others_apps(uid: int) -> set[str]:
        return {p["app"] for p in service.unix.get("/v1/predictions", params={"uid": uid, "k": 20}).json()
                ["predictions"]}

    assert new_users_apps() == set(), "two users share nothing yet"
    assert alone not in others_apps(1001)
    service.unix.post("/v1/events", content=batch("p", 2, session([shared] * 3, uid=1002, shell_pid=300,
                                                                   start_pid=4000))).raise_for_status()
    service.wait_launches(1002, 3)
    assert new_users_apps() == {shared}, "three users ran it: it is nobody's in particular"
    service.restart()
    assert new_users_apps() == {shared}
    assert alone not in others_apps(1001) | others_apps(1002)
