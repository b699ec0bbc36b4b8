"""The end-to-end lab: MEMO started the way `make up` starts it (`memo up`, the supervisor, all three real
services) on a temp run/data dir and its own pin dir, and a scripted user who runs small private copies
of real programs, each reading its own data file at start.

Everything is real: the kernel (eBPF, page cache, cgroups), SQLite, the HTTP servers. Cleanup is by
pid and path, never by name: other engineers' MEMO instances may run on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from memo.client import unix_http

REPO = Path(__file__).resolve().parents[2]
MEMO = [str(Path(sys.executable).parent / "memo")]
USER = 4242
"""The scripted user: a uid nobody else on the machine launches programs as, so that its predictions
are ours alone (the collector traces the whole machine)."""
DATA_BYTES = 4 * 2**20
V1_MEMORY = Path("/sys/fs/cgroup/memory")


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Memo:
    """A MEMO deployment in ``root``: memo up/down/status as a user types them, plus API access."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_dir = root / "run"
        self.data_dir = root / "data"
        self.pin_dir = Path(f"/sys/fs/bpf/memo-e2e-{os.getpid()}")
        self.env = {k: v for k, v in os.environ.items() if k != "MEMO_CONFIG"}
        self.env.update({
            "MEMO_PATHS__RUN_DIR": str(self.run_dir), "MEMO_PATHS__DATA_DIR": str(self.data_dir),
            "MEMO_INFERENCE__PORT": "0", "MEMO_COLLECTOR__BPF_PIN_DIR": str(self.pin_dir),
            # the classical members: fast and deterministic on two shared cores (LSTM/LLM have own tests)
            "MEMO_INFERENCE__MODELS": json.dumps(["mfu", "mru", "markov", "ppm"]), "MEMO_LLM__BACKEND": "off",
            "MEMO_COLLECTOR__FLUSH_INTERVAL_S": "0.05", "MEMO_PREFETCHER__POLL_INTERVAL_S": "0.2",
            # other engineers' work on this machine moves PSI; the prefetcher's pressure guard has its tests
            "MEMO_PREFETCHER__PSI_SOME_AVG10_MAX": "100", "MEMO_LOG_LEVEL": "INFO",
            "MEMO_SERVICES__WATCHDOG_S": "6",
        })
        self._unix: httpx.Client | None = None
        self.seen_pids: set[int] = set()
        self.prog_ids: set[int] = set()
        self.cgroup_changes: dict[str, str] = {}  # file -> value before MEMO changed it

    def memo(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(MEMO + list(args), env={**self.env, **env}, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    # ---------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "supervisor.json").read_text())

    def pids(self) -> dict[str, int]:
        out = {n: s["pid"] for n, s in self.state()["services"].items() if s["pid"]}
        out["supervisor"] = self.state()["pid"]
        self.seen_pids.update(out.values())
        return out

    @property
    def unix(self) -> httpx.Client:
        if self._unix is None:
            self._unix = unix_http(self.run_dir / "inference.sock", 10)
        return self._unix

    def tcp_get(self, path: str, **params: Any) -> Any:
        port = int((self.run_dir / "inference.port").read_text())
        r = httpx.get(f"http://127.0.0.1:{port}{path}", params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        """GET over the socket, riding out an inference restart."""
        for attempt in range(100):
            try:
                r = self.unix.get(path, params=params)
                r.raise_for_status()
                return r.json()
            except (httpx.TransportError, httpx.HTTPStatusError):
                if attempt == 99:
                    raise
                time.sleep(0.1)

    def launches(self, uid: int = USER) -> int:
        return {u["uid"]: u["launches"] for u in self.get("/v1/users")}.get(uid, 0)

    def app_launches(self, app: str) -> int:
        return {a["app"]: a["launches"] for a in self.get("/v1/apps")}.get(app, 0)

    def source(self) -> dict[str, Any]:
        sources = self.get("/v1/sources")
        assert len(sources) == 1, sources
        return sources[0]

    def record_cgroup_changes(self) -> None:
        """Remember every cgroup value the prefetcher journalled (to check `memo down` put it back)."""
        try:
            data = json.loads((self.data_dir / "prefetcher-state.json").read_text())
        except (OSError, ValueError):
            return
        for c in data.get("changes", []):
            self.cgroup_changes.setdefault(c["file"], c["old"])

    def record_prog_ids(self) -> None:
        for pin in self.pin_dir.glob("prog_*"):
            out = subprocess.run(["bpftool", "-j", "prog", "show", "pinned", str(pin)], capture_output=True,
                                 text=True, check=True)
            self.prog_ids.add(json.loads(out.stdout)["id"])

    def log(self, service: str) -> str:
        return (self.run_dir / "logs" / f"{service}.log").read_text(errors="replace")

    # ---------------------------------------------------------------- cleanup

    def force_cleanup(self) -> None:
        """After `memo down`, or instead of it when a test failed: nothing of ours may survive."""
        if self._unix is not None:
            self._unix.close()
        if (self.run_dir / "supervisor.json").exists():
            with contextlib.suppress(Exception):
                self.pids()
        if self.run_dir.exists():
            self.memo("down", "--timeout", "60", timeout=120)
        for pid in self.seen_pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.pin_dir.exists():
            shutil.rmtree(self.pin_dir, ignore_errors=True)
        from collector.loader import lock_path

        lock_path(self.pin_dir).unlink(missing_ok=True)
        for file, old in self.cgroup_changes.items():  # the prefetcher failed to: restore, then fail
            with contextlib.suppress(Exception):
                if Path(file).read_text().strip() != old:
                    Path(file).write_text(old)
        shutil.rmtree(self.root, ignore_errors=True)


class ScriptedUser:
    """Programs A, B, C (and D for the restart tests): private copies of md5sum and tail, each with a
    4 MiB data file it reads at start; run as uid USER. C is `tail -c +1 -f` - it stays running, in
    its own memory cgroup, so that the prefetcher has a running predicted program's cgroup to shield."""

    def __init__(self) -> None:
        self.lab = Path(tempfile.mkdtemp(prefix="memo-e2e-lab-", dir="/var/tmp"))
        self.lab.chmod(0o755)
        (self.lab / "bin").mkdir(mode=0o755)
        (self.lab / "data").mkdir(mode=0o755)
        self.apps: dict[str, str] = {}
        self.data: dict[str, Path] = {}
        for name, real in (("a", "md5sum"), ("b", "md5sum"), ("c", "tail"), ("d", "md5sum")):
            exe = self.lab / "bin" / f"memo-e2e-{name}"
            shutil.copyfile(shutil.which(real) or f"/usr/bin/{real}", exe)
            exe.chmod(0o755)
            data = self.lab / "data" / f"{name}.bin"
            data.write_bytes(os.urandom(DATA_BYTES if name != "d" else 256 * 1024))
            data.chmod(0o644)
            for f in (exe, data):
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
            self.apps[name] = str(exe)
            self.data[name] = data
        self.cgroup: Path | None = None
        if V1_MEMORY.is_dir():
            self.cgroup = V1_MEMORY / f"memo-e2e-{os.getpid()}"
            self.cgroup.mkdir(exist_ok=True)
        self.running: list[subprocess.Popen[bytes]] = []

    def cold(self) -> None:
        """The lab's files out of the page cache: fadvise DONTNEED each, then drop clean caches."""
        for f in [*self.data.values(), *map(Path, self.apps.values())]:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        Path("/proc/sys/vm/drop_caches").write_text("1\n")

    def resident(self, name: str) -> float:
        """Share of a program's data file in the page cache (cachestat(2))."""
        from prefetcher.syscalls import cachestat

        fd = os.open(self.data[name], os.O_RDONLY)
        try:
            pages = cachestat(fd).nr_cache
        finally:
            os.close(fd)
        return pages * os.sysconf("SC_PAGE_SIZE") / self.data[name].stat().st_size

    def run(self, name: str) -> None:
        """Start a program as the user; md5sum ones run to completion, C keeps running."""
        args = [self.apps[name]] + (["-c", "+1", "-f"] if name == "c" else []) + [str(self.data[name])]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=USER,
                                group=USER, extra_groups=[], cwd="/")
        if name != "c":
            assert proc.wait(30) == 0
            return
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(f"{proc.pid}\n")
        self.running.append(proc)

    def stop_running(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self.running.clear()

    def cleanup(self) -> None:
        self.stop_running()
        if self.cgroup is not None and self.cgroup.exists():
            procs = self.cgroup / "cgroup.procs"
            wait_for("the lab cgroup to empty", lambda: not procs.read_text().strip(), timeout=10)
            self.cgroup.rmdir()
        shutil.rmtree(self.lab, ignore_errors=True)
