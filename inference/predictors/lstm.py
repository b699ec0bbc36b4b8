"""LSTM over the user's launch sequence, with time context, trained in the background.

Input per launch: the app's embedding plus its time context — hour and weekday (as sin/cos) and
log(1 + seconds since the previous launch), zeros when the trace has no times. The model reads the
last ``WINDOW`` launches and outputs a softmax over the user's apps, plus a direct path from the last
app's embedding (learns "what follows what" fast). One user's data is small (1-30k launches), so the
net is small, uses dropout, and its output is shrunk towards the user's launch frequencies while it
has trained on little (a new user's net is noise; counts are not); before its first round it ranks
by those frequencies alone.

Training never runs on the request path: ``observe`` only appends to the history. ``train_pending`` (a
worker thread in the service, inline in ``memo eval``) does two things. Every ``RETRAIN_EVERY`` launches,
and at most once per ``ROUND_GAP_S`` of the user's time, it trains a private copy for a few Adam steps on
windows of the recent history, then swaps a frozen copy in under the lock. In between, so that the net is
not stale against counting models that learn each launch at once, the output layers take one small SGD
step on each new launch (the softmax gradient of that launch through the last LSTM output and the skip
path), applied to the serving and the training copy alike. ``rank`` only runs the serving copy's forward
pass. The vocabulary grows by doubling (weights copied), so a user's new apps get rows without retraining
from scratch.

Serving needs no torch: the forward pass and the per-launch step are a few numpy products over the
weights. Only the rounds use torch (lstm_train.py): in the service they run in a short-lived worker
process (ProcessTrainer), so torch's 220-260 MB are resident only while the member learns.
"""

from __future__ import annotations

import math
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Protocol

import numpy as np

from inference.predictors.base import Context, Launch, Predictor, Scored, top_scored
from inference.predictors.population import Prior
from memo import helpers

WINDOW = 12  # launches the model reads (training windows have the same length)
HISTORY = 2048  # recent launches a training round learns from
KEEP = 2048  # launches kept in memory (and in the checkpoint)
EMBED, HIDDEN, N_TIME = 32, 64, 6
BATCH = 32
DROPOUT = 0.4  # small per-user data: dropout on the LSTM's input and output
LR = 3e-3  # Adam's, for the training rounds
FIRST_TRAIN = 12  # launches before the first training round
STEPS = 4  # Adam steps per training round
FRESH_SHARE = 0.25  # share of each batch's windows that end in the new launches
RETRAIN_EVERY = 8  # launches between training rounds once the history is long
ROUND_GAP_S = 900.0
"""...and at least this much of the user's time (launch timestamps) between them: a round costs a worker
start (torch's import, about 1.5 s of CPU, and its files read back after an eviction), so a burst of
launches pays for one round, not one per 8 launches; the per-launch output-layer step keeps the net
current meanwhile. memo eval is the same with rounds 300 s and 900 s apart (android6: ensemble top-1
41.3, top-5 76.8 / 76.9) and with 0 s and 900 s (purdue)."""
SHRINK = 150.0  # launches' worth of trust in the user's frequencies before the net's
FIRST_BOOST = 4  # the first round trains this many times more (more steps overfit a short history)
FAST_LR = 0.03  # SGD step size of the output layers' update on each launch (between rounds)
PRIOR = 2.0  # before the first round: pseudo-launches of the population prior in the user's counts

Weights = dict[str, np.ndarray]
"""A net's parameters, keyed like torch's state_dict (emb, lstm.*_l0, out, skip)."""


def time_features(ts: float | None, prev_ts: float | None) -> list[float]:
    if ts is None:
        return [0.0] * N_TIME
    t = time.localtime(ts)
    hour = 2 * math.pi * (t.tm_hour + t.tm_min / 60) / 24
    day = 2 * math.pi * t.tm_wday / 7
    gap = math.log1p(max(0.0, ts - prev_ts)) / 10 if prev_ts is not None else 0.0
    return [math.sin(hour), math.cos(hour), math.sin(day), math.cos(day), gap, 1.0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # never overflows, unlike 1 / (1 + exp(-x))


class Net:
    """A net's weights and the forward pass that serving needs (torch's nn.LSTM, one layer, gates i f g o)."""

    def __init__(self, weights: Weights) -> None:
        self.w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}

    @property
    def vocab(self) -> int:
        return int(self.w["emb.weight"].shape[0])

    def copy(self) -> Net:
        return Net({k: v.copy() for k, v in self.w.items()})

    def features(self, x: list[int], t: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
        """What the output layers read at the last step: the LSTM's output and the last app's embedding."""
        w = self.w
        e = w["emb.weight"][x]
        pre = np.concatenate([e, np.asarray(t, dtype=np.float32)], axis=1) @ w["lstm.weight_ih_l0"].T \
            + (w["lstm.bias_ih_l0"] + w["lstm.bias_hh_l0"])
        h = np.zeros(HIDDEN, dtype=np.float32)
        c = np.zeros(HIDDEN, dtype=np.float32)
        whh = w["lstm.weight_hh_l0"]
        for g in pre:
            i, f, z, o = np.split(g + whh @ h, 4)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(z)
            h = _sigmoid(o) * np.tanh(c)
        return h, e[-1]

    def softmax(self, h: np.ndarray, e: np.ndarray, size: int) -> np.ndarray:
        w = self.w
        logits = (w["out.weight"][:size] @ h + w["out.bias"][:size] + w["skip.weight"][:size] @ e)
        z = np.exp(logits - logits.max())
        return z / z.sum()

    def fast_step(self, h: np.ndarray, e: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """One SGD step of the output layers on one launch; ``grad`` is d(loss)/d(logits)."""
        n = len(grad)
        self.w["out.weight"][:n] -= lr * np.outer(grad, h)
        self.w["out.bias"][:n] -= lr * grad
        self.w["skip.weight"][:n] -= lr * np.outer(grad, e)


class Trainer(Protocol):
    def train(self, req: dict[str, Any]) -> dict[str, Any]: ...


class InlineTrainer:
    """Rounds in this process (``memo eval``, tests): torch is imported on the first one."""

    def train(self, req: dict[str, Any]) -> dict[str, Any]:
        from inference.predictors import lstm_train

        return lstm_train.train_round(req)


class TrainerUnavailable(RuntimeError):
    """No training round now (the worker failed lately, or the service is stopping): the net waits."""


class ProcessTrainer:
    """Rounds in a worker process (the service): started on demand, it exits once idle
    (lstm_train.IDLE_EXIT_S). A worker that fails or hangs is killed; after a failure rounds pause for
    FAIL_BACKOFF_S."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._failed_at = -math.inf
        self.started = 0  # worker processes started so far

    def _worker(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "inference.predictors.lstm_train",
                                           str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.started += 1
        return self._proc

    def train(self, req: dict[str, Any]) -> dict[str, Any]:
        if self._closed or time.monotonic() - self._failed_at < FAIL_BACKOFF_S:
            raise TrainerUnavailable("LSTM training paused")
        body = pickle.dumps(req, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            for attempt in (1, 2):  # the worker may have just exited on its idle timer: once more
                proc = self._worker()
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    write_frame(proc.stdin.fileno(), body)
                    ready = select.select([proc.stdout], [], [], ROUND_TIMEOUT_S)[0]
                    frame = read_frame(proc.stdout.fileno()) if ready else None
                except (BrokenPipeError, EOFError, ValueError, OSError):
                    frame = None
                if frame is not None:
                    reply = pickle.loads(frame)
                    if "ok" in reply:
                        return reply["ok"]
                    self._failed_at = time.monotonic()
                    raise RuntimeError(f"LSTM training round failed: {reply.get('error')}")
                self._kill()
                if attempt == 2 or self._closed:
                    self._failed_at = time.monotonic()
                    raise RuntimeError("the LSTM training worker exited or hung during a round")
        raise AssertionError("unreachable")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            helpers.end_child(proc)

    def close(self) -> None:
        """Stop for good (the service stops): the worker is killed; a round in progress fails."""
        self._closed = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # the round's reader sees EOF and cleans up under its lock
        if self._lock.acquire(timeout=5):
            try:
                self._kill()
            finally:
                self._lock.release()


ROUND_TIMEOUT_S = 300.0
"""A round takes well under a second of CPU; a worker silent this long (idle I/O starved) is killed."""
FAIL_BACKOFF_S = 60.0


def read_frame(fd: int) -> bytes | None:
    """One frame of the worker protocol (4-byte little-endian length, then the body); None at EOF."""
    head = _read_exactly(fd, 4)
    if head is None:
        return None
    body = _read_exactly(fd, struct.unpack("<I", head)[0])
    if body is None:
        raise EOFError("truncated frame")
    return body


def _read_exactly(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def write_frame(fd: int, body: bytes) -> None:
    data = struct.pack("<I", len(body)) + body
    while data:
        data = data[os.write(fd, data):]


_trainer: Trainer = InlineTrainer()


def train_in_worker_process() -> ProcessTrainer:
    """From now on this process's LSTM rounds run in a worker process (the service calls this at start)."""
    global _trainer
    if not isinstance(_trainer, ProcessTrainer):
        _trainer = ProcessTrainer()
    return _trainer


def train_inline() -> None:
    """Back to rounds in this process (the service's stop: later users of this process train inline)."""
    global _trainer
    if isinstance(_trainer, ProcessTrainer):
        _trainer.close()
    _trainer = InlineTrainer()


class LSTMPredictor(Predictor):
    name = "lstm"

    def __init__(self, population: Prior) -> None:
        self.population = population
        self.apps: list[str] = ["<unk>"]  # index 0: an app the serving model has no row for
        self.index: dict[str, int] = {}
        self.seq: list[int] = []
        self.counts: dict[int, int] = {}  # launches per app index, for the cold-start shrinkage
        self.tfeat: list[list[float]] = []
        self.n = 0  # launches observed in total (seq keeps the last KEEP)
        self.last_ts: float | None = None
        self.trained_upto = 0  # value of n at the last training round
        self.round_ts: float | None = None  # last_ts at the last training round
        self.fast_upto = 0  # value of n up to which the output layers took their per-launch step
        self._feat: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None  # rank's forward
        self.serving: Net | None = None
        self._probs: np.ndarray | None = None
        self._trainer: Net | None = None  # the training copy: the next round starts from it
        self._opt: Any = None  # Adam's state after the last round (numpy), None = a fresh optimiser
        self._rng = np.random.default_rng(0)
        self._lock = threading.RLock()
        self._train_lock = threading.Lock()

    # -- request path -----------------------------------------------------------------------------
    def observe(self, launch: Launch) -> None:
        with self._lock:
            idx = self.index.get(launch.app)
            if idx is None:
                idx = self.index[launch.app] = len(self.apps)
                self.apps.append(launch.app)
            self.seq.append(idx)
            self.counts[idx] = self.counts.get(idx, 0) + 1
            self.tfeat.append(time_features(launch.ts, self.last_ts))
            if launch.ts is not None:
                self.last_ts = launch.ts
            self.n += 1
            if len(self.seq) > KEEP + KEEP // 2:
                del self.seq[:-KEEP], self.tfeat[:-KEEP]
            self._probs = None

    def rank(self, ctx: Context, k: int) -> list[Scored]:
        with self._lock:
            if self.serving is None or not self.seq:  # not trained yet: the user's frequencies
                return self._rank_counts(k)
            if self._probs is None:
                p = self._forward(self.serving)
                # Shrink towards the user's launch frequencies while the net has seen little data
                # (a new user's net is noise; counts are not): weight SHRINK / (SHRINK + trained).
                lam = SHRINK / (SHRINK + self.trained_upto)
                freq = np.zeros_like(p)
                for i, c in self.counts.items():
                    if i < len(freq):
                        freq[i] = c
                self._probs = (1 - lam) * p + lam * freq / max(1.0, freq.sum())
            p = self._probs
            top = np.argsort(-p[1:], kind="stable")[:k] + 1
            return [Scored(self.apps[i], float(p[i])) for i in top if p[i] > 0]

    def _rank_counts(self, k: int) -> list[Scored]:
        """The user's launch frequencies, smoothed towards the population prior (before any training)."""
        total = sum(self.counts.values()) + PRIOR
        scores = {a: PRIOR * p / total for a, p in self.population.top(k)}
        for i, c in self.counts.items():
            scores[self.apps[i]] = (c + PRIOR * self.population.prob(self.apps[i])) / total
        return top_scored(scores, k)

    def _softmax_at(self, net: Net, upto: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, softmax) of ``net`` predicting launch number ``upto`` from the launches before it."""
        vocab = net.vocab
        size = min(vocab, len(self.apps))
        if self._feat is not None and self._feat[0] == upto and len(self._feat[3]) == size:
            return self._feat[1:]  # rank's forward for this launch (a new app since then: redone)
        end = len(self.seq) - (self.n - upto)
        x = [i if i < vocab else 0 for i in self.seq[max(0, end - WINDOW):end]]
        h, e = net.features(x, self.tfeat[max(0, end - WINDOW):end])
        p = net.softmax(h, e, size)
        self._feat = (upto, h, e, p)
        return h, e, p

    def _forward(self, net: Net) -> np.ndarray:
        p = self._softmax_at(net, self.n)[2].astype(np.float64)
        p[0] = 0.0
        return p

    # -- background training ----------------------------------------------------------------------
    def _due(self) -> bool:
        if not self.trained_upto:
            return self.n >= FIRST_TRAIN
        if self.n - self.trained_upto < RETRAIN_EVERY:
            return False
        return self.round_ts is None or self.last_ts is None or self.last_ts - self.round_ts >= ROUND_GAP_S

    def _fast_steps(self) -> bool:
        """Between rounds, the output layers (out, skip) take one SGD step on each new launch, in the
        serving and the training net alike (so the next round builds on it); launches more than WINDOW
        behind are left to the rounds. Cheap: one forward pass each, usually the one rank just ran."""
        with self._lock:
            net, todo = self.serving, range(max(self.fast_upto, self.n - WINDOW), self.n)
            self.fast_upto = self.n
            if net is None or self._trainer is None or FAST_LR <= 0:
                return False
            did = False
            for j in todo:
                y = self.seq[len(self.seq) - (self.n - j)]
                h, e, p = self._softmax_at(net, j)
                if y >= len(p) or j < 1:
                    continue
                grad = p.copy()
                grad[y] -= 1.0
                grad[0] = 0.0
                for m in (net, self._trainer):
                    m.fast_step(h, e, grad, FAST_LR)
                self._feat, self._probs, did = None, None, True
            return did

    def train_pending(self) -> bool:
        with self._train_lock:
            fast = self._fast_steps()
            with self._lock:
                if not self._due():
                    return fast
                n, ts = self.n, self.last_ts
                seq = list(self.seq[-HISTORY - 1:])
                tfeat = list(self.tfeat[-HISTORY - 1:])
                vocab = len(self.apps)
            try:
                self._train(seq, tfeat, vocab)
            except TrainerUnavailable:
                return fast  # the round waits for the worker's backoff (its failure was logged once)
            assert self._trainer is not None
            frozen = self._trainer.copy()
            with self._lock:
                self.serving = frozen
                self.trained_upto, self.round_ts = n, ts
                self._probs = self._feat = None
            return True

    def _train(self, seq: list[int], tfeat: list[list[float]], vocab: int) -> None:
        """One round (lstm_train.train_round, inline or in the worker) from the training copy."""
        cap = max(32, 1 << (vocab - 1).bit_length())
        if self._trainer is not None and self._trainer.vocab < cap:
            self._opt = None  # the net grows: a fresh optimiser, as for a new net
        length = len(seq) - 1
        win = min(WINDOW, length)
        fresh = max(1, min(self.n - self.trained_upto, length - win + 1))
        steps = STEPS * FIRST_BOOST if not self.trained_upto else STEPS
        batches = []
        for _ in range(steps):
            # some windows end among the launches new since the last round, the rest anywhere
            n_recent = int(BATCH * FRESH_SHARE)
            recent = self._rng.integers(length - fresh + 1, length + 1, n_recent)
            anywhere = self._rng.integers(win, length + 1, BATCH - n_recent)
            batches.append(np.maximum(np.concatenate([recent, anywhere]), win).tolist())
        out = _trainer.train({"weights": self._trainer.w if self._trainer is not None else None,
                              "adam": self._opt, "cap": cap, "seq": seq, "tfeat": tfeat, "ends": batches,
                              "win": win, "seed": self.n})
        self._trainer, self._opt = Net(out["weights"]), out["adam"]

    # -- state ------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        with self._lock:
            weights = None
            if self.serving is not None:
                weights = {k: [list(v.shape), v.astype(np.float32).tobytes()]
                           for k, v in self.serving.w.items()}
            return {"apps": self.apps, "counts": list(self.counts.items()), "seq": self.seq,
                    "tfeat": self.tfeat, "n": self.n, "last_ts": self.last_ts,
                    "trained_upto": self.trained_upto, "round_ts": self.round_ts, "fast_upto": self.fast_upto,
                    "weights": weights}

    def set_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.apps = list(state["apps"])
            self.index = {a: i for i, a in enumerate(self.apps) if i}
            self.seq = list(state["seq"])
            self.counts = {int(i): int(c) for i, c in state["counts"]}
            self.tfeat = [list(t) for t in state["tfeat"]]
            self.n = state["n"]
            self.last_ts = state["last_ts"]
            self.trained_upto = state["trained_upto"]
            self.round_ts = state.get("round_ts")
            self.fast_upto = state.get("fast_upto", self.n)
            self.serving = None
            self._trainer = self._opt = None
            if state["weights"]:
                net = Net({k: np.frombuffer(b, dtype=np.float32).copy().reshape(shape)
                           for k, (shape, b) in state["weights"].items()})
                self._trainer = net  # training resumes from the served weights (fresh optimiser)
                self.serving = net.copy()
            self._probs = self._feat = None
