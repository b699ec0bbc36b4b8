"""A real `memo-inference` process on a real Unix socket and TCP port in a temp dir, and httpx clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from memo.client import unix_http

MODELS = ["mfu", "mru", "markov", "ppm"]  # the classical members: fast and deterministic


class Service:
    """One service instance; ``restart()`` stops it gracefully and starts it again on the same dirs."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.run_dir = root / "run"
        self.data_dir = root / "data"
        self.env = {**os.environ, "MEMO_PATHS__RUN_DIR": str(self.run_dir),
                    "MEMO_PATHS__DATA_DIR": str(self.data_dir), "MEMO_INFERENCE__PORT": "0",
                    "MEMO_INFERENCE__MODELS": json.dumps(MODELS),
                    "MEMO_LOG_LEVEL": os.environ.get("MEMO_TEST_LOG_LEVEL", "WARNING"),
                    "MEMO_INFERENCE__RUN_AS": "", **env}  # tests/inference/test_runas.py: as the memo user
        self.env.pop("MEMO_CONFIG", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.unix: httpx.Client
        self.tcp: httpx.Client
        self.port = 0

    @property
    def socket(self) -> Path:
        return self.run_dir / "inference.sock"

    @property
    def db(self) -> Path:
        return self.data_dir / "inference" / "inference.sqlite3"

    def start(self) -> None:
        port_file = self.run_dir / "inference.port"
        port_file.unlink(missing_ok=True)
        exe = Path(sys.executable).parent / "memo-inference"
        self.log = open(self.root / "service.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([str(exe)], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"memo-inference did not start: {(self.root / 'service.log').read_text()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.unix = unix_http(self.socket, 30)
        self.tcp = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and \
            self.unix.get("/healthz").status_code == 200

    def stop(self) -> int:
        assert self.proc is not None
        self.unix.close()
        self.tcp.close()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.log.close()
        return rc

    def restart(self) -> None:
        assert self.stop() == 0
        self.start()

    def wait_launches(self, uid: int, n: int, timeout: float = 10.0) -> None:
        """Until the models have learnt ``n`` launches of ``uid`` (they learn off the request path)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            users = {u["uid"]: u["launches"] for u in self.unix.get("/v1/users").json()}
            if users.get(uid, 0) >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"uid {uid} did not reach {n} launches")


def _running(root: Path) -> Iterator[Service]:
    svc = Service(root)
    svc.start()
    try:
        yield svc
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from _running(tmp_path)


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from _running(tmp_path_factory.mktemp("svc"))
