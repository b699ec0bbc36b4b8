"""LSTM over the user's launch sequence, with time context, trained in the background.

Input per launch: the app's embedding plus its time context — hour and weekday (as sin/cos) and
log(1 + seconds since the previous launch), zeros when the trace has no times. The model reads the
last ``WINDOW`` launches and outputs a softmax over the user's apps, plus a direct path from the last
app's embedding (learns "what follows what" fast). One user's data is small (1-30k launches), so the
net is small, uses dropout, and its output is shrunk towards the user's launch frequencies while it
has trained on little (a new user's net is noise; counts are not); before its first round it ranks
by those frequencies alone.

Training never runs on the request path: ``observe`` only appends to the history. ``train_pending``
(a worker thread in the service, inline in ``memo eval``) does two things. Every ``RETRAIN_EVERY``
launches it trains a private copy for a few Adam steps on windows of the recent history, then swaps a
frozen copy in under the lock. In between, so that the net is not stale against counting models that
learn each launch at once, the output layers take one small SGD step on each new launch (the softmax
gradient of that launch through the last LSTM output and the skip path), applied to the serving and
the training copy alike. ``rank`` only runs the serving copy's forward pass. The vocabulary grows by
doubling (weights copied), so a user's new apps get rows without retraining from scratch.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from inference.predictors.base import Context, Launch, Predictor, Scored, top_scored
from inference.predictors.population import Population

# The nets are tiny: torch's intra-op threads would only take the second core from the user's launch.
torch.set_num_threads(1)

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
SHRINK = 150.0  # launches' worth of trust in the user's frequencies before the net's
FIRST_BOOST = 4  # the first round trains this many times more (more steps overfit a short history)
FAST_LR = 0.03  # SGD step size of the output layers' update on each launch (between rounds)
PRIOR = 2.0  # before the first round: pseudo-launches of the population prior in the user's counts


def time_features(ts: float | None, prev_ts: float | None) -> list[float]:
    if ts is None:
        return [0.0] * N_TIME
    t = time.localtime(ts)
    hour = 2 * math.pi * (t.tm_hour + t.tm_min / 60) / 24
    day = 2 * math.pi * t.tm_wday / 7
    gap = math.log1p(max(0.0, ts - prev_ts)) / 10 if prev_ts is not None else 0.0
    return [math.sin(hour), math.cos(hour), math.sin(day), math.cos(day), gap, 1.0]


class _Net(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, EMBED)
        self.lstm = nn.LSTM(EMBED + N_TIME, HIDDEN, batch_first=True)
        self.out = nn.Linear(HIDDEN, vocab)
        self.skip = nn.Linear(EMBED, vocab, bias=False)  # a direct "what follows this app" path
        # dropout from the predictor's own generator, not torch's global one: a user's model then
        # trains the same whatever else the process did before (reproducible runs)
        self.gen = torch.Generator().manual_seed(0)

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or DROPOUT <= 0:
            return x
        keep = torch.rand(x.shape, generator=self.gen) >= DROPOUT
        return x * keep / (1 - DROPOUT)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the output layers read at the last step: the LSTM's output and the last app's embedding."""
        e = self.emb(x)
        y, _ = self.lstm(torch.cat([e, t], dim=-1))
        return y[0, -1], e[0, -1]

    def fast_step(self, h: torch.Tensor, e: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """One SGD step of the output layers on one launch; ``grad`` is d(loss)/d(logits)."""
        n = len(grad)
        with torch.no_grad():
            self.out.weight[:n].sub_(lr * torch.outer(grad, h))
            self.out.bias[:n].sub_(lr * grad)
            self.skip.weight[:n].sub_(lr * torch.outer(grad, e))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.drop(self.emb(x))
        y, _ = self.lstm(torch.cat([e, t], dim=-1))
        return self.out(self.drop(y)) + self.skip(e)

    def grown(self, vocab: int) -> _Net:
        """A copy with room for ``vocab`` apps; learned rows kept, new ones freshly initialised."""
        with torch.random.fork_rng():
            torch.manual_seed(vocab)
            new = _Net(vocab)
        with torch.no_grad():
            old = self.emb.num_embeddings
            new.emb.weight[:old] = self.emb.weight
            new.out.weight[:old] = self.out.weight
            new.out.bias[:old] = self.out.bias
            new.skip.weight[:old] = self.skip.weight
            new.out.bias[old:] = self.out.bias.min()  # unseen apps start unlikely
            new.lstm.load_state_dict(self.lstm.state_dict())
        return new


def _new_net(vocab: int) -> _Net:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _Net(vocab)


class LSTMPredictor(Predictor):
    name = "lstm"

    def __init__(self, population: Population) -> None:
        self.population = population
        self.apps: list[str] = ["<unk>"]  # index 0: an app the serving model has no row for
        self.index: dict[str, int] = {}
        self.seq: list[int] = []
        self.counts: dict[int, int] = {}  # launches per app index, for the cold-start shrinkage
        self.tfeat: list[list[float]] = []
        self.n = 0  # launches observed in total (seq keeps the last KEEP)
        self.last_ts: float | None = None
        self.trained_upto = 0  # value of n at the last training round
        self.fast_upto = 0  # value of n up to which the output layers took their per-launch step
        self._feat: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # rank's forward
        self.serving: _Net | None = None
        self._probs: np.ndarray | None = None
        self._trainer: _Net | None = None
        self._opt: torch.optim.Optimizer | None = None
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

    def _softmax_at(self, net: _Net, upto: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, softmax) of ``net`` predicting launch number ``upto`` from the launches before it."""
        vocab = net.emb.num_embeddings
        size = min(vocab, len(self.apps))
        if self._feat is not None and self._feat[0] == upto and len(self._feat[3]) == size:
            return self._feat[1:]  # rank's forward for this launch (a new app since then: redone)
        end = len(self.seq) - (self.n - upto)
        x = torch.tensor([[i if i < vocab else 0 for i in self.seq[max(0, end - WINDOW):end]]])
        t = torch.tensor([self.tfeat[max(0, end - WINDOW):end]], dtype=torch.float32)
        with torch.no_grad():
            h, e = net.features(x, t)
            p = torch.softmax((net.out(h) + net.skip(e))[:size], dim=0)
        self._feat = (upto, h, e, p)
        return h, e, p

    def _forward(self, net: _Net) -> np.ndarray:
        p = self._softmax_at(net, self.n)[2].numpy().astype(np.float64)
        p[0] = 0.0
        return p

    # -- background training ----------------------------------------------------------------------
    def _due(self) -> bool:
        new = self.n - self.trained_upto
        return self.n >= FIRST_TRAIN and new >= (FIRST_TRAIN if not self.trained_upto else RETRAIN_EVERY)

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
                grad = p.clone()
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
                n = self.n
                seq = list(self.seq[-HISTORY - 1:])
                tfeat = list(self.tfeat[-HISTORY - 1:])
                vocab = len(self.apps)
            self._train(seq, tfeat, vocab)
            assert self._trainer is not None
            frozen = copy.deepcopy(self._trainer).eval()
            for p in frozen.parameters():
                p.requires_grad_(False)
            with self._lock:
                self.serving = frozen
                self.trained_upto = n
                self._probs = self._feat = None
            return True

    def _train(self, seq: list[int], tfeat: list[list[float]], vocab: int) -> None:
        cap = max(32, 1 << (vocab - 1).bit_length())
        if self._trainer is None:
            self._trainer = _new_net(cap)
            self._opt = None
        elif self._trainer.emb.num_embeddings < cap:
            self._trainer = self._trainer.grown(cap)
            self._opt = None
        if self._opt is None:
            self._opt = torch.optim.Adam(self._trainer.parameters(), lr=LR)
        net, opt = self._trainer, self._opt
        net.gen.manual_seed(self.n)
        net.train()
        x_all = torch.tensor(seq[:-1])
        y_all = torch.tensor(seq[1:])
        t_all = torch.tensor(tfeat[:-1], dtype=torch.float32)
        # The target of step i is launch i+1; its time context is known only after it happens, so
        # the input at step i carries launch i's context (what the live model sees when predicting).
        length = len(seq) - 1
        win = min(WINDOW, length)
        fresh = max(1, min(self.n - self.trained_upto, length - win + 1))
        steps = STEPS * FIRST_BOOST if not self.trained_upto else STEPS
        for _ in range(steps):
            # some windows end among the launches new since the last round, the rest anywhere
            n_recent = int(BATCH * FRESH_SHARE)
            recent = self._rng.integers(length - fresh + 1, length + 1, n_recent)
            anywhere = self._rng.integers(win, length + 1, BATCH - n_recent)
            ends = np.maximum(np.concatenate([recent, anywhere]), win).tolist()
            x = torch.stack([x_all[e - win:e] for e in ends])
            y = torch.stack([y_all[e - win:e] for e in ends])
            t = torch.stack([t_all[e - win:e] for e in ends])
            logits = net(x, t)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        net.eval()

    # -- state ------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        with self._lock:
            weights = None
            if self.serving is not None:
                weights = {k: [list(v.shape), v.detach().numpy().astype(np.float32).tobytes()]
                           for k, v in self.serving.state_dict().items()}
            return {"apps": self.apps, "counts": list(self.counts.items()), "seq": self.seq,
                    "tfeat": self.tfeat, "n": self.n, "last_ts": self.last_ts,
                    "trained_upto": self.trained_upto, "fast_upto": self.fast_upto, "weights": weights}

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
            self.fast_upto = state.get("fast_upto", self.n)
            self.serving = None
            self._trainer = self._opt = None
            if state["weights"]:
                sd = {k: torch.from_numpy(np.frombuffer(b, dtype=np.float32).copy().reshape(shape))
                      for k, (shape, b) in state["weights"].items()}
                net = _new_net(sd["emb.weight"].shape[0])
                net.load_state_dict(sd)
                self._trainer = net  # training resumes from the served weights (fresh optimiser)
                self.serving = copy.deepcopy(net).eval()
                for p in self.serving.parameters():
                    p.requires_grad_(False)
            self._probs = self._feat = None
