"""Readiness by sd_notify(3)'s protocol, over real sockets and real processes (memo/notify.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from memo import notify

SAY_READY = ("from memo import notify; import os; "
             "print(notify.ready('serving'), os.environ.get('NOTIFY_SOCKET'))")


def test_a_child_that_says_ready_is_heard_with_its_own_pid(tmp_path: Path) -> None:
    listener = notify.Listener(tmp_path / "notify.sock")
    try:
        env = {**os.environ, notify.ENV: str(listener.path)}
        child = subprocess.run([sys.executable, "-c", SAY_READY], env=env, capture_output=True, text=True,
                               check=True)
        assert child.stdout.split() == ["True", "None"], "sent, and not passed on to what it starts later"
        heard = listener.receive()
        assert len(heard) == 1
        pid, fields = heard[0]
        assert pid > 0 and pid != os.getpid()
        assert fields == {"READY": "1", "STATUS": "serving"}
        assert listener.receive() == []
        assert oct(listener.path.stat().st_mode & 0o777) == "0o666", "the memo user's inference may speak"
    finally:
        listener.close()
    assert not listener.path.exists()


def test_nobody_asked_is_not_an_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != notify.ENV}
    out = subprocess.run([sys.executable, "-c", SAY_READY], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "None"]
    gone = subprocess.run([sys.executable, "-c", SAY_READY], env={**env, notify.ENV: "/nonexistent/n.sock"},
                          capture_output=True, text=True, check=True)
    assert gone.stdout.split()[0] == "False"
