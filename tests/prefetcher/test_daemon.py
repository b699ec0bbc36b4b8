"""The whole loop against the REAL inference service: memo-inference learns launches and a profile from
collector-shaped events, memo-prefetcher (a real daemon process) reads its predictions and the
profile over the Unix socket, warms the page cache, and reports feedback that the service stores."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memo.client import InferenceClient, unix_http
from prefetcher import syscalls
from prefetcher.daemon import ServiceSource
from tests.inference.conftest import Service
from tests.inference.events import batch, session
from tests.prefetcher.conftest import PREFETCHER

pytestmark = pytest.mark.root
MB = 1 << 20
UID = 4242
INFERENCE = Path(sys.executable).parent / "memo-inference"


def events(app_a: str, app_b: str, data: Path, rounds: int) -> list[dict]:
    """A login shell running A then B, `rounds` times, then A: B's launches read all of `data`."""
    ts = itertools.count(10**12, 10**6)
    st = os.stat(data)
    evs: list[dict] = [{"type": "exec", "ts_ns": next(ts), "pid": 100, "ppid": 1, "uid": UID, "cgroup_id": 1,
                        "comm": "bash", "filename": "/usr/bin/bash", "exe": "/usr/bin/bash",
                        "argv": ["-bash"], "wall_ts": time.time()}]
    pid = 1000
    for app in [app_a, app_b] * rounds + [app_a]:
        pid += 1
        evs.append({"type": "fork", "ts_ns": next(ts), "pid": pid, "ppid": 100, "uid": UID, "comm": "bash"})
        evs.append({"type": "exec", "ts_ns": next(ts), "pid": pid, "ppid": 100, "uid": UID, "cgroup_id": 1,
                    "comm": Path(app).name[:15], "filename": app, "exe": app, "argv": [app],
                    "wall_ts": time.time()})
        if app == app_b:
            for index in range(0, st.st_size // syscalls.PAGE_SIZE, 256):
                evs.append({"type": "pagecache", "ts_ns": next(ts), "pid": pid, "dev": st.st_dev,
                            "ino": st.st_ino, "index": index, "nr_pages": 256, "path": str(data)})
        evs.append({"type": "exit", "ts_ns": next(ts), "pid": pid, "exit_code": 0, "minflt": 1, "majflt": 0,
                    "swapin": 0})
    return evs


@pytest.mark.skipif(not INFERENCE.exists(), reason="memo-inference is not installed")
def test_prefetcher_against_the_real_service(tmp_path: Path, memo_env: dict[str, str]) -> None:
    env = {**memo_env, "MEMO_INFERENCE__PORT": "0", "MEMO_LLM__BACKEND": "off",
           "MEMO_INFERENCE__MODELS": json.dumps(["mfu", "mru", "markov", "ppm"])}
    run_dir = Path(env["MEMO_PATHS__RUN_DIR"])
    app_b = tmp_path / "memo-test-editor"
    shutil.copy2("/usr/bin/sleep", app_b)
    data = tmp_path / "editor-data"
    data.write_bytes(os.urandom(8 * MB))
    service = subprocess.Popen([str(INFERENCE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    prefetcher = None
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "inference.port").exists():
            assert service.poll() is None and time.monotonic() < deadline, "memo-inference did not start"
            time.sleep(0.1)
        http = unix_http(run_dir / "inference.sock", 30)
        evs = events("/usr/bin/true", str(app_b), data, 8)
        body = {"source_id": "test-prefetcher", "seq": 0, "events": evs}
        assert http.post("/v1/events", json=body).status_code == 200
        deadline = time.monotonic() + 20
        preds: list[dict] = []
        while time.monotonic() < deadline:
            r = http.get("/v1/predictions", params={"uid": UID, "k": 3})
            preds = r.json().get("predictions", []) if r.status_code == 200 else []
            if preds and preds[0]["app"] == str(app_b):
                break
            time.sleep(0.2)
        assert preds and preds[0]["app"] == str(app_b) and preds[0]["probability"] >= 0.2, preds

        fd = os.open(data, os.O_RDONLY)
        os.fsync(fd)
        syscalls.drop_file_cache(fd)
        assert syscalls.cachestat(fd).nr_cache == 0
        prefetcher = subprocess.Popen([PREFETCHER, "--uid", str(UID), "--poll-interval", "0.3",
                                       "--psi-max", "100"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while syscalls.cachestat(fd).nr_cache * syscalls.PAGE_SIZE < 8 * MB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert syscalls.cachestat(fd).nr_cache * syscalls.PAGE_SIZE == 8 * MB, "profile not made resident"
        os.close(fd)

        # The user starts the predicted program; no collector runs here, so the prefetcher sees the
        # launch by its /proc scan (every feedback.SCAN_EVERY_S): the program stays up a while.
        launch = subprocess.Popen([str(app_b), "30"])
        deadline = time.monotonic() + 30
        summary: list[dict] = []
        while time.monotonic() < deadline:
            summary = [s for s in http.get("/v1/feedback").json() if s["app"] == str(app_b)]
            if summary:
                break
            time.sleep(0.3)
        assert summary, "no feedback reached the service"
        assert summary[0]["bytes_prefetched"] == 8 * MB and summary[0]["bytes_used"] == 8 * MB, summary
        assert summary[0]["launched"] == 1
        launch.kill()
        launch.wait()

        prefetcher.send_signal(signal.SIGTERM)
        out, _ = prefetcher.communicate(timeout=30)
        assert prefetcher.returncode == 0, out
        assert "read ahead 8388608 bytes" in out and "feedback: 1 items sent" in out, out
        # at the end it says what its CPU went to: the read of the plan is one part of it
        cpu = re.search(r"CPU seconds: process ([0-9.]+) .*main loop ([0-9.]+): .*read ([0-9.]+)", out)
        assert cpu is not None, out
        assert float(cpu[1]) >= float(cpu[2]) >= float(cpu[3]) >= 0.0, cpu[0]
        http.close()
    finally:
        if prefetcher is not None:
            prefetcher.kill()
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()


def test_users_come_from_the_service_and_its_change_notices(tmp_path: Path) -> None:
    """Without --uid the prefetcher asks the service who its users are once a minute, not every round;
    a user the service first names in a change notice is planned for at once. A profile is fetched
    again only when the prediction names another version of it."""
    svc = Service(tmp_path)
    svc.start()
    try:
        with InferenceClient.unix(svc.socket) as client:
            source = ServiceSource(client, [], k=5)
            assert source._uids() == []
            svc.unix.post("/v1/events", content=batch("u", 1, session(["/usr/bin/vim", "/usr/bin/git"] * 4,
                                                                      uid=UID))).raise_for_status()
            svc.wait_launches(UID, 8)
            assert source._uids() == [], "the list of users is a minute old at most, not asked every round"
            ch = source.changes(0, 0.0)
            assert ch is not None and UID in ch.uids
            assert source._uids() == [UID]
            wanted = {w.prediction.app: w.prediction for w in source.predictions()}
            assert set(wanted) >= {"/usr/bin/vim", "/usr/bin/git"}
            vim = wanted["/usr/bin/vim"]
            first = source.profile(vim.app, vim.profile_version)
            assert first is not None and first.version == vim.profile_version
            assert source.profile(vim.app, vim.profile_version) is first, "fetched again at the same version"
            assert source.profile(vim.app, vim.profile_version + 1) is not first, "a new version is fetched"
    finally:
        svc.stop()
