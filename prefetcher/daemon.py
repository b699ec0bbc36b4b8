"""The prefetcher's loop, plain on purpose (preload's shape): observe, predict, act within a budget, sleep.

observe: memory pressure (PSI) and MemAvailable; predict: ask inference (or a static list given on
the command line); act, most likely program first: page cache, swap-in, cgroup protection, each
charged to the cycle's budget; then resolve and send feedback, restore cgroups of programs no longer
predicted, and sleep. SIGTERM/SIGINT end the loop and restore every cgroup value it changed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from memo.config import Config
from memo.contract import AppProfile, Prediction
from prefetcher import cgroups, pagecache, swapin, syscalls
from prefetcher.budget import Budget, PressureGauge
from prefetcher.client import InferenceClient
from prefetcher.feedback import FeedbackTracker

log = logging.getLogger("memo-prefetcher")

STATE_FILE = "prefetcher-state.json"
HOLD_S = 60.0
"""How long a program's cgroup stays protected after its last prediction above the threshold."""
PROFILE_TTL_S = 60.0


@dataclass
class Wanted:
    uid: int
    prediction: Prediction


class Source:
    """Where predictions and profiles come from."""

    def predictions(self) -> list[Wanted]:
        raise NotImplementedError

    def profile(self, app: str) -> AppProfile | None:
        raise NotImplementedError

    def send_feedback(self, tracker: FeedbackTracker) -> None:
        tracker.ready.clear()


class ServiceSource(Source):
    """The inference service over its Unix socket; uids from the command line, the service, or the
    owners of running processes."""

    def __init__(self, client: InferenceClient, uids: list[int], k: int) -> None:
        self.client = client
        self.uids = uids
        self.k = k
        self._profiles: dict[str, tuple[float, AppProfile | None]] = {}

    def _uids(self) -> list[int]:
        if self.uids:
            return self.uids
        known = self.client.users()
        if known is not None:
            return known
        owners = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    owners.add(entry.stat().st_uid)
                except OSError:
                    pass
        return sorted(owners)

    def predictions(self) -> list[Wanted]:
        out = []
        for uid in self._uids():
            try:
                preds = self.client.predictions(uid, self.k)
            except httpx.HTTPStatusError as exc:
                log.debug("no predictions for uid %d: %s", uid, exc.response.status_code)
                continue
            out.extend(Wanted(uid, p) for p in preds.predictions)
        return out

    def profile(self, app: str) -> AppProfile | None:
        now = time.monotonic()
        cached = self._profiles.get(app)
        if cached and now - cached[0] < PROFILE_TTL_S:
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

    def profile(self, app: str) -> AppProfile | None:
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
        self.feedback = FeedbackTracker()
        self.hold_until: dict[str, float] = {}
        self.stop = threading.Event()

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

    def cycle(self) -> CycleReport:
        pressure = self.gauge.read()
        if pressure.high:
            log.warning("memory pressure %s is above the threshold: doing nothing this cycle", pressure)
            return CycleReport(False, reason=f"pressure {pressure}")
        wanted = [w for w in self.source.predictions()
                  if w.prediction.probability >= self.pcfg.min_probability]
        wanted.sort(key=lambda w: -w.prediction.probability)
        budget = Budget.from_meminfo(self.pcfg.budget_share)
        report = CycleReport(True, budget=budget.total)
        seen: set[str] = set()
        now = time.time()
        for w in wanted:
            app = w.prediction.app
            if app in seen:
                continue
            seen.add(app)
            self.hold_until[app] = now + max(w.prediction.horizon_s, HOLD_S)
            self._act(w, budget, report)
        for app, until in list(self.hold_until.items()):
            if until < now:  # no longer predicted: give its cgroup back to normal reclaim
                del self.hold_until[app]
                if not self.dry_run:
                    self.tuner.restore_app(app)
                self.cool_idle([app])
        self.feedback.poll()
        self.source.send_feedback(self.feedback)
        return report

    def _act(self, w: Wanted, budget: Budget, report: CycleReport) -> None:
        app, p = w.prediction.app, w.prediction
        try:
            profile = self.source.profile(app)
        except httpx.HTTPError as exc:
            log.warning("no profile for %s: %s", app, exc)
            profile = None
        if profile is not None and budget.left > 0:
            r = pagecache.prefetch_profile(profile, budget, self.pcfg.per_app_cap_bytes, self.dry_run)
            report.prefetched += r.prefetched
            if r.prefetched:
                cut = ", truncated by budget/cap" if r.truncated else ""
                self._say(report, f"read ahead {r.prefetched} bytes in {len(r.files)} files for {app} "
                                  f"(p={p.probability:.2f}, {r.resident_before} of {r.profile_bytes} "
                                  f"profile bytes already resident{cut})")
            for path, why in r.skipped.items():
                log.debug("skipped %s for %s: %s", path, app, why)
            if not self.dry_run:
                self.feedback.pagecache_done(w.uid, r, p.horizon_s)
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

    def cool_idle(self, apps: Iterable[str]) -> None:
        """MADV_COLD for programs predicted idle (off unless prefetcher.madv_cold)."""
        if self.pcfg.madv_cold:
            for app in apps:
                swapin.cool(app, dry_run=self.dry_run)

    def run(self, once: bool = False) -> int:
        try:
            syscalls.set_idle_io_priority()
        except OSError as exc:
            log.warning("cannot set idle I/O priority: %s", exc)
        self.recover()
        log.info("started (pid %d): poll every %.1fs, min probability %.2f, budget %.0f%% of MemAvailable, "
                 "pressure limit %.2f, dry_run=%s", os.getpid(), self.pcfg.poll_interval_s,
                 self.pcfg.min_probability, self.pcfg.budget_share * 100, self.pcfg.psi_some_avg10_max,
                 self.dry_run)
        try:
            while not self.stop.is_set():
                try:
                    self.cycle()
                except httpx.HTTPError as exc:
                    log.warning("inference service unreachable: %s", exc)
                if once:
                    break
                self.stop.wait(self.pcfg.poll_interval_s)
        finally:
            n = self.tuner.restore()
            log.info("stopped: %d cgroup value(s) restored", n)
        return 0

    def install_signals(self) -> None:
        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.stop.set()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
