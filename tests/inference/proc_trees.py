"""Real process trees for the segmentation tests: a scenario run by an interactive shell, traced by
``memo-collector --stdout`` (root, eBPF), kept to the scenario's own processes.

``.venv/bin/python -m tests.inference.proc_trees`` (as root) re-records the fixtures in
tests/inference/data: shell_session.jsonl (scripts and their helpers) and exec_chains.jsonl (programs
started through wrappers that exec them: setpriv, runuser, env, nice, ionice, taskset, ``sh -c 'exec'``,
two-level chains, a wrapper MEMO does not list, and a launcher script that ends in ``exec``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memo.contract import EVENT_ADAPTER

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "data" / "shell_session.jsonl"
CHAINS_FIXTURE = Path(__file__).parent / "data" / "exec_chains.jsonl"

JOB_SH = """#!/bin/bash
# A script a user runs: helpers, a pipeline, a subshell, a command substitution and sh -c.
sleep 0.3
cat job.dat >/dev/null
n=$(cat /etc/hostname | wc -c)
grep -c root /etc/passwd >/dev/null
echo "$n" | sed 's/1/one/' | tr a-z A-Z >/dev/null
( head -n1 /etc/passwd >/dev/null )
sh -c 'uname -r >/dev/null'
"""
TOOL_PY = """#!/usr/bin/env python3
import subprocess, time
time.sleep(0.3)
open("tool.dat", "rb").read()
subprocess.run(["uname", "-a"], stdout=subprocess.DEVNULL)
subprocess.run("ls / | wc -l", shell=True, stdout=subprocess.DEVNULL)
"""
# What the user types at the prompt (bash -i reads it from stdin).
SESSION = """cd {dir}
bash ./job.sh
./job.sh
python3 ./tool.py
./tool.py
/usr/bin/ls / >/dev/null
env LC_ALL=C sort /etc/hostname >/dev/null
exit
"""
LAUNCH_SH = """#!/bin/sh
# a desktop launcher script: sets things up, then becomes the program
export LC_ALL=C
exec /usr/bin/md5sum /etc/hostname
"""
NOBODY = 65534
CHAINS = """cd {dir}
setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/cat /etc/hostname >/dev/null
runuser -u nobody -- nice -n 0 /usr/bin/cut -c1 /etc/hostname >/dev/null
env nice -n 0 /usr/bin/sort /etc/hostname >/dev/null
ionice -c 2 -n 4 /usr/bin/head -n1 /etc/passwd >/dev/null
taskset -c 0 /usr/bin/wc -l /etc/passwd >/dev/null
sh -c 'exec /usr/bin/tail -n1 /etc/passwd' >/dev/null
setarch x86_64 /usr/bin/tac /etc/hostname >/dev/null
./launch.sh >/dev/null
exit
"""
# (app, uid) of each launch: setarch is on no wrapper list (the chain rule finds tac), and launch.sh
# ends in md5sum
CHAINS_EXPECTED = [("/usr/bin/cat", NOBODY), ("/usr/bin/cut", NOBODY), ("/usr/bin/sort", 0),
                   ("/usr/bin/head", 0), ("/usr/bin/wc", 0), ("/usr/bin/tail", 0), ("/usr/bin/tac", 0),
                   ("/usr/bin/md5sum", 0)]
# The system's python3, not a version manager's shim (a shim would name the launch: see segment.py).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RECORD_DIR = "/tmp/memo-tree"
"""The session's directory as the recordings name it (scripts run there are named by absolute path)."""
EXPECTED = [f"{RECORD_DIR}/job.sh", f"{RECORD_DIR}/job.sh", f"{RECORD_DIR}/tool.py", f"{RECORD_DIR}/tool.py",
            "/usr/bin/ls", "/usr/bin/sort"]


def descendants(events: list[dict], root: int) -> list[dict]:
    """The events of ``root`` and every process it forked, directly or not, in order."""
    tree = {root}
    out = []
    for ev in events:
        if ev["type"] in ("fork", "exec") and ev.get("ppid") in tree:
            tree.add(ev["pid"])
        if ev.get("pid") in tree:
            out.append(ev)
    return out


def record(session: str = SESSION, scripts: dict[str, str] | None = None,
           timeout: float = 60.0) -> list[dict]:
    """Run the session under the collector; the session's events as contract dicts."""
    scripts = {"job.sh": JOB_SH, "tool.py": TOOL_PY} if scripts is None else scripts
    with tempfile.TemporaryDirectory(prefix="memo-tree-") as d:
        os.chmod(d, 0o755)
        for name, text in scripts.items():
            (Path(d) / name).write_text(text)
            os.chmod(Path(d) / name, 0o755)
        for name in ("job.dat", "tool.dat"):  # uncached data, so the launches have page-cache records
            with open(Path(d) / name, "wb") as f:
                f.write(os.urandom(64 * 4096))
                f.flush()
                os.fsync(f.fileno())
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        exe = Path(sys.executable).parent / "memo-collector"
        # stdout to a file: a pipe nobody reads during the session would fill and stall the collector
        records = open(Path(d) / "records.jsonl", "w+")  # noqa: SIM115
        coll = subprocess.Popen([str(exe), "--stdout", "--duration", str(timeout)], cwd=REPO,
                                stdout=records, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            assert coll.stderr is not None
            for line in coll.stderr:
                if "ready" in line or time.monotonic() > deadline:
                    break
            shell = subprocess.Popen(["bash", "--norc", "--noprofile", "-i"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, text=True, cwd=d,
                                     env={**os.environ, "PS1": "$ ", "PATH": SYSTEM_PATH})
            shell.communicate(session.format(dir=d), timeout=timeout)
            time.sleep(1.0)  # let the last exits drain through the ring buffer
        finally:
            coll.terminate()
            coll.communicate(timeout=30)
            records.seek(0)
            out = records.read()
            records.close()
    # The session ran in a fresh temp dir; its name is written as RECORD_DIR so that a recording
    # compares equal to the fixture (cwd, argv and file paths hold it).
    out = out.replace(json.dumps(d)[1:-1], RECORD_DIR)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    events.sort(key=lambda e: e["ts_ns"])
    mine = descendants(events, shell.pid)
    for ev in mine:  # validate: the fixture must stay within the contract
        EVENT_ADAPTER.validate_python(ev)
    return mine


def record_chains(timeout: float = 60.0) -> list[dict]:
    return record(CHAINS, {"launch.sh": LAUNCH_SH}, timeout)


def load_fixture(path: Path = FIXTURE) -> list:
    return [EVENT_ADAPTER.validate_json(line) for line in path.read_text().splitlines() if line]


if __name__ == "__main__":
    for path, evs in ((FIXTURE, record()), (CHAINS_FIXTURE, record_chains())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in evs))
        print(f"wrote {len(evs)} events to {path}")
