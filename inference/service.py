"""The service's parts wired together once: what the lifespan opens and closes and the routers use."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from inference.ingest import Ingestor, IngestResult
from inference.metrics import Metrics
from inference.models import Models
from inference.profiles import Profiles
from inference.segment import Rules
from inference.store import Store
from memo import procfs
from memo.config import Config

log = logging.getLogger(__name__)

DB_NAME = "inference.sqlite3"


def own_pids(proc: Path = procfs.ROOT) -> frozenset[int]:
    """This process, and its parent when that is MEMO's supervisor (`memo up`): what they start (vLLM's
    engine, restarted services) is MEMO at work, not a launch of its user."""
    pids = {os.getpid()}
    if "memo.supervisor" in procfs.cmdline(os.getppid(), proc):  # python -m memo.supervisor
        pids.add(os.getppid())
    return frozenset(pids)


@dataclass
class Service:
    config: Config
    store: Store
    ingestor: Ingestor
    models: Models
    profiles: Profiles
    metrics: Metrics
    started: float = field(default_factory=time.time)

    @classmethod
    def open(cls, config: Config) -> Service:
        config.paths.inference_dir.mkdir(parents=True, exist_ok=True)
        store = Store(config.paths.inference_dir / DB_NAME)
        metrics = Metrics()
        profiles = Profiles(store)
        rules = Rules(config.inference.ignore, config.inference.allow, config.inference.wrappers)
        ingestor = Ingestor(store, rules, config.collector.launch_window_s, own_pids())
        if "llm" in config.inference.models:  # the engine starts in the background; until then it abstains
            from inference.llm import runtime

            runtime.start(config.llm, config.paths.data_dir)
        if "lstm" in config.inference.models:  # torch only in the trainer's worker, while it learns
            from inference.predictors import lstm

            lstm.train_in_worker_process()
        models = Models(store, config.inference.models, metrics, profiles.bytes_of,
                        profile_version=profiles.version_of, prior_min_users=config.inference.prior_min_users)
        models.start()
        return cls(config, store, ingestor, models, profiles, metrics)

    def close(self) -> None:
        self.models.stop()
        self.ingestor.save_state()
        self.store.close()
        if "lstm" in self.config.inference.models:
            from inference.predictors import lstm

            lstm.train_inline()
        if "llm" in self.config.inference.models:
            from inference.llm import runtime

            runtime.stop()

    def ingest(self, body: bytes) -> IngestResult:
        """Store a batch (blocking: run it in a worker thread) and hand its launches to the models."""
        t0 = time.perf_counter()
        result = self.ingestor.ingest(body)
        m = self.metrics
        m.ingest_latency.observe(time.perf_counter() - t0)
        if result.ack.duplicate:
            m.batches.labels(result="duplicate").inc()
            return result
        m.batches.labels(result="stored").inc()
        for kind, n in result.counts.items():
            if n:
                m.events.labels(type=kind).inc(n)
        if result.launches:
            m.launches.inc(len(result.launches))
            self.models.changes.launched(len(result.launches))
        apps = {launch.app for launch in result.launches + result.relabeled} | result.profiled
        if apps:
            self.profiles.invalidate(apps)
        self.models.submit(result.launches)
        self.models.relabel(result.relabeled)
        return result
