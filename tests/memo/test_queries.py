"""`memo predict`, `memo explain`, `memo profile` and `memo status` against a real inference service,
read by content (issue 14): explain agrees with predict and says what its numbers mean, an empty profile
says why, sizes are for people, and status gives a reason and a non-zero exit for what is unhealthy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inference.conftest import Service
from tests.inference.events import batch, exec_ev, fork_ev, page_ev, session

MEMO = [sys.executable, "-m", "memo.cli"]
REPO = Path(__file__).resolve().parents[2]
UID = 1000


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("queries"))
    s.start()
    apps = ["/usr/bin/vim", "/usr/bin/git", "/usr/bin/make"] * 8
    evs = session(apps, uid=UID)
    # /usr/bin/cat: launched, but never used a file it could name -> an empty profile
    evs += [fork_ev(900, 100, UID), exec_ev(900, 100, "/usr/bin/cat", uid=UID, wall_ts=1.8e9),
            page_ev(900, "", 0)]
    evs += [fork_ev(901, 100, UID), exec_ev(901, 100, "/opt/big/app", uid=UID, wall_ts=1.8e9 + 60),
            page_ev(901, "/opt/big/lib.so", 0, 3000)]
    s.unix.post("/v1/events", content=batch("q", 1, evs)).raise_for_status()
    s.wait_launches(UID, len(apps) + 2)
    yield s
    s.stop()


def memo(svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**svc.env, "COLUMNS": "60"}  # narrow: titles and paths must still read whole
    return subprocess.run(MEMO + list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_explain_agrees_with_predict_and_says_what_it_shows(svc: Service) -> None:
    pred = json.loads(memo(svc, "predict", "--uid", str(UID), "--json").stdout)["predictions"]
    for i, p in enumerate(pred[:3], 1):
        ex = memo(svc, "explain", p["app"], "--uid", str(UID), "--json")
        data = json.loads(ex.stdout)
        assert data["rank"] == i and abs(data["probability"] - p["probability"]) < 1e-9, (p, data)
        assert {m["name"]: m["score"] for m in data["models"]} == pytest.approx(p["models"])
        assert all(m["rank"] is None or m["rank"] >= 1 for m in data["models"])
    text = memo(svc, "explain", pred[0]["app"], "--uid", str(UID))
    assert text.returncode == 0, text.stderr
    words = " ".join(text.stdout.split())
    assert "ranked #1 (as `memo predict` ranks it now)" in words
    for needle in ("its own rank", "log-probability", "1/its rank", "softmax"):
        assert needle in words, needle
    assert " lp " not in words and " rr " not in words, "no raw weight names"


def test_profile_reads_whole_at_any_width_and_an_empty_one_says_why(svc: Service) -> None:
    big = memo(svc, "profile", "/opt/big/app")
    assert big.returncode == 0, big.stderr
    words = " ".join(big.stdout.split())
    assert "/opt/big/app: 11.7 MiB in 1 file" in words and "11.7 MiB" in words
    assert "/opt/big/lib.so" in big.stdout
    empty = memo(svc, "profile", "/usr/bin/cat")
    assert empty.returncode == 0, empty.stderr
    words = " ".join(empty.stdout.split())
    assert "0 B in 0 files" in words and "Its profile is empty" in words and "launch window" in words


def test_status_gives_a_reason_and_fails_when_unhealthy(svc: Service) -> None:
    """No collector or prefetcher runs here: each gets its reason and the next step; exit status 1."""
    r = memo(svc, "status", "--json", "--interval", "0")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["services"]["inference"]["healthy"] is True
    for name in ("collector", "prefetcher"):
        s = report["services"][name]
        assert not s["healthy"] and "make up" in s["reason"], s
    table = memo(svc, "status", "--interval", "0")
    assert table.returncode == 1
    assert "collector: not running: start MEMO with" in " ".join(table.stdout.split())
