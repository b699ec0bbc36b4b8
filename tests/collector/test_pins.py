"""While the collector runs, bpftool sees MEMO's programs and the pinned maps; SIGTERM removes them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from collector.loader import PINNED_MAPS, RAW_TRACEPOINTS, TRACEPOINTS, PinsInUse, lock_pin_dir

pytestmark = [pytest.mark.root, pytest.mark.bpf]
PIN_DIR = Path("/sys/fs/bpf/memo")


def _bpftool(*args: str) -> object:
    return json.loads(subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True,
                                     text=True).stdout)


def test_bpftool_sees_programs_and_pinned_maps(start_collector, collector_env) -> None:
    try:
        os.close(lock_pin_dir(PIN_DIR))
    except PinsInUse as exc:
        pytest.skip(f"another collector runs on this machine: {exc}")
    env = dict(collector_env)
    env.pop("MEMO_COLLECTOR__BPF_PIN_DIR")  # the default location, as a user sees it
    c = start_collector(["--stdout"], env=env)
    try:
        names = {p.get("name") for p in _bpftool("prog", "show")}
        assert set(TRACEPOINTS) | {"memo_memcg"} <= names  # memo_memcg counts faults too, by default
        assert not set(RAW_TRACEPOINTS) & names
        subprocess.run(["/bin/true"], check=True)
        for m in PINNED_MAPS:
            assert isinstance(_bpftool("map", "dump", "pinned", str(PIN_DIR / m)), list)
        counts = _bpftool("map", "dump", "pinned", str(PIN_DIR / "counts"))
        assert counts and {"faults", "majflt", "swapin"} <= set(counts[0]["formatted"]["value"])
        assert (PIN_DIR / "prog_memo_exec").exists()
    finally:
        assert c.stop() == 0
    assert not PIN_DIR.exists()


def test_keep_pins_flag(start_collector, collector_env) -> None:
    pin_dir = Path(collector_env["MEMO_COLLECTOR__BPF_PIN_DIR"])
    c = start_collector(["--stdout", "--keep-pins"])
    try:
        assert c.stop() == 0
        assert (pin_dir / "counts").exists()
        assert isinstance(_bpftool("map", "dump", "pinned", str(pin_dir / "lost")), list)
    finally:
        for p in pin_dir.glob("*"):
            p.unlink()
        pin_dir.rmdir()


def test_second_collector_leaves_the_first_ones_pins_alone(start_collector, collector_env) -> None:
    pin_dir = Path(collector_env["MEMO_COLLECTOR__BPF_PIN_DIR"])
    first = start_collector(["--stdout"])
    second = start_collector(["--stdout"], ready=False)
    assert second.proc.wait(30) == 1
    assert "belongs to a running collector" in second.stderr()
    assert (pin_dir / "counts").exists()
    assert first.stop() == 0
