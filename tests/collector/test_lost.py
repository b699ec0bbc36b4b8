"""Ring-buffer overflow is counted in the kernel and reported as `lost` records, never silent."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.bpf]


def test_overflow_is_reported_as_lost(start_collector, collector_env) -> None:
    env = dict(collector_env, MEMO_COLLECTOR__RINGBUF_PAGES="16")  # 64 KiB per ring
    c = start_collector(["--stdout"], env=env)
    os.kill(c.proc.pid, signal.SIGSTOP)  # the collector stops reading; the rings fill
    try:
        pids = set()
        for _ in range(400):
            p = subprocess.Popen(["/bin/true"])
            p.wait()
            pids.add(p.pid)
    finally:
        os.kill(c.proc.pid, signal.SIGCONT)
    time.sleep(0.5)
    c.stop()
    events = c.events()
    lost = sum(e["count"] for e in events if e["type"] == "lost")
    seen = {e["pid"] for e in events if e["type"] == "exec" and e["pid"] in pids}
    assert lost > 0
    assert len(seen) < len(pids), "some exec records did not fit"
    assert "records lost" in c.stderr()
