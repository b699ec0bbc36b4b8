"""The API through a real `memo-inference` (uvicorn on a real Unix socket and a real TCP port)."""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import quote

from memo.contract import MAX_BATCH_EVENTS, AppProfile, EventAck, Predictions, SourceStats
from tests.inference.conftest import Service
from tests.inference.events import batch, exec_ev, fork_ev, page_ev, session
from tests.inference.proc_trees import EXPECTED, load_fixture


def test_socket_mode_and_port(service: Service) -> None:
    mode = stat.S_IMODE(os.stat(service.socket).st_mode)
    assert mode == 0o660
    assert service.port > 0
    assert service.tcp.get("/healthz").json()["status"] == "ok"


def test_same_batch_twice_is_stored_once(service: Service) -> None:
    body = batch("host-a", 1, session(["/usr/bin/vim", "/usr/bin/git"]))
    first = EventAck.model_validate(service.unix.post("/v1/events", content=body).json())
    again = service.unix.post("/v1/events", content=body)
    assert again.status_code == 200
    second = EventAck.model_validate(again.json())
    assert (first.accepted, first.duplicate, first.seq) == (7, False, 1)
    assert (second.accepted, second.duplicate, second.seq) == (0, True, 1)
    service.unix.post("/v1/events", content=batch("host-a", 2, [fork_ev(5000, 1)])).raise_for_status()
    # an old batch replayed after a newer one is still a duplicate, and the ack says the highest seq
    replay = EventAck.model_validate(service.unix.post("/v1/events", content=body).json())
    assert (replay.duplicate, replay.seq) == (True, 2)
    stats = [SourceStats.model_validate(s) for s in service.unix.get("/v1/sources").json()]
    assert stats == [SourceStats(source_id="host-a", seq=2, batches=2, events=8)]
    assert [a["launches"] for a in service.unix.get("/v1/apps").json()] == [1, 1]


def test_bad_batches_are_refused_whole_and_the_service_stays_up(service: Service) -> None:
    post = service.unix.post
    good = session(["/usr/bin/vim"])
    cases = {
        b"{not json": 400,
        b"": 422,
        b"[]": 422,
        json.dumps({"source_id": "s", "seq": "one", "events": []}).encode(): 422,
        json.dumps({"source_id": "bad id!", "seq": 1, "events": []}).encode(): 422,
        # the last event is wrong: nothing of the batch may be stored
        batch("s", 1, [*good, {**good[-1], "pid": "x"}]): 422,
        batch("s", 2, [{"type": "nope", "ts_ns": 1, "pid": 1}]): 422,
        batch("s", 3, [fork_ev(i, 1) for i in range(MAX_BATCH_EVENTS + 1)]): 413,
    }
    for body, status in cases.items():
        r = post("/v1/events", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (body[:80], r.text)
        assert r.json()["detail"], r.text
    huge = post("/v1/events", content=(b" " * (1 << 20) for _ in range(40)))  # 40 MiB, chunked
    assert huge.status_code == 413
    assert service.alive()
    assert service.unix.get("/v1/sources").json() == []
    assert service.unix.get("/v1/apps").json() == []
    metrics = service.unix.get("/metrics").text
    assert 'memo_batches_total{result="rejected"} 9.0' in metrics


def test_writes_are_refused_on_tcp(service: Service) -> None:
    body = batch("tcp", 1, session(["/usr/bin/vim"]))
    r = service.tcp.post("/v1/events", content=body)
    assert r.status_code == 405 and "Unix socket" in r.json()["detail"]
    r = service.tcp.post("/v1/feedback", json={"items": []})
    assert r.status_code == 405
    assert service.tcp.put("/v1/events", content=body).status_code == 405
    assert service.unix.get("/v1/sources").json() == []
    assert service.tcp.get("/v1/sources").status_code == 200
    assert service.tcp.get("/openapi.json").json()["paths"]["/v1/events"]["post"]


def test_profiles_from_a_real_process_tree(service: Service) -> None:
    """The recorded shell session: launches and their page-cache profiles over the API."""
    events = [e.model_dump() for e in load_fixture()]
    service.unix.post("/v1/events", content=batch("rec", 1, events)).raise_for_status()
    apps = {a["app"]: a for a in service.unix.get("/v1/apps").json()}
    assert set(apps) == set(EXPECTED)
    assert apps[EXPECTED[0]]["launches"] == 2
    profiled = [a for a in apps.values() if a["profile_bytes"] > 0]
    assert profiled, "the session's page-cache records belong to its launches"
    app = profiled[0]["app"]
    profile = AppProfile.model_validate(service.unix.get(f"/v1/apps/{quote(app, safe='')}/profile").json())
    assert profile.bytes == profiled[0]["profile_bytes"] and profile.ranges


def test_profile_ranges_merge_and_unknown_app_is_404(service: Service) -> None:
    evs = [exec_ev(10, 1, "/usr/bin/bash", ["-bash"]), fork_ev(11, 10), exec_ev(11, 10, "/opt/x/app"),
           page_ev(11, "/opt/x/lib.so", 0, 2), page_ev(11, "/opt/x/lib.so", 2, 3),
           page_ev(11, "/opt/x/lib.so", 9),
           fork_ev(12, 11), page_ev(12, "/opt/x/data", 4), page_ev(11, "", 1)]
    service.unix.post("/v1/events", content=batch("p", 1, evs)).raise_for_status()
    for url in ("/v1/apps//opt/x/app/profile", f"/v1/apps/{quote('/opt/x/app', safe='')}/profile"):
        got = AppProfile.model_validate(service.unix.get(url).json())
        assert [(r.path, r.offset, r.length) for r in got.ranges] == [
            ("/opt/x/data", 4 * 4096, 4096), ("/opt/x/lib.so", 0, 5 * 4096),
            ("/opt/x/lib.so", 9 * 4096, 4096)]
        assert (got.launches, got.bytes) == (1, 7 * 4096)
    r = service.unix.get("/v1/apps/%2Fno%2Fsuch/profile")
    assert r.status_code == 404 and "/no/such" in r.json()["detail"]


def test_predictions_explain_metrics_and_feedback(service: Service) -> None:
    apps = ["/usr/bin/vim", "/usr/bin/git", "/usr/bin/make"] * 10
    service.unix.post("/v1/events", content=batch("u", 1, session(apps, uid=1000))).raise_for_status()
    service.wait_launches(1000, len(apps))
    p = Predictions.model_validate(service.unix.get("/v1/predictions", params={"uid": 1000, "k": 3}).json())
    assert p.last_app == "/usr/bin/make" and len(p.predictions) == 3
    assert p.predictions[0].app == "/usr/bin/vim" and set(p.predictions[0].models) == {"mfu", "mru", "markov",
                                                                                         "ppm"}
    assert p.predictions[0].horizon_s > 0
    ex = service.unix.get("/v1/explain", params={"uid": 1000, "app": "/usr/bin/vim"}).json()
    assert ex["rank"] == 1 and {m["name"] for m in ex["models"]} == {"mfu", "mru", "markov", "ppm"}
    assert any(m["weights"] for m in ex["models"])
    item = {"app": "/usr/bin/vim", "uid": 1000, "action": "pagecache", "ts": 1.7e9, "bytes_prefetched": 100,
            "bytes_used": 75, "bytes_wasted": 25, "launched": True}
    assert service.unix.post("/v1/feedback", json={"items": [item]}).json() == {"accepted": 1}
    assert service.unix.post("/v1/feedback", json={"items": [{**item, "bytes_used": -1}]}).status_code == 422
    summary = service.unix.get("/v1/feedback").json()
    assert summary[0]["hit_rate"] == 0.75 and summary[0]["waste_rate"] == 0.25
    m = service.tcp.get("/metrics").text
    for needle in ("memo_events_ingested_total", "memo_predictions_served_total 1.0", 'memo_accuracy{k="5"}',
                   "memo_model_latency_seconds_bucket", 'memo_feedback_hit_rate 0.75'):
        assert needle in m, needle
    assert float(m.split('memo_accuracy{k="5"} ')[1].split()[0]) > 0.8
    assert "/usr/bin" not in m, "/metrics is public (TCP): no label names a program"


def test_restart_gives_the_same_predictions(service: Service) -> None:
    apps = ["/usr/bin/vim", "/usr/bin/git", "/usr/bin/make", "/usr/bin/vim", "/usr/bin/less"] * 6
    service.unix.post("/v1/events", content=batch("r", 1, session(apps, uid=7))).raise_for_status()
    service.wait_launches(7, len(apps))

    def ranking() -> list[tuple[str, float, dict[str, float]]]:
        p = Predictions.model_validate(service.unix.get("/v1/predictions", params={"uid": 7, "k": 5}).json())
        return [(x.app, round(x.probability, 9), {k: round(v, 9) for k, v in x.models.items()})
                for x in p.predictions]

    before = ranking()
    sources = service.unix.get("/v1/sources").json()
    service.restart()
    assert ranking() == before
    assert service.unix.get("/v1/sources").json() == sources
    # the process table survived too: a helper of the last launch is still not a launch
    more = [fork_ev(9001, 1000 + len(apps) - 1, 7)]
    service.unix.post("/v1/events", content=batch("r", 2, more)).raise_for_status()
    dup = service.unix.post("/v1/events", content=batch("r", 1, session(apps, uid=7))).json()
    assert dup["duplicate"] and dup["seq"] == 2


def test_changes_long_poll_answers_when_a_launch_arrives(service: Service) -> None:
    """GET /v1/predictions/changes waits while nothing changes and answers as soon as a launch is
    ingested: the launch count moves first, then the user's ranking."""
    import threading
    import time

    from memo.contract import PredictionChanges

    now = PredictionChanges.model_validate(service.unix.get("/v1/predictions/changes",
                                                            params={"since": 0, "wait_s": 0}).json())
    t0 = time.monotonic()
    idle = PredictionChanges.model_validate(service.unix.get(
        "/v1/predictions/changes", params={"since": now.version, "wait_s": 0.5}).json())
    assert time.monotonic() - t0 >= 0.45 and idle.version == now.version and idle.uids == []

    answer: list[PredictionChanges] = []

    def wait() -> None:
        r = service.unix.get("/v1/predictions/changes", params={"since": now.version, "wait_s": 20})
        answer.append(PredictionChanges.model_validate(r.json()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert not answer, "answered before anything changed"
    t0 = time.monotonic()
    body = batch("lp", 1, session(["/usr/bin/vim"], uid=77))
    service.unix.post("/v1/events", content=body).raise_for_status()
    waiter.join(timeout=10)
    assert answer and time.monotonic() - t0 < 2.0, "the long-poll did not answer on a launch"
    assert answer[0].version > now.version and answer[0].launches == now.launches + 1
    service.wait_launches(77, 1)
    deadline = time.monotonic() + 5  # the ranking is refreshed just after the launch is learnt
    while True:
        later = PredictionChanges.model_validate(service.unix.get(
            "/v1/predictions/changes", params={"since": now.version, "wait_s": 0}).json())
        if 77 in later.uids or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert 77 in later.uids
