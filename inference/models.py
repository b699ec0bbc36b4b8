"""Per-user models in the live service: launches in, cached predictions out, heavy work off the request path.

Ingest hands new launches to a queue; one *observer* thread scores each launch against the user's
current ranking (prequential accuracy), lets the model learn it, and refreshes that user's cached
ranking. A *trainer* thread runs the models' deferred training (the LSTM). GET /v1/predictions reads
the cache only. Snapshots (every model + the shared population, all at the same launch id) go to the
store periodically and at shutdown; on start the launches after the snapshot are replayed, so a restart
gives the same predictions.
"""

from __future__ import annotations

import asyncio
import logging
import math
import posixpath
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inference import priority
from inference.llm import runtime as llm_runtime
from inference.metrics import Metrics
from inference.predictors import Context, Launch, Population, UserModel
from inference.segment import SHELLS, NewLaunch
from inference.store import Store
from memo.contract import MAX_TS, Prediction, Predictions

log = logging.getLogger(__name__)

CACHE_K = 20  # depth of each user's cached ranking; deeper asks are computed on demand
TRAIN_QUIET_S = 2.0  # deferred training waits this long after the latest launch (its start-up runs then)
LLM_POLL_S = 0.5  # how soon the trainer takes an asynchronous LLM answer into the rankings
MAX_DEFER_S = 30.0  # ... but no longer than this, however often programs start
SETTLE_S = 0.5
"""A launch of a shell script waits this long before the models learn it: launcher scripts (Debian's
/usr/bin/chromium, many desktop wrappers) exec the real program after some set-up, and that relabel
often comes in a later batch."""
POPULATION_KEY = "population"
SNAPSHOT_KEY = "snapshot_launch_id"
_STOP = object()


@dataclass
class Ranking:
    """A user's ranking as of their latest launch: what GET /v1/predictions serves."""

    generated_at: float
    last_app: str | None
    items: list[Prediction]


class Changes:
    """A version that moves on every ranking change, awaited by long-polling clients in the event loop.

    Bumped from the observer and trainer threads; waiters are woken through their loop's
    call_soon_threadsafe, so a waiting request costs nothing until something changes."""

    def __init__(self) -> None:
        self.version = 0
        self.launches = 0
        self._by_uid: dict[int, int] = {}
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # its loop is closed (the server is stopping)
                pass

    def changed(self, uid: int) -> None:
        with self._lock:
            self.version += 1
            self._by_uid[uid] = self.version
            self._wake()

    def launched(self, n: int) -> None:
        """New launches were stored: clients hear of it before the models have learnt them."""
        with self._lock:
            self.launches += n
            self.version += 1
            self._wake()

    def since(self, version: int) -> list[int]:
        with self._lock:
            return sorted(uid for uid, v in self._by_uid.items() if v > version)

    async def wait(self, since: int, timeout_s: float) -> None:
        """Return once the version is past ``since``, or after timeout_s."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.version != since:  # newer, or a client of an earlier run of the service
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard((loop, fut))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Models:
    def __init__(self, store: Store, names: Sequence[str], metrics: Metrics,
                 profile_bytes: Callable[[str], int], snapshot_every_s: float = 60.0,
                 profile_version: Callable[[str], int] = lambda app: 0, prior_min_users: int = 1) -> None:
        self.store = store
        self.names = list(names)
        self.metrics = metrics
        self.profile_bytes = profile_bytes
        self.profile_version = profile_version
        self.snapshot_every_s = snapshot_every_s
        self.prior_min_users = prior_min_users
        self.population = Population(prior_min_users)
        self.users: dict[int, UserModel] = {}
        self.last_app: dict[int, str] = {}
        self.gap: dict[int, tuple[float | None, float]] = {}  # uid -> (last ts, EWMA of gaps)
        self.cache: dict[int, Ranking] = {}
        self.changes = Changes()
        self._cold: tuple[int, Ranking] | None = None  # users without a model: the population's ranking
        self.last_launch_id = 0
        self.quarantined = 0  # launches the models refused since start (memo status shows them)
        self._queue: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()  # users, snapshot consistency
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._train_wake = threading.Event()  # a launch was learned (or the service stops)
        self._dirty = False
        self._settling: dict[int, tuple[float, NewLaunch]] = {}  # launch id -> (due, launch)
        self._settle_lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._restore()
        self._train_wake.set()  # restored models may be due a round
        for target, name in ((self._observer, "memo-observer"), (self._trainer, "memo-trainer")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Learn what is queued, stop the threads, snapshot."""
        self._flush_settling()
        self._queue.put(_STOP)
        self._stopping.set()
        self._train_wake.set()
        for t in self._threads:
            t.join(timeout=30)
        self.snapshot()

    def _restore(self) -> None:
        data = self.store.get(POPULATION_KEY)
        snap = int(self.store.get(SNAPSHOT_KEY, 0))
        if data is not None:
            try:
                self.population = Population.from_bytes(bytes.fromhex(data), self.prior_min_users)
            except (ValueError, KeyError, TypeError) as exc:  # older format, or another prior_min_users
                log.info("population prior not reusable (%s): relearning every model from the launches", exc)
                snap = 0
        for uid, blob, _last in (self.store.load_models() if snap else ()):
            try:
                self.users[uid] = UserModel.from_bytes(blob, self.population, uid)
            except Exception:  # an unreadable snapshot costs that user's history, not the service
                log.exception("model of uid %d unreadable; relearning it from its launches", uid)
                snap = 0
        if snap == 0:
            self.users.clear()
            self.population = Population(self.prior_min_users)
        self.last_launch_id = snap
        replay = self.store.launches_after(snap)
        for lid, uid, app, ts in replay:
            self._learn(lid, uid, app, ts, score=False)
        for uid in self.users:
            self._refresh(uid)
        self.metrics.users.set(len(self.users))
        log.info("models: %d users restored at launch %d, %d launches replayed", len(self.users), snap,
                 len(replay))

    def snapshot(self) -> None:
        with self._lock:
            states = [(uid, m.to_bytes(), self.last_launch_id) for uid, m in self.users.items()]
            pop = self.population.to_bytes().hex()
            last = self.last_launch_id
            self._dirty = False
        self.store.save_models(states)
        self.store.put(POPULATION_KEY, pop)
        self.store.put(SNAPSHOT_KEY, last)

    # ---------------------------------------------------------------- learning

    def submit(self, launches: Sequence[NewLaunch]) -> None:
        if not launches:
            return
        now = time.monotonic()
        priority.launch_started()
        now_learnt = []
        with self._settle_lock:
            for launch in launches:
                if posixpath.basename(launch.exe) in SHELLS:
                    self._settling[launch.id] = (now + SETTLE_S, launch)
                else:
                    now_learnt.append(launch)
        if now_learnt:
            self._queue.put(now_learnt)

    def relabel(self, launches: Sequence[NewLaunch]) -> None:
        """Launches of earlier batches that turned out to be exec chains: one still settling is learnt
        as what it is now; one already learnt is learnt again as the program it became, so that the
        models' context is right (the wrapper's one launch stays in them: they cannot unlearn)."""
        again = []
        with self._settle_lock:
            for launch in launches:
                if launch.id in self._settling:
                    self._settling[launch.id] = (self._settling[launch.id][0], launch)
                else:
                    again.append(launch)
        if again:
            self._queue.put(again)

    def _settled(self) -> tuple[list[NewLaunch], float]:
        """The settling launches that are due, and the seconds until the next one is."""
        now = time.monotonic()
        with self._settle_lock:
            due = [lid for lid, (t, _) in self._settling.items() if t <= now]
            out = [self._settling.pop(lid)[1] for lid in due]
            nxt = min((t for t, _ in self._settling.values()), default=now + 1.0)
        return out, max(0.01, min(1.0, nxt - now))

    def _flush_settling(self) -> None:
        with self._settle_lock:
            out = [launch for _, launch in self._settling.values()]
            self._settling.clear()
        if out:
            self._queue.put(out)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every submitted launch is learnt (tests, shutdown)."""
        self._flush_settling()
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _model(self, uid: int) -> UserModel:
        model = self.users.get(uid)
        if model is None:
            model = self.users[uid] = UserModel(self.names, self.population, uid)
            self.metrics.users.set(len(self.users))
        return model

    def _learn(self, lid: int, uid: int, app: str, ts: float, score: bool = True) -> None:
        """Learn one launch; one the models cannot take is quarantined, never a reason to stop: the
        same stored row would stop every later start too (it is replayed)."""
        if not isinstance(ts, int | float) or not math.isfinite(ts) or not 0 <= ts <= MAX_TS or not app:
            self._quarantine(lid, uid, f"implausible launch (time {ts!r}, app {app!r})")
            return
        try:
            self._learn_one(lid, uid, app, float(ts), score)
        except Exception as exc:
            log.debug("launch %d failed to learn", lid, exc_info=True)
            self._quarantine(lid, uid, f"{type(exc).__name__}: {exc}")

    def _quarantine(self, lid: int, uid: int, why: str) -> None:
        self.metrics.quarantined.inc()
        self.quarantined += 1
        log.warning("launch %d of uid %d quarantined (skipped by the models): %s", lid, uid, why)
        with self._lock:
            self.last_launch_id = max(self.last_launch_id, lid)

    def _learn_one(self, lid: int, uid: int, app: str, ts: float, score: bool) -> None:
        with self._lock:
            model = self._model(uid)
            if score:
                t0 = time.perf_counter()
                ranked = model.predict(Context(now=ts), 5)
                self.metrics.model_latency.labels(op="predict").observe(time.perf_counter() - t0)
                apps = [r.app for r in ranked]
                self.metrics.score(apps.index(app) + 1 if app in apps else None)
            t0 = time.perf_counter()
            model.observe(Launch(app, ts))
            self.metrics.model_latency.labels(op="observe").observe(time.perf_counter() - t0)
            last_ts, ewma = self.gap.get(uid, (None, 0.0))
            if last_ts is not None and ts >= last_ts:
                ewma = (ts - last_ts) if ewma == 0.0 else 0.8 * ewma + 0.2 * (ts - last_ts)
            self.gap[uid] = (ts, ewma)
            self.last_app[uid] = app
            self.last_launch_id = max(self.last_launch_id, lid)
            self._dirty = True
        self._train_wake.set()

    def _observer(self) -> None:
        priority.lower_this_thread()
        last_snap = time.monotonic()
        while True:
            settled, wait = self._settled()
            if settled:
                self._queue.put(settled)
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
            elif isinstance(item, list):
                uids = set()
                for launch in item:
                    self._learn(launch.id, launch.uid, launch.app, launch.wall_ts)
                    uids.add(launch.uid)
                for uid in uids:
                    self._refresh(uid)
            if self._dirty and time.monotonic() - last_snap >= self.snapshot_every_s:
                try:
                    self.snapshot()
                except Exception:
                    log.exception("snapshot failed; will retry")
                last_snap = time.monotonic()

    def _trainer(self) -> None:
        """Sleeps until a launch was learned (only that gives a model training to do: its per-launch
        step or a round), then waits for TRAIN_QUIET_S without launches (a program is starting: its
        start-up gets the CPU), at most MAX_DEFER_S after the previous pass. No timer ticks (two a
        second faulted the service's memory back in under memory pressure, for nothing), except while
        an LLM runs asynchronously: its answer comes from the engine's thread, after the launch."""
        priority.lower_this_thread()
        last_round = time.monotonic()
        while True:
            scorer = llm_runtime.current()
            self._train_wake.wait(None if scorer is None or scorer.synchronous else LLM_POLL_S)
            self._train_wake.clear()
            if self._stopping.is_set():
                return
            while (left := TRAIN_QUIET_S - priority.since_launch()) > 0 and \
                    (room := MAX_DEFER_S - (time.monotonic() - last_round)) > 0:
                if self._stopping.wait(min(left, room)):
                    return
            last_round = time.monotonic()
            for uid, model in list(self.users.items()):
                t0 = time.perf_counter()
                try:
                    did = model.train_pending()
                except Exception:
                    log.exception("training uid %d failed", uid)
                    continue
                if did:
                    self.metrics.model_latency.labels(op="train").observe(time.perf_counter() - t0)
                    self._refresh(uid)

    # ---------------------------------------------------------------- predictions

    def _horizon(self, uid: int, p: float) -> float:
        gap = self.gap.get(uid, (None, 0.0))[1] or 60.0
        return round(min(gap / max(p, 0.01), 86_400.0), 3)

    def _rank(self, uid: int, k: int) -> Ranking:
        model = self.users.get(uid)
        now = time.time()
        if model is None:  # a user never seen: the population prior alone
            ranked = [(app, p, {}) for app, p in self.population.top(k)]
        else:
            t0 = time.perf_counter()
            ranked = [(r.app, r.probability, r.models) for r in model.predict(Context(now=now), k)]
            self.metrics.model_latency.labels(op="predict").observe(time.perf_counter() - t0)
        items = [Prediction(app=app, probability=min(max(float(p), 0.0), 1.0),
                            horizon_s=self._horizon(uid, p), profile_bytes=self.profile_bytes(app),
                            profile_version=self.profile_version(app),
                            models=dict(models))
                 for app, p, models in ranked]
        return Ranking(now, self.last_app.get(uid), items)

    def _refresh(self, uid: int) -> None:
        self.cache[uid] = self._rank(uid, CACHE_K)
        self.changes.changed(uid)

    def predictions(self, uid: int, k: int) -> Predictions:
        """Served from the per-user cache (refreshed after each launch), never by training."""
        ranking = self.cache.get(uid) if k <= CACHE_K else None
        if ranking is None and uid not in self.users and k <= CACHE_K:
            cold = self._cold
            if cold is None or cold[0] != self.population.total:  # the prior moved: rank it again
                cold = self._cold = (self.population.total, self._rank(uid, CACHE_K))
            ranking = cold[1]
        if ranking is None:
            ranking = self._rank(uid, k)
            if k <= CACHE_K and uid in self.users:
                self.cache[uid] = ranking
        self.metrics.predictions.inc()
        return Predictions(uid=uid, generated_at=ranking.generated_at, last_app=ranking.last_app,
                           predictions=ranking.items[:k])

    def explain(self, uid: int, app: str) -> tuple[int | None, float, dict[str, tuple[float, int | None]],
                                                  dict[str, dict[str, float]]]:
        """(rank, probability, each member's (score, own rank), each member's weights) of ``app`` for
        ``uid``. Rank, probability and scores come from the ranking GET /v1/predictions serves now, so
        the two never disagree; an app deeper than that ranking is placed by a full ranking."""
        model = self.users.get(uid)
        if model is None:
            return None, self.population.prob(app), {}, {}
        full = model.predict(Context(now=time.time()), 10_000)
        own: dict[str, int | None] = {}
        for name in model.names:
            scored = sorted(((r.models.get(name, 0.0), r.app) for r in full), key=lambda t: -t[0])
            own[name] = next((i + 1 for i, (sc, a) in enumerate(scored) if a == app and sc > 0), None)
        weights = model.mixer.weights()  # each member's say: the mixer's weight on each of its signals
        served = self.cache.get(uid)
        for items in ((served.items if served else []), full):
            for i, r in enumerate(items):
                if r.app == app:
                    scores = {n: (float(r.models.get(n, 0.0)), own.get(n)) for n in model.names}
                    return i + 1, r.probability, scores, weights
        return None, 0.0, {n: (0.0, None) for n in model.names}, weights
