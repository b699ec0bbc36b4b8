"""Hostile input and crash safety on the real service (issue 13): each case failed before its fix.

One bad event is refused with its batch (a 4xx naming the event and the field), a poisoned row already
in the store is quarantined rather than a reason to exit, and a corrupt database is moved aside with
one clear message instead of a restart loop."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.inference.conftest import Service
from tests.inference.events import batch, exec_ev, fork_ev, page_ev, session

GOOD = [exec_ev(10, 1, "/usr/bin/bash", ["-bash"]), fork_ev(11, 10), exec_ev(11, 10, "/opt/x/app")]
BAD = {
    "wall_ts inf": ({**GOOD[2], "wall_ts": "INF"}, "wall_ts"),
    "wall_ts nan": ({**GOOD[2], "wall_ts": "NAN"}, "wall_ts"),
    "wall_ts past 2100": ({**GOOD[2], "wall_ts": 5e9}, "wall_ts"),
    "NUL in a path": (page_ev(11, "/opt/x/lib.so\0/etc/shadow", 0), "path"),
    "relative path": (page_ev(11, "lib/x.so", 0), "path"),
    "/proc/kcore": (page_ev(11, "/proc/kcore", 0), "path"),
    "/dev/zero": (page_ev(11, "/dev/zero", 0), "path"),
    "dot-dot": (page_ev(11, "/opt/x/../../etc/shadow", 0), "path"),
    "escape in a path": (page_ev(11, "/opt/x/\x1b]0;pwned\x07", 0), "path"),
    "40 GB range": (page_ev(11, "/opt/x/lib.so", 0, 10_000_000), "nr_pages"),
    "pid out of range": ({**GOOD[1], "pid": 2**40}, "pid"),
    "relative exe": ({**GOOD[2], "exe": "bin/app"}, "exe"),
    "10k args": ({**GOOD[2], "argv": ["x"] * 10_000}, "argv"),
}


def _raw(events: list[dict]) -> bytes:
    """JSON as a collector could send it, with inf/NaN literals (json.dumps would write strings)."""
    return batch("h", 1, events).replace(b'"INF"', b"1e999").replace(b'"NAN"', b"NaN")


@pytest.mark.parametrize("case", sorted(BAD))
def test_one_bad_event_refuses_its_batch_by_name(service: Service, case: str) -> None:
    event, field = BAD[case]
    r = service.unix.post("/v1/events", content=_raw([*GOOD, event]),
                          headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "events.3" in detail and field in json.dumps(r.json()["errors"]), detail
    assert service.unix.get("/v1/sources").json() == [], "nothing of the batch is stored"
    assert service.unix.get("/healthz").json()["status"] == "ok"


def test_a_poisoned_row_in_the_store_is_quarantined_not_a_crash_loop(service: Service) -> None:
    """A launch with an impossible time, written by an older version, used to stop every start with
    exit 3; now it is skipped, counted and logged once, and the rest is learnt."""
    service.unix.post("/v1/events", content=batch("p", 1, session(["/usr/bin/vim", "/usr/bin/git"] * 3)))
    service.wait_launches(1000, 6)
    service.stop()
    db = sqlite3.connect(service.db)
    db.execute("UPDATE launches SET wall_ts = 9e999 WHERE id = (SELECT MIN(id) FROM launches WHERE app = "
               "'/usr/bin/git')")
    db.execute("DELETE FROM kv WHERE key LIKE '%snapshot%'")  # make the start replay every launch
    db.commit()
    db.close()
    service.start()
    health = service.unix.get("/healthz").json()
    assert health["status"] == "ok" and health["detail"]["quarantined"] == 1, health
    assert "memo_launches_quarantined_total 1.0" in service.unix.get("/metrics").text
    got = service.unix.get("/v1/predictions", params={"uid": 1000}).json()
    assert {p["app"] for p in got["predictions"]} >= {"/usr/bin/vim", "/usr/bin/git"}
    log = (service.root / "service.log").read_text()
    assert log.count("quarantined") == 1, log


def test_a_corrupt_database_is_moved_aside_with_one_clear_message(service: Service) -> None:
    service.unix.post("/v1/events", content=batch("p", 1, session(["/usr/bin/vim"] * 3))).raise_for_status()
    service.stop()
    db = service.db
    with open(db, "r+b") as f:  # the header survives, the pages behind it do not
        f.seek(4096)
        f.write(b"\xde\xad" * 8192)
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    service.start()
    health = service.unix.get("/healthz").json()
    assert health["status"] == "ok", health
    assert "corrupt-" in health["detail"]["database_recovered"]
    aside = list(service.db.parent.glob("inference.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].stat().st_size > 0
    assert service.unix.get("/v1/apps").json() == [], "it starts empty, and says so"
    log = (service.root / "service.log").read_text()
    assert "moved aside" in log and "Traceback" not in log
