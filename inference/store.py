"""SQLite (WAL) store: what the collectors sent, the launches derived from it, profiles, feedback and
model snapshots, so that the service survives restarts.

One connection behind one lock: writes are batched into one transaction per request (executemany),
which is what makes ingest cheap, and every read is short. ``batches`` holds (source_id, seq) of every
stored batch: the primary key is the dedup that turns at-least-once delivery into exactly-once effect.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources(
  source_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, batches INTEGER NOT NULL, events INTEGER NOT NULL,
  lost INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batches(
  source_id TEXT NOT NULL, seq INTEGER NOT NULL, n_events INTEGER NOT NULL, received_at REAL NOT NULL,
  PRIMARY KEY(source_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS execs(
  source_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, wall_ts REAL NOT NULL, pid INTEGER NOT NULL,
  ppid INTEGER NOT NULL, uid INTEGER NOT NULL, cgroup_id INTEGER NOT NULL, comm TEXT NOT NULL,
  filename TEXT NOT NULL, exe TEXT NOT NULL, argv TEXT NOT NULL, cgroup_path TEXT NOT NULL,
  launch_id INTEGER);
CREATE TABLE IF NOT EXISTS forks(
  source_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, pid INTEGER NOT NULL, ppid INTEGER NOT NULL,
  uid INTEGER NOT NULL, comm TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exits(
  source_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, pid INTEGER NOT NULL, exit_code INTEGER NOT NULL,
  minflt INTEGER NOT NULL, majflt INTEGER NOT NULL, swapin INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters(
  source_id TEXT NOT NULL, type TEXT NOT NULL, ts_ns INTEGER NOT NULL, pid INTEGER NOT NULL,
  a INTEGER NOT NULL, b INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pages(
  source_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, pid INTEGER NOT NULL, dev INTEGER NOT NULL,
  ino INTEGER NOT NULL, idx INTEGER NOT NULL, nr_pages INTEGER NOT NULL, path TEXT NOT NULL,
  launch_id INTEGER);
CREATE INDEX IF NOT EXISTS pages_launch ON pages(launch_id) WHERE launch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS launches(
  id INTEGER PRIMARY KEY, source_id TEXT NOT NULL, uid INTEGER NOT NULL, app TEXT NOT NULL,
  pid INTEGER NOT NULL, ts_ns INTEGER NOT NULL, wall_ts REAL NOT NULL, exe TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS launches_app ON launches(app, id);
CREATE TABLE IF NOT EXISTS feedback(
  id INTEGER PRIMARY KEY, app TEXT NOT NULL, uid INTEGER NOT NULL, action TEXT NOT NULL, ts REAL NOT NULL,
  bytes_prefetched INTEGER NOT NULL, bytes_used INTEGER NOT NULL, bytes_wasted INTEGER NOT NULL,
  launched INTEGER NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS model_state(
  uid INTEGER PRIMARY KEY, data BLOB NOT NULL, last_launch_id INTEGER NOT NULL, saved_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

PAGE_SIZE = 4096


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _move_aside(path: Path) -> Path:
    """Rename the database and its WAL files to <name>.corrupt-<time>, so the service can start empty."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for src, dst in zip((path, *_sidecars(path)), (aside, *_sidecars(aside)), strict=True):
        if src.exists():
            os.replace(src, dst)
    return aside


class Store:
    """The service's database. Thread-safe: every call takes the one lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.recovered: str | None = None  # why the previous database was moved aside at this start
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.parent.stat().st_mode & stat.S_ISVTX:  # a shared folder such as /tmp: never narrowed
            log.warning("database %s is in a shared folder: the files are MEMO's alone (0600), the folder "
                        "is left as it is", path)
        else:
            os.chmod(path.parent, 0o700)  # every user's launch history, with argv: MEMO's alone
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            aside = _move_aside(path)
            self.recovered = f"{exc} (the unreadable database is kept as {aside})"
            log.error("database %s is unreadable: %s; moved aside to %s, starting with an empty store "
                      "(what it held is lost to the models; the file is there for a post-mortem)",
                      path, exc, aside)
            self._db = self._open(path)
        self.lock = threading.RLock()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        """Connect, check and create the schema; DatabaseError for a file that is not a sound database."""
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            for f in (path, *_sidecars(path)):
                if f.exists():
                    os.chmod(f, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA temp_store=MEMORY")
            db.executescript(SCHEMA)
            check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit: all of it or none of it (a rejected batch leaves nothing behind)."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self._db.execute(sql, args).fetchall()

    # ---------------------------------------------------------------- ingest

    @staticmethod
    def has_batch(db: sqlite3.Connection, source_id: str, seq: int) -> bool:
        return db.execute("SELECT 1 FROM batches WHERE source_id=? AND seq=?", (source_id, seq)).fetchone() \
            is not None

    @staticmethod
    def source_seq(db: sqlite3.Connection, source_id: str) -> int:
        row = db.execute("SELECT seq FROM sources WHERE source_id=?", (source_id,)).fetchone()
        return int(row[0]) if row else -1

    @staticmethod
    def add_batch(db: sqlite3.Connection, source_id: str, seq: int, n_events: int, lost: int) -> int:
        """Record a batch and its source's counters; returns the highest seq stored for the source."""
        now = time.time()
        db.execute("INSERT INTO batches VALUES (?,?,?,?)", (source_id, seq, n_events, now))
        db.execute(
            "INSERT INTO sources VALUES (?,?,1,?,?,?) ON CONFLICT(source_id) DO UPDATE SET "
            "seq=max(seq, excluded.seq), batches=batches+1, events=events+excluded.events, "
            "lost=lost+excluded.lost, updated_at=excluded.updated_at",
            (source_id, seq, n_events, lost, now))
        return Store.source_seq(db, source_id)

    @staticmethod
    def insert_many(db: sqlite3.Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            marks = ",".join("?" * len(rows[0]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def sources(self) -> list[tuple[str, int, int, int]]:
        return self.query("SELECT source_id, seq, batches, events FROM sources ORDER BY source_id")

    def lost(self) -> int:
        """Records the kernel could not deliver, summed over collectors."""
        return int(self.query("SELECT COALESCE(SUM(lost), 0) FROM sources")[0][0])

    # ---------------------------------------------------------------- launches and apps

    def launches_after(self, launch_id: int, uid: int | None = None) -> list[tuple[int, int, str, float]]:
        """(id, uid, app, wall_ts) of launches after an id, oldest first (model replay)."""
        if uid is None:
            return self.query("SELECT id, uid, app, wall_ts FROM launches WHERE id>? ORDER BY id",
                              (launch_id,))
        return self.query("SELECT id, uid, app, wall_ts FROM launches WHERE id>? AND uid=? ORDER BY id",
                          (launch_id, uid))

    def max_launch_id(self) -> int:
        return int(self.query("SELECT coalesce(max(id), 0) FROM launches")[0][0])

    def apps(self) -> list[tuple[str, int, float]]:
        return self.query("SELECT app, count(*), max(wall_ts) FROM launches GROUP BY app ORDER BY app")

    def app_launches(self, app: str) -> int:
        return int(self.query("SELECT count(*) FROM launches WHERE app=?", (app,))[0][0])

    def profiled_launches(self, app: str, recent: int) -> list[tuple[int, int, int]]:
        """(launch id, page rows, last page rowid) of the app's last ``recent`` launches that read pages:
        a launch's rows only grow, so the pair says whether a copy of its pages read earlier is whole."""
        return self.query(
            "SELECT launch_id, count(*), max(rowid) FROM pages WHERE launch_id IN ("
            " SELECT l.id FROM launches l"
            " WHERE l.app=? AND EXISTS (SELECT 1 FROM pages p WHERE p.launch_id=l.id)"
            " ORDER BY l.id DESC LIMIT ?) GROUP BY launch_id", (app, recent))

    def launch_pages(self, launch_id: int) -> list[tuple[str, int, int]]:
        """(path, idx, nr_pages) that one launch read."""
        return self.query("SELECT path, idx, nr_pages FROM pages WHERE launch_id=?", (launch_id,))

    # ---------------------------------------------------------------- feedback

    def add_feedback(self, rows: Iterable[tuple[Any, ...]]) -> int:
        rows = list(rows)
        with self.transaction() as db:
            db.executemany("INSERT INTO feedback(app, uid, action, ts, bytes_prefetched, bytes_used, "
                           "bytes_wasted, launched, received_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def feedback_summary(self) -> list[tuple[str, int, int, int, int, int]]:
        """Per app: (app, actions, prefetched, used, wasted, launched)."""
        return self.query("SELECT app, count(*), sum(bytes_prefetched), sum(bytes_used), sum(bytes_wasted), "
                          "sum(launched) FROM feedback GROUP BY app ORDER BY app")

    # ---------------------------------------------------------------- model state and key/value

    def save_models(self, states: Iterable[tuple[int, bytes, int]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO model_state VALUES (?,?,?,?)",
                           [(uid, data, last, now) for uid, data, last in states])

    def load_models(self) -> list[tuple[int, bytes, int]]:
        return [(int(u), bytes(d), int(last)) for u, d, last in
                self.query("SELECT uid, data, last_launch_id FROM model_state ORDER BY uid")]

    def put(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?,?)", (key, json.dumps(value)))

    def get(self, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM kv WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else default
