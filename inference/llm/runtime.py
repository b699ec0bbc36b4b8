"""The process-wide LLM scorer: which backend, how many calls at once, how long one may take.

A host starts it once (the service at open, ``memo eval`` before replaying, a test); predictors only
ask ``current()``. Two modes: asynchronous (the service: a call per launch on ``max_concurrency``
worker threads, a user's queued call replaced by their newer launch's, the result handed to a
callback, rank() never waits) and synchronous (``memo eval``: the call runs
inline in train_pending, so a replay is deterministic and the LLM sees every launch). A backend that is
missing or fails is reported once and the ``llm`` member abstains; nothing raises into a request.

Under memory pressure (PSI some avg10 above ``release_psi``) the service's scorer ends the engine, so
that its memory goes back to the user's programs, and starts it again once pressure has stayed low for
``restart_calm_s``; meanwhile the member abstains, as it does while the engine starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from inference import priority
from inference.llm.backends import (
    Backend,
    BackendUnavailable,
    EngineBackend,
    RemoteBackend,
    find_model,
    vllm_installed,
)
from memo import pressure
from memo.config import LLMConfig

log = logging.getLogger("inference.llm")

Probs = dict[str, float]


class Scorer:
    """Runs ``backend.top_logprobs`` with bounded concurrency and a timeout; counts what happened."""

    def __init__(self, cfg: LLMConfig, data_dir: Path | None, *, synchronous: bool = False,
                 psi: Callable[[], float | None] = pressure.memory_some_avg10) -> None:
        self.cfg = cfg
        self.psi = psi
        self.data_dir = data_dir
        self.synchronous = synchronous
        self.backend: Backend | None = None
        self.state = "starting"  # starting | ready | released | off | failed
        self.ready = threading.Event()
        self.calls = self.timeouts = self.errors = self.dropped = self.releases = 0
        self.latencies: list[float] = []  # seconds per completed call (bounded, for bench/metrics)
        self._pool = ThreadPoolExecutor(cfg.max_concurrency + 1, thread_name_prefix="memo-llm")
        self._queue: dict[object, tuple[str, Callable[[dict[str, float] | None], None]]] = {}
        self._cv = threading.Condition()
        self._workers = 0
        self._warned = False
        self._closed = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        """Build the backend (the engine's start takes ~15-60 s on CPU), then warm it up once."""
        try:
            backend = make_backend(self.cfg, self.data_dir)
            if backend is None:
                self.state = "off"
                return
            if not isinstance(backend, EngineBackend):  # the engine warms itself up; a server is checked
                backend.top_logprobs("warm-up\n")
            with self._cv:
                if self._closed.is_set():  # closed while it started: it must not outlive the scorer
                    backend.close()
                    return
                self.backend, self.state = backend, "ready"
            log.info("llm: %s backend ready (%s)", backend.name,
                     f"engine pid {backend.pid}, {backend.pss_mb} MB, nice {priority.NICE}"
                     if isinstance(backend, EngineBackend) else self.cfg.url)
        except BackendUnavailable as exc:
            self.state = "off"
            self._degraded(f"backend {self.cfg.backend!r} unavailable: {exc}")
        except Exception as exc:  # a broken install, an engine that cannot start: degrade, never crash
            self.state = "failed"
            self._degraded(f"backend {self.cfg.backend!r} failed to start: {exc!r}")
        finally:
            self.ready.set()

    def start_background(self) -> None:
        threading.Thread(target=self._run, name="memo-llm-start", daemon=True).start()

    def _run(self) -> None:
        """Open, then (an engine only) give its memory back while memory pressure is high, and start
        it again after a calm spell (twice as long after each release) or after it died. This thread
        lives until close(): the engine's PR_SET_PDEATHSIG fires when the thread that started it ends."""
        self.open()
        calm_s, calm_since = self.cfg.restart_calm_s, None
        while not self._closed.wait(PRESSURE_CHECK_S):
            if self.state not in ("ready", "released") or not isinstance(self.backend, EngineBackend | None):
                continue  # off, failed, or a remote server: nothing to manage
            psi = self.psi() if self.cfg.release_psi > 0 else None
            if self.state == "ready" and self.backend is not None and self.backend.pid is None:
                self.release("the engine's exit")  # killed (OOM, a stuck call): like a release
                calm_since = None
            elif self.state == "ready" and psi is not None and psi > self.cfg.release_psi:
                self.release(f"memory pressure (PSI some avg10 {psi:.1f} % > {self.cfg.release_psi:g} %)")
                calm_s, calm_since = min(2 * calm_s, MAX_CALM_S) if self.releases > 1 else calm_s, None
            elif self.state == "released":
                calm = psi is None or psi < self.cfg.release_psi / 2
                calm_since = (calm_since or time.monotonic()) if calm else None
                if calm_since is not None and time.monotonic() - calm_since >= calm_s:
                    log.info("llm: pressure low for %.0f s: starting the engine again", calm_s)
                    self.state = "starting"
                    self.open()
                    calm_since = None

    def release(self, why: str) -> None:
        """End the engine now (its memory returns to the system); calls abstain until it is back."""
        with self._cv:
            if self.state != "ready":
                return
            self.state = "released"
            self._queue.clear()
            backend, self.backend = self.backend, None
        self.releases += 1
        mb = getattr(backend, "pss_mb", -1)
        if backend is not None:
            backend.close()
        log.info("llm: engine ended by %s: %d MB returned; the other members carry on", why, mb)

    def close(self) -> None:
        with self._cv:
            self._closed.set()
            self.state = "off"
            self._queue.clear()
            self._cv.notify_all()
            backend, self.backend = self.backend, None
        self._pool.shutdown(wait=False, cancel_futures=True)
        if backend is not None:
            backend.close()
        self.state = "off"

    def _degraded(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("llm: %s; the llm member abstains and the ensemble uses the other predictors", why)

    # -- calls ------------------------------------------------------------------------------------
    def _call(self, prompt: str) -> dict[str, float] | None:
        backend = self.backend
        if backend is None:
            return None
        t0 = time.perf_counter()
        try:
            top = backend.top_logprobs(prompt)
        except Exception as exc:
            if self.state != "ready":  # released (or closed) while it ran: not a failure
                return None
            self.errors += 1
            self._degraded(f"a {backend.name} call failed: {exc!r}")
            return None
        self.calls += 1
        self.latencies.append(time.perf_counter() - t0)
        del self.latencies[:-10_000]
        return top

    def score(self, prompt: str) -> dict[str, float] | None:
        """Synchronously: the top next-token logprobs, or None (not ready, failed, timed out)."""
        if self.state != "ready":
            return None
        fut = self._pool.submit(self._call, prompt)
        try:
            return fut.result(timeout=self.cfg.timeout_s)
        except FutureTimeout:
            self.timeouts += 1
            self._degraded(f"a call took longer than timeout_s={self.cfg.timeout_s}")
            return None

    def submit(self, key: object, prompt: str, done: Callable[[dict[str, float] | None], None]) -> bool:
        """Asynchronously, on one of ``max_concurrency`` workers. One pending call per ``key`` (a user's
        predictor): a newer launch's prompt replaces a call that has not started. False when not ready."""
        if self.state != "ready":
            return False
        with self._cv:
            if key in self._queue:
                self.dropped += 1  # superseded before it ran
                del self._queue[key]
            self._queue[key] = (prompt, done)
            if self._workers < self.cfg.max_concurrency:
                self._workers += 1
                threading.Thread(target=self._work, name="memo-llm-call", daemon=True).start()
            self._cv.notify()
        return True

    def _work(self) -> None:
        while True:
            with self._cv:
                if not self._cv.wait_for(lambda: self._queue or self.state != "ready", timeout=30.0) \
                        or self.state != "ready":
                    self._workers -= 1
                    return
            # a call comes right after a launch: the engine's matrix work would take cache and memory
            # bandwidth from that start-up, so it waits (a newer launch's prompt replaces it meanwhile)
            priority.wait_for_quiet(LAUNCH_QUIET_S)
            with self._cv:
                if not self._queue:
                    continue
                key = next(iter(self._queue))
                prompt, done = self._queue.pop(key)
            try:
                done(self.score(prompt))
            except Exception:
                log.exception("llm: result callback failed")


PRESSURE_CHECK_S = 2.0
"""How often the service's scorer reads memory pressure (one small /proc read)."""
MAX_CALM_S = 1800.0
"""The calm needed before a restart doubles after each release, up to this."""
LAUNCH_QUIET_S = 2.0
"""An LLM call waits until this long after the latest launch (a newer launch's prompt replaces it)."""


def make_backend(cfg: LLMConfig, data_dir: Path | None) -> Backend | None:
    """The configured backend; None for off (and for auto without vLLM or a converted model)."""
    if cfg.backend == "off":
        return None
    if cfg.backend == "remote":
        return RemoteBackend(cfg.url, cfg.model, cfg.timeout_s)
    if cfg.backend == "auto" and not vllm_installed():
        raise BackendUnavailable("vLLM is not installed (auto)")
    return EngineBackend(find_model(cfg.model, data_dir), cfg.kv_cache_mb, cfg.max_model_len)


_current: Scorer | None = None
_lock = threading.Lock()


def start(cfg: LLMConfig, data_dir: Path | None = None, *, synchronous: bool = False,
          wait: bool = False) -> Scorer:
    """Start this process's scorer (once; later calls return it). ``wait`` blocks until ready or off."""
    global _current
    with _lock:
        if _current is None:
            _current = Scorer(cfg, data_dir, synchronous=synchronous)
            if wait:
                _current.open()
            else:
                _current.start_background()
        return _current


def current() -> Scorer | None:
    return _current


def stop() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            _current = None


def prepare_eval(jobs: int) -> int:
    """Before ``memo eval`` replays with the llm member: start the configured backend synchronously and
    say how many worker processes it allows (one: an in-process engine cannot be shared by forks)."""
    from memo import config

    cfg = config.get()
    scorer = start(cfg.llm, cfg.paths.data_dir, synchronous=True, wait=True)
    if scorer.state == "ready" and scorer.backend is not None and scorer.backend.name == "engine":
        return 1
    return jobs
