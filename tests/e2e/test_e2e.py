"""MEMO end to end, for real: `memo up` (what `make up` runs), a user launching A, B, C in rounds, the
next program predicted over HTTP and already in the page cache when it starts, `memo status`, each
service SIGKILLed and brought back without losing events, and `memo down` leaving nothing behind.

The tests share one deployment and run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.e2e.harness import USER, Memo, ScriptedUser, alive, wait_for

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.timeout(300)]

ORDER = "abc"
ROUNDS = 4
MUST_FROM_ROUND = 2
"""Rounds 0 and 1 teach the models the cycle; from this round on every step must be predicted and
prefetched (round 1 usually is already)."""


def test_up_starts_all_three_once(memo: Memo) -> None:
    r = memo.memo("up", "--timeout", "240")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MEMO is up" in r.stdout and "http://127.0.0.1:" in r.stdout and "make down" in r.stdout
    assert "inference-user.sock" in r.stdout
    pids = memo.pids()
    assert all(alive(p) for p in pids.values()), pids
    again = memo.memo("up")
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert memo.pids() == pids  # no duplicates
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    names = {p.get("name") for p in progs}
    assert {"memo_exec", "memo_exit", "memo_fork", "memo_use_read", "memo_use_map", "memo_use_fault"} <= names
    memo.record_prog_ids()
    assert len(memo.prog_ids) >= 4
    health = memo.tcp_get("/healthz")
    assert health["status"] == "ok"
    assert health["detail"]["user"] == "memo", \
        "started as root by the supervisor, inference runs as the memo user (`make setup` creates it)"


def test_next_program_is_predicted_and_prefetched(memo: Memo, user: ScriptedUser) -> None:
    steps = []
    for rnd in range(ROUNDS):
        for i, name in enumerate(ORDER):
            nxt = ORDER[(i + 1) % len(ORDER)]
            if name == "c":
                user.stop_running()
            before = memo.launches()
            # Every launch starts cold: its page-cache fills are its launch profile. From here on only
            # the prefetcher reads the next program's data file (no check that it is cold now: the
            # prefetcher, polling every 0.2 s, may already be warming it as a lower-ranked prediction).
            user.cold()
            user.run(name)
            wait_for(f"launch {rnd}/{name} to be ingested", lambda b=before: memo.launches() > b)
            memo.record_cgroup_changes()
            if rnd == 0:
                continue
            try:
                wait_for(f"{nxt} predicted first", lambda n=nxt: memo.get(
                    "/v1/predictions", uid=USER, k=3)["predictions"][0]["app"] == user.apps[n], timeout=10)
                top_ok = True
            except AssertionError:
                top_ok = False
            try:
                wait_for(f"{nxt} prefetched", lambda n=nxt: user.resident(n) >= 0.9, timeout=10)
            except AssertionError:
                pass
            steps.append((rnd, name, nxt, top_ok, round(user.resident(nxt), 3)))
            memo.record_cgroup_changes()
    print("round, ran, next, next predicted first, share of next's data resident before it started:")
    for s in steps:
        print("  ", s)
    must = [s for s in steps if s[0] >= MUST_FROM_ROUND]
    assert all(s[3] for s in must), f"next program not predicted first: {steps}\n{memo.log('inference')}"
    assert all(s[4] >= 0.9 for s in must), f"not prefetched: {steps}\n{memo.log('prefetcher')[-4000:]}"
    prefetcher_log = memo.log("prefetcher")
    assert f"for {user.apps['b']}" in prefetcher_log and "read ahead" in prefetcher_log
    if user.cgroup is not None:  # C ran in its own memory cgroup while predicted: it was shielded
        assert any(str(user.cgroup) in f for f in memo.cgroup_changes), memo.cgroup_changes


def test_status_and_queries(memo: Memo, user: ScriptedUser) -> None:
    def healthy() -> dict | None:
        r = memo.memo("status", "--json")
        report = json.loads(r.stdout)
        return report if r.returncode == 0 and report["prefetch"]["bytes_prefetched"] > 0 else None

    report = wait_for("memo status: healthy, with prefetch feedback", healthy, timeout=30, every=1)
    assert all(s["healthy"] and s["state"] == "running" for s in report["services"].values()), report
    assert report["events"] > 0 and report["lost"] == 0 and report["accuracy"]["top1"] > 0
    table = memo.memo("status")
    assert table.returncode == 0 and "inference" in table.stdout and "prefetcher" in table.stdout
    pred = memo.memo("predict", "--uid", str(USER))
    assert pred.returncode == 0 and "memo-e2e-" in pred.stdout, pred.stdout + pred.stderr
    prof = memo.memo("profile", "memo-e2e-b")
    assert prof.returncode == 0 and str(user.data["b"]) in prof.stdout, prof.stdout + prof.stderr
    expl = memo.memo("explain", user.apps["a"], "--uid", str(USER), "--json")  # C ran last: A is next
    assert expl.returncode == 0 and json.loads(expl.stdout)["rank"] == 1, expl.stdout + expl.stderr
    missing = memo.memo("profile", "no-such-program")
    assert missing.returncode == 1 and "no launches" in missing.stderr


@pytest.mark.parametrize("service", ["inference", "collector", "prefetcher"])
def test_killed_service_comes_back_without_losing_events(memo: Memo, user: ScriptedUser,
                                                         service: str) -> None:
    before = memo.pids()
    d_before = memo.app_launches(user.apps["d"])
    os.kill(before[service], signal.SIGKILL)
    if service == "inference":  # launches while it is down: the collector spools them
        for _ in range(3):
            user.run("d")

    def back() -> dict[str, int] | None:
        s = memo.state()["services"][service]
        return memo.pids() if s["state"] == "running" and s["pid"] != before[service] else None

    after = wait_for(f"{service} to be restarted", back, timeout=60, every=0.2)
    for other, pid in before.items():
        if other != service:
            assert after[other] == pid and alive(pid), f"{other} restarted too"
    if service != "inference":
        user.run("d")  # the restarted collector sees it; the prefetcher's restart does not matter
    want = d_before + (3 if service == "inference" else 1)
    wait_for(f"{want} launches of d", lambda: memo.app_launches(user.apps["d"]) == want, timeout=30)
    src = memo.source()
    assert src["batches"] == src["seq"] + 1, f"a batch is missing: {src}"
    assert memo.state()["services"][service]["restarts"] >= 1


def test_a_stopped_service_is_killed_and_restarted_by_the_watchdog(memo: Memo) -> None:
    """SIGSTOP used to go unnoticed for good; the watchdog (services.watchdog_s, 6 s here) restarts it."""
    before = memo.pids()
    os.kill(before["prefetcher"], signal.SIGSTOP)

    def back() -> dict[str, int] | None:
        s = memo.state()["services"]["prefetcher"]
        return memo.pids() if s["state"] == "running" and s["pid"] != before["prefetcher"] else None

    wait_for("the stopped prefetcher to be restarted", back, timeout=60, every=0.5)
    assert not alive(before["prefetcher"])
    assert "stuck for" in memo.log("supervisor")


def test_down_leaves_nothing_behind(memo: Memo, user: ScriptedUser) -> None:
    user.stop_running()
    memo.pids()
    memo.record_cgroup_changes()
    r = memo.memo("down")
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    assert not [p for p in memo.seen_pids if alive(p)], "a MEMO process survived `memo down`"
    assert not memo.pin_dir.exists()
    for prog in memo.prog_ids:
        gone = subprocess.run(["bpftool", "prog", "show", "id", str(prog)], capture_output=True)
        assert gone.returncode != 0, f"program {prog} is still loaded"
    state = json.loads((memo.data_dir / "prefetcher-state.json").read_text()) \
        if (memo.data_dir / "prefetcher-state.json").exists() else {"changes": []}
    assert state["changes"] == []
    from pathlib import Path

    for file, old in memo.cgroup_changes.items():
        if Path(file).exists():
            assert Path(file).read_text().strip() == old, f"{file} not restored"
    assert "removing" not in memo.log("collector").split("stopped after")[-1]
    left = {p.name for p in memo.run_dir.iterdir()} & {
        "inference.sock", "inference-user.sock", "inference.port", "supervisor.lock"}
    assert not left, f"`memo down` left {left}"
    assert memo.memo("down").stdout.startswith("MEMO is not running")


def test_a_killed_supervisor_takes_its_services_along_and_up_is_truthful(memo: Memo) -> None:
    """kill -9 of the supervisor: its services go with it (PR_SET_PDEATHSIG), and the next `memo up`
    does not take the dead supervisor's state file for a running MEMO."""
    r = memo.memo("up", "--timeout", "240")
    assert r.returncode == 0, r.stdout + r.stderr
    first = memo.pids()
    os.kill(memo.state()["pid"], signal.SIGKILL)
    wait_for("the services to stop with their supervisor", lambda: not any(alive(p) for p in first.values()),
             timeout=60, every=0.5)
    # Every service quiet (no INFO line: none says "ready" or "started" in its log): the supervisor knows
    # they are ready from their READY=1 notices alone (memo.notify), so rewording a log line breaks nothing.
    r = memo.memo("up", "--timeout", "240", MEMO_LOG_LEVEL="ERROR")
    assert r.returncode == 0 and "MEMO is up" in r.stdout, r.stdout + r.stderr
    assert all(s["state"] == "running" for s in memo.state()["services"].values())
    now = memo.pids()
    assert all(alive(p) for p in now.values()) and not set(now.values()) & set(first.values()), (first, now)
    assert memo.memo("down").returncode == 0
    assert not [p for p in now.values() if alive(p)]
