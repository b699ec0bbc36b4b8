"""The ingest hot path: one raw body in, one transaction out.

The body is validated in one ``validate_json`` call (no intermediate dicts), events are split by type
into row tuples, launches are derived incrementally by the source's segmenter, and everything is
written with executemany in a single transaction together with the (source_id, seq) dedup row, so a
batch is either stored whole or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from inference.segment import NewLaunch, Relabel, Rules, Segmenter
from inference.store import Store
from memo.contract import MAX_BATCH_EVENTS, EventAck, EventBatch

SEGMENTER_KEY = "segmenters"


class BatchError(Exception):
    """A batch the service refuses, with the HTTP status and a message that says what is wrong."""

    def __init__(self, status: int, message: str, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


def describe(exc: ValidationError, limit: int = 10) -> list[dict[str, object]]:
    """Pydantic errors trimmed to what a client needs: where, what, and the type."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()[:limit]]


def parse_batch(body: bytes) -> EventBatch:
    if not body:
        raise BatchError(422, "empty body: expected an EventBatch JSON object")
    try:
        return EventBatch.model_validate_json(body)
    except ValidationError as exc:
        errors = describe(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            raise BatchError(400, f"malformed JSON: {errors[0]['msg']}", errors) from None
        if any(e["loc"] == ["events"] and e["type"] == "too_long" for e in errors):
            raise BatchError(413, f"batch too large: at most {MAX_BATCH_EVENTS} events per batch",
                             errors) from None
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BatchError(422, f"invalid batch: {where}: {first['msg']} ({exc.error_count()} errors)",
                         errors) from None


@dataclass
class IngestResult:
    ack: EventAck
    launches: list[NewLaunch]
    counts: dict[str, int] = field(default_factory=dict)
    profiled: set[str] = field(default_factory=set)  # apps whose profiles got new pages
    # launches of earlier batches that turned out to be exec chains, as they are now
    relabeled: list[NewLaunch] = field(default_factory=list)


class Ingestor:
    """Stores batches and derives launches; keeps one segmenter per source."""

    def __init__(self, store: Store, rules: Rules, window_s: float, own_pids: frozenset[int] = frozenset()
                 ) -> None:
        self.store = store
        self.rules = rules
        self.own_pids = own_pids
        self.window_ns = int(window_s * 1e9)
        self.segmenters: dict[str, Segmenter] = {}
        self._lock = threading.Lock()
        self._next_launch = store.max_launch_id() + 1
        for sid, state in (store.get(SEGMENTER_KEY) or {}).items():
            self._segmenter(sid).load(state)

    def _segmenter(self, source_id: str) -> Segmenter:
        seg = self.segmenters.get(source_id)
        if seg is None:
            seg = self.segmenters[source_id] = Segmenter(source_id, self.rules, self.window_ns, self.own_pids)
        return seg

    def save_state(self) -> None:
        with self._lock:
            self.store.put(SEGMENTER_KEY, {sid: s.state() for sid, s in self.segmenters.items()})

    def ingest(self, body: bytes) -> IngestResult:
        batch = parse_batch(body)
        with self._lock:
            try:
                return self._store(batch)
            except (OverflowError, UnicodeEncodeError) as exc:
                raise BatchError(422, f"invalid batch: a value cannot be stored ({exc}); integers must fit "
                                 "in 64 bits and strings must be valid Unicode") from None

    def _store(self, batch: EventBatch) -> IngestResult:
        sid = batch.source_id
        now = time.time()
        with self.store.transaction() as db:
            if Store.has_batch(db, sid, batch.seq):
                ack = EventAck(source_id=sid, seq=Store.source_seq(db, sid), accepted=0, duplicate=True)
                return IngestResult(ack, [])
            seg = self._segmenter(sid)
            next_id = self._next_launch
            try:
                execs, forks, exits, counters, pages, launches = [], [], [], [], [], []
                relabels: list[Relabel] = []
                lost = 0
                for ev in batch.events:
                    t = ev.type
                    if t == "pagecache":
                        pages.append((sid, ev.ts_ns, ev.pid, ev.dev, ev.ino, ev.index, ev.nr_pages, ev.path,
                                      seg.launch_of(ev.pid, ev.ts_ns)))
                    elif t == "exec":
                        launch = seg.exec(ev, next_id, now)
                        if isinstance(launch, Relabel):
                            relabels.append(launch)
                        elif launch is not None:
                            launches.append((launch.id, sid, launch.uid, launch.app, launch.pid,
                                             launch.ts_ns, launch.wall_ts, launch.exe))
                            next_id += 1
                        execs.append((sid, ev.ts_ns, ev.wall_ts, ev.pid, ev.ppid, ev.uid, ev.cgroup_id,
                                      # argv[0] only: the arguments may hold tokens or passwords,
                                      # and only the segmenter (above, at ingest) reads them
                                      ev.comm, ev.filename, ev.exe, json.dumps(ev.argv[:1]), ev.cgroup_path,
                                      launch.id if launch else None))
                    elif t == "fork":
                        seg.fork(ev.pid, ev.ppid)
                        forks.append((sid, ev.ts_ns, ev.pid, ev.ppid, ev.uid, ev.comm))
                    elif t == "exit":
                        seg.exit(ev.pid, ev.ts_ns)
                        exits.append((sid, ev.ts_ns, ev.pid, ev.exit_code, ev.minflt, ev.majflt, ev.swapin))
                    elif t == "faults":
                        counters.append((sid, t, ev.ts_ns, ev.pid, ev.minflt, ev.majflt))
                    elif t == "swapin":
                        counters.append((sid, t, ev.ts_ns, ev.pid, ev.memcg_id, ev.count))
                    else:  # lost
                        lost += ev.count
                        counters.append((sid, t, ev.ts_ns, ev.pid, ev.count, 0))
                relabeled = _apply_relabels(db, relabels, launches)
                for table, rows in (("execs", execs), ("forks", forks), ("exits", exits),
                                    ("counters", counters), ("pages", pages), ("launches", launches)):
                    Store.insert_many(db, table, rows)
                high = Store.add_batch(db, sid, batch.seq, len(batch.events), lost)
            except BaseException:
                seg.rollback()
                raise
        seg.commit()
        self._next_launch = next_id
        found = [NewLaunch(*row) for row in launches]
        profiled = {seg.recent[p[-1]][1] for p in pages if p[-1] is not None and p[-1] in seg.recent}
        counts = {"exec": len(execs), "fork": len(forks), "exit": len(exits), "pagecache": len(pages),
                  "other": len(counters)}
        ack = EventAck(source_id=sid, seq=high, accepted=len(batch.events), duplicate=False)
        profiled |= {r.app for r in relabels}
        return IngestResult(ack, found, counts, profiled, relabeled)


def _apply_relabels(db: sqlite3.Connection, relabels: list[Relabel],
                    launches: list[tuple]) -> list[NewLaunch]:
    """Exec chains: a launch of this batch is rewritten in place before it is stored; one stored by an
    earlier batch is updated in the store and returned (the live models learn it as it is now)."""
    by_id = {row[0]: i for i, row in enumerate(launches)}
    earlier: dict[int, Relabel] = {}
    for r in relabels:
        i = by_id.get(r.id)
        if i is not None:
            row = launches[i]
            launches[i] = (row[0], row[1], r.uid, r.app, row[4], row[5], row[6], r.exe)
        else:
            earlier[r.id] = r
    out = []
    for r in earlier.values():
        db.execute("UPDATE launches SET uid=?, app=?, exe=? WHERE id=?", (r.uid, r.app, r.exe, r.id))
        row = db.execute("SELECT id, source_id, uid, app, pid, ts_ns, wall_ts, exe FROM launches WHERE id=?",
                         (r.id,)).fetchone()
        if row is not None:
            out.append(NewLaunch(*row))
    return out
