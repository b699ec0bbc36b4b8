"""Delivery to the real inference service: the receiver killed for 10 s mid-stream and restarted,
every event arrives exactly once (counted by the service's GET /v1/sources); a spool whose next_seq
was lost resumes past the seqs the service holds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from collector.sender import Sender
from collector.spool import Spool
from memo.client import unix_http
from memo.contract import ExecEvent, SourceStats

pytestmark = [pytest.mark.root, pytest.mark.bpf]
REPO = Path(__file__).resolve().parents[2]


class Inference:
    """The real `memo-inference` on a temp run/data dir (cheap models only: this tests ingest)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = dict(env, MEMO_INFERENCE__PORT="0", MEMO_INFERENCE__MODELS='["mfu","markov"]',
                        MEMO_LLM__BACKEND="off")
        self.socket = Path(env["MEMO_PATHS__RUN_DIR"]) / "inference.sock"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "inference.main"], cwd=REPO, env=self.env,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"memo-inference exited:\n{self.log.read_text()}"
            try:
                self.sources()
                return
            except (httpx.HTTPError, OSError):
                time.sleep(0.1)
        raise AssertionError(f"memo-inference did not come up:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def sources(self) -> dict[str, SourceStats]:
        with unix_http(self.socket, 5) as c:
            r = c.get("http://memo/v1/sources")
            r.raise_for_status()
        return {s["source_id"]: SourceStats.model_validate(s) for s in r.json()}


def _true(n: int, pause: float = 0.0) -> None:
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
        time.sleep(pause)


def test_receiver_down_10s_every_event_arrives_once(start_collector, collector_env, tmp_path) -> None:
    source = f"test-delivery-{os.getpid()}"
    inference = Inference(collector_env, tmp_path / "inference.log")
    inference.start()
    try:
        c = start_collector(["--source-id", source])
        _true(50)
        time.sleep(1.0)
        assert inference.sources()[source].events > 0
        inference.kill()
        down = time.monotonic()
        while time.monotonic() - down < 10.0:  # 10 s of events while the receiver is gone
            _true(10, pause=0.05)
        assert any(Path(collector_env["MEMO_PATHS__DATA_DIR"], "spool", source).glob("*.json")), \
            "batches were spooled while the receiver was down"
        inference.start()
        _true(50)
        assert c.stop() == 0
        log = c.stderr()
        done = re.search(r"done: sealed batches=(\d+) events=(\d+) .* spooled=(\d+)", log)
        assert done, log
        batches, events, spooled = map(int, done.groups())
        assert spooled == 0, log
        assert "inference unreachable" in log and "inference is back" in log
        stats = inference.sources()[source]
        assert (stats.batches, stats.events, stats.seq) == (batches, events, batches - 1)
    finally:
        inference.stop()


def test_stdout_keeps_every_record_when_stopped_on_a_full_pipe(collector_env: dict[str, str]) -> None:
    """`memo-collector --stdout` whose reader lags (a full pipe) and that is stopped with SIGTERM while
    its write waits: every record it counted reaches the reader, whole."""
    import json

    exe = Path(sys.executable).parent / "memo-collector"
    p = subprocess.Popen([str(exe), "--stdout"], env=collector_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stderr is not None
    for line in p.stderr:
        if b"ready" in line:
            break
    for _ in range(3):  # enough records to fill the pipe (64 KB) that nobody reads yet
        subprocess.run([sys.executable, "-c", "import numpy"], check=True)
    time.sleep(1.5)
    p.terminate()
    out, err = p.communicate(timeout=60)
    printed = int(re.search(rb"printed (\d+) events", err).group(1))
    lines = out.splitlines()
    assert len(lines) == printed and printed > 300, (len(lines), printed)
    assert all(json.loads(line)["type"] for line in lines)


def test_programs_started_while_the_collector_was_down_are_recorded(start_collector, collector_env,
                                                                    tmp_path) -> None:
    """The collector is stopped, a program starts, the collector comes back: the program's launch is
    there, from the /proc scan at start (its exec record went nowhere); one started before the first
    run of the collector is not (there is no previous run to have missed it)."""
    source = f"test-downtime-{os.getpid()}"
    inference = Inference(collector_env, tmp_path / "inference.log")
    inference.start()
    lab = tmp_path / "lab"
    lab.mkdir()
    before = lab / "memo-before-first-run"
    during = lab / "memo-while-down"
    for exe in (before, during):
        exe.write_bytes(Path("/usr/bin/sleep").read_bytes())
        exe.chmod(0o755)
    early = subprocess.Popen([str(before), "120"])
    procs = [early]
    try:
        c = start_collector(["--source-id", source])
        _true(3)
        assert c.stop() == 0
        procs.append(subprocess.Popen([str(during), "120"]))
        time.sleep(0.5)
        c = start_collector(["--source-id", source])
        _true(3)
        time.sleep(2.0)
        assert "started while the collector was down" in c.stderr()
        assert c.stop() == 0
        with unix_http(inference.socket, 5) as client:
            apps = {a["app"] for a in client.get("http://memo/v1/apps").json()}
        assert str(during) in apps, apps
        assert str(before) not in apps, apps
        spool = Path(collector_env["MEMO_PATHS__DATA_DIR"]) / "spool"
        assert {oct(d.stat().st_mode & 0o777) for d in (spool, spool / source)} == {"0o700"}, \
            "the spool holds every user's execs with argv: root's alone"
    finally:
        for p in procs:
            p.kill()
        inference.stop()


def test_a_lost_next_seq_resumes_past_what_the_service_stored(collector_env, tmp_path) -> None:
    """next_seq damaged with nothing pending: before it delivers, the sender asks the service which
    seqs it holds from the source, so the new batches are stored, not dropped as duplicates of old ones
    (and a first start asks the same, of a service that holds none)."""
    source = f"test-seq-{os.getpid()}"
    inference = Inference(collector_env, tmp_path / "inference.log")
    inference.start()

    def deliver(spool: Spool, n: int) -> None:
        for i in range(n):
            spool.append([ExecEvent(ts_ns=i, pid=100 + i, ppid=1, uid=0, cgroup_id=1, comm="x",
                                    filename="/bin/true")])
        sender = Sender(spool, inference.socket)
        sender.start()
        assert sender.drain(30), "delivered"

    try:
        first = Spool(tmp_path / "c", source, 10**9)
        assert not first.seq_known, "a first start: nothing stored says where the seqs are"
        deliver(first, 3)
        assert inference.sources()[source].seq == 2
        (first.dir / "next_seq").write_text("garbage")
        again = Spool(tmp_path / "c", source, 10**9)
        assert not again.seq_known
        deliver(again, 2)
        got = inference.sources()[source]
        assert (got.batches, got.events, got.seq) == (5, 5, 4), got
        assert Spool(tmp_path / "c", source, 10**9).seq_known, "resolved, and written down"
    finally:
        inference.stop()
