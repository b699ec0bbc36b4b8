"""The prefetcher's loop, plain on purpose (preload's shape): observe, predict, act within a budget, wait.

wait: for a change, not on a timer — the inference service answers a long-poll when its rankings move
(a launch was seen, or a model was retrained), and between answers the loop wakes once per
poll_interval_s only to ask the kernel whether it evicted page cache.
observe: memory pressure (PSI) and MemAvailable; and, after a launch, whether its reads are still going
(disk reads by other processes): MEMO never competes with the launch the user is waiting for.
predict: the service's rankings (or a static list given on the command line).
act: one plan per round — the profiles of the predictions weighed range by range (plan.py), read where
the chance of use beats the cost; then swap-in and cgroup protection of running predicted programs.
A plan is read once per launch, and again only after the kernel evicted some of it, once that eviction
is over (at most READS_PER_ROUND times): an unused profile is never re-read every cycle. No read starts
while the kernel is evicting page cache, or while free memory runs out fast enough that it soon will (a
program filling memory evicts nothing until free memory is gone): it waits until that is over. What a read
found or left wholly resident is not looked at again until the kernel evicts page cache (or SETTLED_TTL_S
passed). A new launch interrupts a plan in progress. Then feedback is resolved and sent, cgroups of
programs no longer predicted are restored.
SIGTERM/SIGINT end the loop and restore every cgroup value it changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from memo import notify, procfs
from memo.client import InferenceClient
from memo.config import Config
from memo.contract import AppProfile, Prediction, PredictionChanges
from memo.helpers import Recent
from prefetcher import activity, cgroups, pagecache, swapin, syscalls
from prefetcher.budget import Budget, PressureGauge, meminfo
from prefetcher.feedback import FeedbackTracker
from prefetcher.plan import Candidate, Span, weigh
from prefetcher.watch import ChangeWatcher

log = logging.getLogger("memo-prefetcher")

STATE_FILE = "prefetcher-state.json"
HOLD_S = 60.0
"""How long a program's cgroup stays protected after its last prediction above the threshold."""
PROFILE_TTL_S = 60.0
PROFILES_KEPT = 32
USERS_TTL_S = 60.0
"""How long the service's list of users is used before it is asked again (change notices name new ones)."""
READS_PER_ROUND = 2
"""Reads of one plan per launch that bring pages in: the first, and one more after an eviction took
some of it."""
TRIES_PER_ROUND = 6
"""...and reads tried in all, those that brought nothing included (each checks the plan's files again:
about 85 ms for 6,000 spans), so that a machine that evicts all the time costs a few checks per launch."""
EVICTION_SETTLE_S = 0.3
"""An eviction's re-read waits until the kernel evicted nothing for this long: a memory-pressure
eviction goes on for seconds (in bench/replay 5-25 s), and a re-read during it was taken again, leaving
the launch after it with nothing read."""
QUIET_READ_BPS = 2 * 1024 * 1024
"""Disk reads by other processes below this (bytes/s) mean a launch is done reading."""
QUIET_FOR_S = 1.0
"""...for this long in a row: a launch pauses its reads to run (an interpreter compiling what it just
read), and a plan read in such a pause competes with the launch's next reads. With 0.2 s, the launches
MEMO had not predicted ran a median 14 % slower than cold in bench/replay; with 1 s, 1 % faster."""
INTERRUPT_CHECK_S = 0.05
"""While a plan is read, how often the service is asked whether a new launch began."""
USEFUL_PRIOR_BYTES = 64 * 1024 * 1024
"""Usefulness of an app's prefetches = (used + prior) / (prefetched + prior): a few wasted reads do not
condemn a program, a long record of them does."""
UNCHANGED = "predictions unchanged"
SETTLED_TTL_S = 30.0
"""How long spans found wholly resident are trusted without an eviction counted: a few ways of dropping
cache (fadvise, truncation by another program) move no counter."""
SETTLED_MAX = 100_000
FREE_RESERVE_SHARE = 0.02
"""Free memory kept out of a plan's "fits in free memory" (the kernel's own watermarks live there)."""


@dataclass
class Wanted:
    uid: int
    prediction: Prediction


class Source:
    """Where predictions and profiles come from."""

    def predictions(self) -> list[Wanted]:
        raise NotImplementedError

    def profile(self, app: str, expect_version: int | None = None) -> AppProfile | None:
        """The app's launch profile; ``expect_version`` (the prediction's profile_version) says whether a
        copy fetched earlier is still the service's."""
        raise NotImplementedError

    def send_feedback(self, tracker: FeedbackTracker) -> None:
        tracker.ready.clear()

    def last_apps(self) -> dict[int, tuple[str, float]]:
        """Per uid, the app of the latest launch the service saw and when its ranking was refreshed
        (as of the last predictions())."""
        return {}

    def changes(self, since: int, wait_s: float) -> PredictionChanges | None:
        """The service's change notice (long-poll); None where there is none (poll on a timer)."""
        time.sleep(wait_s)
        return None

    def usefulness(self) -> dict[str, float]:
        """Per app, the share of its past prefetches a launch used (absent: no record)."""
        return {}


class ServiceSource(Source):
    """The inference service over its Unix socket; uids from the command line, the service, or the
    owners of running processes."""

    def __init__(self, client: InferenceClient, uids: list[int], k: int) -> None:
        self.client = client
        self.uids = uids
        self.k = k
        self._profiles: Recent[str, tuple[float, AppProfile | None]] = Recent(PROFILES_KEPT)  # parsed: large
        self._useful: tuple[float, dict[str, float]] = (0.0, {})
        self._last_apps: dict[int, tuple[str, float]] = {}
        self._users: tuple[float, set[int]] = (-USERS_TTL_S, set())  # (when asked, the service's users)
        self._heard: set[int] = set()  # uids named by change notices (the watcher's thread adds them)
        self._lock = threading.Lock()

    def last_apps(self) -> dict[int, tuple[str, float]]:
        return dict(self._last_apps)

    def changes(self, since: int, wait_s: float) -> PredictionChanges | None:
        ch = self.client.changes(since, wait_s)
        if ch is not None:
            with self._lock:
                self._heard.update(ch.uids)
        return ch

    def usefulness(self) -> dict[str, float]:
        now = time.monotonic()
        if now - self._useful[0] < PROFILE_TTL_S:
            return self._useful[1]
        try:
            rows = self.client.feedback_summary()
        except httpx.HTTPError:
            rows = []
        useful = {r.app: (r.bytes_used + USEFUL_PRIOR_BYTES) / (r.bytes_prefetched + USEFUL_PRIOR_BYTES)
                  for r in rows}
        self._useful = (now, useful)
        return useful

    def _uids(self) -> list[int]:
        """The users to ask for: the service's list (asked again every USERS_TTL_S) and every user a
        change notice named since (a new user's first launch reaches the plan at once)."""
        if self.uids:
            return self.uids
        now = time.monotonic()
        if now - self._users[0] >= USERS_TTL_S:
            try:
                self._users = (now, {u.uid for u in self.client.users()})
            except (httpx.HTTPError, ValueError):  # not answering: every user with a process now
                return sorted({uid for pid in procfs.pids() if (uid := procfs.owner(pid)) is not None})
        with self._lock:
            return sorted(self._users[1] | self._heard)

    def predictions(self) -> list[Wanted]:
        out = []
        for uid in self._uids():
            try:
                preds = self.client.predictions(uid, self.k)
            except httpx.HTTPStatusError as exc:
                log.debug("no predictions for uid %d: %s", uid, exc.response.status_code)
                continue
            out.extend(Wanted(uid, p) for p in preds.predictions)
            if preds.last_app:
                self._last_apps[uid] = (preds.last_app, preds.generated_at)
        return out

    def profile(self, app: str, expect_version: int | None = None) -> AppProfile | None:
        now = time.monotonic()
        cached = self._profiles.get(app)
        if cached and ((cached[1].version if cached[1] else -1) == expect_version  # moves with new pages
                       or expect_version is None and now - cached[0] < PROFILE_TTL_S):
            return cached[1]
        prof = self.client.profile(app)
        self._profiles[app] = (now, prof)
        return prof

    def send_feedback(self, tracker: FeedbackTracker) -> None:
        batch = tracker.batch()
        if batch is None:
            return
        try:
            self.client.feedback(batch)
            tracker.sent(len(batch.items))
            log.info("feedback: %d items sent", len(batch.items))
        except httpx.HTTPError as exc:
            log.warning("feedback not sent (kept for the next cycle): %s", exc)


class StaticSource(Source):
    """Programs named on the command line, predicted with probability 1; profiles from JSON files
    (AppProfile) or, when a client is given, from the service."""

    def __init__(self, apps: list[str], profiles: list[Path], client: InferenceClient | None,
                 uid: int = 0, horizon_s: float = 60.0) -> None:
        self.client = client
        self.uid = uid
        self.horizon_s = horizon_s
        self._profiles = {}
        for p in profiles:
            prof = AppProfile.model_validate_json(p.read_text())
            self._profiles[prof.app] = prof
        self.apps = list(dict.fromkeys(apps + list(self._profiles)))

    def predictions(self) -> list[Wanted]:
        return [Wanted(self.uid, Prediction(app=a, probability=1.0, horizon_s=self.horizon_s,
                                            profile_bytes=0)) for a in self.apps]

    def profile(self, app: str, expect_version: int | None = None) -> AppProfile | None:
        if app in self._profiles:
            return self._profiles[app]
        return self.client.profile(app) if self.client else None

    def send_feedback(self, tracker: FeedbackTracker) -> None:
        if self.client:
            ServiceSource.send_feedback(self, tracker)  # type: ignore[arg-type]
        else:
            tracker.ready.clear()


@dataclass
class CycleReport:
    acted: bool
    reason: str = ""
    prefetched: int = 0
    swapin_bytes: int = 0
    protected: int = 0
    budget: int = 0
    interrupted: bool = False
    actions: list[str] = field(default_factory=list)


class Prefetcher:
    def __init__(self, cfg: Config, source: Source, dry_run: bool = False) -> None:
        self.cfg = cfg
        self.pcfg = cfg.prefetcher
        self.source = source
        self.dry_run = dry_run or self.pcfg.dry_run
        self.gauge = PressureGauge(self.pcfg.psi_some_avg10_max)
        self.tuner = cgroups.CgroupTuner(cfg.paths.data_dir / STATE_FILE, self.pcfg.swappiness_low,
                                         dry_run=self.dry_run)
        self.evictions = activity.Evictions()
        self.feedback = FeedbackTracker(evictions=self.evictions.count)
        self.hold_until: dict[str, float] = {}
        self.stop = threading.Event()
        self.reads = activity.ForeignReads()
        self.version = 0  # of the service's rankings, as last seen
        self.launches: int | None = None  # the service's launch count, as last seen
        self.plan: list[Span] = []
        self.candidates: dict[str, Candidate] = {}  # of the current plan
        self.plan_reads = 0
        self.plan_tries = 0  # reads of the plan tried, whatever they brought
        self.settled: pagecache.Settled = {}  # spans wholly resident as of eviction count _settled_at
        self._settled_at: tuple[int, float] = (-1, 0.0)  # (eviction count, monotonic time)
        self._last_check = 0.0
        self._stopped_for_launch = False
        self._launch_seen_at: float | None = None  # Unix time of the latest launch notice
        self._signature: list[tuple[int, str, float]] = []  # of the predictions the plan was made from
        self._retry = False  # a round was skipped under memory pressure
        self._reread_owed = False  # an eviction took some of the plan; re-read once it is over
        self.watcher: ChangeWatcher | None = None  # the open long-poll, once the service sends notices
        self.cpu: Counter[str] = Counter()  # the loop's own CPU seconds by part (logged at the end)

    @contextlib.contextmanager
    def _timed(self, part: str) -> Iterator[None]:
        t0 = time.thread_time()
        try:
            yield
        finally:
            self.cpu[part] += time.thread_time() - t0

    def recover(self) -> None:
        """Restore what a previous run changed and did not put back (it crashed or was SIGKILLed)."""
        if self.tuner.changes:
            log.warning("state file %s holds %d change(s) of a previous run: restoring",
                        self.tuner.state_file, len(self.tuner.changes))
            self.tuner.restore()

    def _say(self, report: CycleReport, text: str) -> None:
        report.actions.append(text)
        if self.dry_run:
            print(f"dry-run: would {text}", flush=True)
        else:
            log.info("%s", text)

    # ---------------------------------------------------------------- one round

    def cycle(self, force: bool = True) -> CycleReport:
        """Plan from the current predictions and read the plan (the first read of a round). Unless
        forced (a launch, the first round), a ranking change that leaves the plan's programs and their
        probabilities (to 0.1) as they were is no new round."""
        pressure = self.gauge.read()
        self._retry = pressure.high  # the round is owed: the next step plans again
        if pressure.high:
            log.warning("memory pressure %s is above the threshold: doing nothing this cycle", pressure)
            return CycleReport(False, reason=f"pressure {pressure}")
        wanted = [w for w in self.source.predictions() if w.prediction.probability > 0]
        wanted.sort(key=lambda w: -w.prediction.probability)
        signature = sorted((w.uid, w.prediction.app, round(w.prediction.probability, 1)) for w in wanted)
        if not force and signature == self._signature:
            return CycleReport(False, reason=UNCHANGED)
        self._signature = signature
        if self._launch_seen_at is not None:  # whose ranking moved since the notice launched
            for app, refreshed in self.source.last_apps().values():
                if refreshed >= self._launch_seen_at - 1.0:
                    self.feedback.launched(app, self._launch_seen_at)
            self._launch_seen_at = None
        useful = self.source.usefulness()
        candidates: list[Candidate] = []
        seen: set[str] = set()
        now = time.time()
        report = CycleReport(True)
        budget = Budget.from_meminfo(self.pcfg.budget_share)  # the round's, shared by all its actions
        for w in wanted:
            app, p = w.prediction.app, w.prediction
            if app in seen:
                continue
            seen.add(app)
            if p.probability >= self.pcfg.min_probability:
                self.hold_until[app] = now + max(p.horizon_s, HOLD_S)
                self._prepare_running(w, report, budget)
            try:
                profile = self.source.profile(app, p.profile_version)
            except httpx.HTTPError as exc:
                log.warning("no profile for %s: %s", app, exc)
                profile = None
            if profile is not None and profile.ranges:
                candidates.append(Candidate(app, w.uid, p.probability, useful.get(app, 1.0), profile,
                                            p.horizon_s))
        with self._timed("weigh"):
            self.plan = weigh(candidates, self.pcfg.per_app_cap_bytes, self.pcfg.min_probability)
        self.candidates = {c.app: c for c in candidates}
        self.plan_reads = self.plan_tries = 0
        if not self._evictions_over():  # step's re-read path reads the plan once they are
            report.reason = "evictions go on: read owed"
            return report
        self._read_plan(report, budget)
        return report  # holds that ran out are given back by step(), after every round or wait

    def _settled_now(self) -> pagecache.Settled:
        """The spans known wholly resident, forgotten once the kernel evicted any page cache (counted
        before the read: an eviction during it is seen by the next)."""
        count, now = self.evictions.count(), time.monotonic()
        stale = count != self._settled_at[0] or now - self._settled_at[1] >= SETTLED_TTL_S
        if stale or len(self.settled) > SETTLED_MAX:
            self.settled = {}
            self._settled_at = (count, now)
        return self.settled

    def _read_plan(self, report: CycleReport, budget: Budget) -> None:
        self._stopped_for_launch = False
        report.budget = budget.total
        mem = meminfo()
        free = max(0, mem.get("MemFree", 0) - int(mem.get("MemTotal", 0) * FREE_RESERVE_SHARE))
        with self._timed("read"):
            results = pagecache.prefetch_spans(self.plan, budget, self.pcfg.min_probability,
                                               self.pcfg.evict_cost, free, self.dry_run, self._interrupted,
                                               self._settled_now())
        for app, r in results.items():
            report.prefetched += r.prefetched
            c = self.candidates.get(app)
            if r.prefetched:
                cut = ", truncated by budget" if r.truncated else ""
                p = f"p={c.probability:.2f}, " if c else ""
                self._say(report, f"read ahead {r.prefetched} bytes in {len(r.files)} files for {app} "
                                  f"({p}{r.resident_before} of {r.profile_bytes} planned bytes already "
                                  f"resident{cut})")
                if not self.dry_run and c is not None:
                    self.feedback.pagecache_done(c.uid, r, c.horizon_s)
            for path, why in r.skipped.items():
                log.debug("skipped %s for %s: %s", path, app, why)
        self.plan_tries += 1
        if report.prefetched:
            # only a read that brought pages counts: one that found no room (memory taken by a hog in
            # bench/replay, a lull in its reclaim) or nothing missing leaves the round its re-read
            self.plan_reads += 1
        if self._stopped_for_launch:
            report.interrupted = True
            log.info("a launch began: prefetch interrupted after %d bytes", report.prefetched)

    def _evictions_over(self) -> bool:
        """Whether the kernel evicted nothing for EVICTION_SETTLE_S (waited here) and free memory is not
        running out (activity.reclaim_imminent); else the plan's read is owed: what is read while the
        kernel evicts, or just before it does, is taken again before the launch it is for."""
        settled = self.evictions.settled(EVICTION_SETTLE_S, self.stop)
        self._reread_owed = not settled
        return settled

    def reread(self) -> CycleReport | None:
        """After an eviction: read again what the kernel took of the current plan (once per round), once
        the eviction is over and memory no longer under pressure; until then the re-read stays owed
        (a wait that ends with the pressure would otherwise never come back to it)."""
        if not self.plan or self.plan_reads >= READS_PER_ROUND or self.plan_tries >= TRIES_PER_ROUND:
            self._reread_owed = False
            return None
        # read before the wait too: the share is then taken over the settle wait itself; a gauge last
        # read before a long eviction falls back to avg10, whose ~10 s decay held the re-read after
        # bench/replay's hog past the launch it was for (nothing read in the 3 s before it)
        self.gauge.read()
        if not self._evictions_over():
            return CycleReport(False, reason="evictions go on")
        pressure = self.gauge.read()
        if pressure.high:
            self._reread_owed = True
            return CycleReport(False, reason=f"pressure {pressure}")
        report = CycleReport(True)
        self._read_plan(report, Budget.from_meminfo(self.pcfg.budget_share))
        return report

    def _interrupted(self) -> bool:
        """Whether a launch began since the plan started (asked of the service at most every
        INTERRUPT_CHECK_S): the launch the user waits for must not compete with a prefetch."""
        if self.stop.is_set():
            return True
        now = time.monotonic()
        if now - self._last_check < INTERRUPT_CHECK_S:
            return self._stopped_for_launch
        self._last_check = now
        if self.watcher is not None:  # the open long-poll hears of a launch within milliseconds
            ch = self.watcher.peek() if self.launches is not None else None
        else:
            try:
                ch = self.source.changes(self.version, 0.0) if self.launches is not None else None
            except httpx.HTTPError:
                ch = None
        self._stopped_for_launch = ch is not None and ch.launches != self.launches
        return self._stopped_for_launch

    def _prepare_running(self, w: Wanted, report: CycleReport, budget: Budget) -> None:
        """Swap-in and cgroup protection for the running processes of a predicted program."""
        app, p = w.prediction.app, w.prediction
        s = swapin.swap_in(app, budget, dry_run=self.dry_run, collapse=self.pcfg.collapse_huge)
        if s.pids:
            report.swapin_bytes += s.swap_bytes
            huge = f", {s.collapsed_bytes} bytes into huge pages" if s.collapsed_bytes else ""
            self._say(report, f"swap in {s.swap_bytes} bytes of {app} (pids {s.pids}{huge})")
            if not self.dry_run:
                self.feedback.swapin_done(w.uid, s, p.horizon_s)
        for pid, why in s.errors.items():
            log.info("swap-in of %s pid %d skipped: %s", app, pid, why)
        own = cgroups.cgroup_of(os.getpid())
        for pid in swapin.pids_of(app):
            cg = cgroups.cgroup_of(pid)
            if cg is None or cg == own:  # never its own cgroup: that is not the program's alone
                continue
            if self.tuner.protect(cg, app):
                report.protected += 1
                if not self.dry_run:
                    log.info("protecting cgroup %s of %s (pid %d)", cg.path, app, pid)

    def _restore_unpredicted(self, now: float) -> None:
        for app, until in list(self.hold_until.items()):
            if until < now:  # no longer predicted: give its cgroup back to normal reclaim
                del self.hold_until[app]
                if not self.dry_run:
                    self.tuner.restore_app(app)
                self.cool_idle([app])

    def cool_idle(self, apps: Iterable[str]) -> None:
        """MADV_COLD for programs predicted idle (off unless prefetcher.madv_cold)."""
        if self.pcfg.madv_cold:
            for app in apps:
                swapin.cool(app, dry_run=self.dry_run)

    def _after_launch(self) -> None:
        """A launch began: wait until its reads are over (or its launch window is), then plan."""
        waited = self.reads.wait_quiet(QUIET_READ_BPS, self.cfg.collector.launch_window_s, self.stop,
                                       QUIET_FOR_S)
        log.debug("launch: reads quiet after %.2f s", waited)

    def step(self, wait_s: float) -> None:
        """Wait for a change (at most wait_s), then act on it: a new round after a launch or a ranking
        change, a re-read after an eviction, nothing otherwise."""
        if self.watcher is None:
            ch = self.source.changes(self.version, wait_s)
            if ch is not None:  # the service sends notices: from now on one long-poll stays open
                self.watcher = ChangeWatcher(self.source.changes, ch)
        else:
            ch = self.watcher.next(wait_s)
        if ch is None:  # no change notices (a static source): a round every wait
            self.cycle()
        else:
            launched = self.launches is not None and ch.launches != self.launches
            first = self.launches is None
            self.launches = ch.launches
            if launched:
                self._launch_seen_at = time.time()
                self.feedback.launch_began(self._launch_seen_at)
                self._after_launch()
                ch = self.source.changes(ch.version, 0.0) or ch  # rankings refreshed meanwhile
                self.launches = ch.launches
            planned = False
            if first or launched or self._retry or ch.version != self.version:
                self.version = ch.version
                planned = self.cycle(force=first or launched or self._retry).reason != UNCHANGED
            if not planned and (self.evictions.happened() or self._reread_owed):
                self.reread()
        with self._timed("feedback"):
            self._restore_unpredicted(time.time())
            self.feedback.poll()
            self.source.send_feedback(self.feedback)

    def run(self, once: bool = False) -> int:
        try:
            syscalls.set_idle_io_priority()
        except OSError as exc:
            log.warning("cannot set idle I/O priority: %s", exc)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 19)  # its CPU work never crowds out the user's programs
        except OSError as exc:
            log.warning("cannot lower CPU priority: %s", exc)
        self.recover()
        log.info("started (pid %d): waits for ranking changes, checks evictions every %.1fs, reads a range "
                 "when its chance of use is above %.2f (%.2f once it would evict), budget %.0f%% of "
                 "MemAvailable, pressure limit %.2f, dry_run=%s", os.getpid(), self.pcfg.poll_interval_s,
                 self.pcfg.min_probability, self.pcfg.min_probability + self.pcfg.evict_cost,
                 self.pcfg.budget_share * 100, self.pcfg.psi_some_avg10_max, self.dry_run)
        notify.ready()
        try:
            if once:
                self.cycle()
                if self._reread_owed:  # deferred by evictions: one more try once they are over
                    self.reread()
                return 0
            while not self.stop.is_set():
                try:
                    with self._timed("loop"):
                        self.step(self.pcfg.poll_interval_s)
                except httpx.HTTPError as exc:
                    log.warning("inference service unreachable: %s", exc)
                    self.launches = None
                    self.stop.wait(self.pcfg.poll_interval_s)
        finally:
            if self.watcher is not None:
                self.watcher.close()
            n = self.tuner.restore()
            log.info("stopped: %d cgroup value(s) restored", n)
            self._log_cpu()
        return 0

    def _log_cpu(self) -> None:
        """What the loop spent its CPU on: plan reads, weighing, feedback, and the rest of its steps
        (predictions and profiles over HTTP, waiting for a launch's reads to end); the process's total
        includes the long-poll's thread."""
        t = os.times()
        loop = self.cpu.pop("loop", 0.0)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.cpu.items()))
        log.info("CPU seconds: process %.2f (user %.2f, system %.2f); main loop %.2f: %s, other %.2f",
                 t.user + t.system, t.user, t.system, loop, parts, loop - sum(self.cpu.values()))

    def install_signals(self) -> None:
        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.stop.set()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
