"""The per-user online mixer that turns the members' rankings into one.

A Hedge over members tends only to tie the best member: it picks one model's whole ranking. This
mixer instead scores each candidate app from per-app features — each member's log-probability,
probability, reciprocal rank and whether it ranks the app first, plus "was the last app" and
"never launched by this user" — with a linear model, ranks by a softmax over the candidates (a
conditional logit), and after each launch takes one AdaGrad step on its log-likelihood. It thus
learns per user which member to trust for which kind of app, and a member that does not help ends
up with weights near 0. A member that joins later (the LLM) starts at weight 0 and earns its say.

A new user's mixer starts from what the population's mixers learned (``learned`` / ``start_from``,
pooled by Population), not from a fixed guess: cold start is where one user's few launches say least.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.predictors.base import Scored

FLOOR = 1e-4  # score assumed for an app a member did not rank
LEARNING_RATE = 0.15
_PER_MEMBER = ("lp", "rr", "top", "p")
_GLOBAL = ("bias_last", "bias_new")
# A sensible start before any learning: trust PPM's probabilities (or the first member's).
_START = ("ppm", "markov", "lstm", "mfu", "mru")
# A population start takes the pooled AdaGrad sums times this: steps about 3x the population's own,
# so that the user's own launches still move it (memo eval, android6: cold top-5 as with the sums
# whole, top-1 as with fresh ones).
START_STEP_SHARE = 0.1


@dataclass(slots=True)
class Candidates:
    """Candidate apps with their feature rows, as prepared by ``Mixer.features``."""

    apps: list[str]
    features: np.ndarray  # (len(apps), n_features)
    scores: dict[str, dict[str, float]]  # member -> app -> score (0.0 when not ranked)


class Mixer:
    def __init__(self, members: list[str]) -> None:
        self.names: list[str] = []
        self.w = np.zeros(len(_GLOBAL))
        self.g = np.full(len(_GLOBAL), 1e-2)
        for m in members:
            self.add_member(m)
        start = next((m for m in _START if m in members), members[0] if members else None)
        if start is not None:
            self.w[self._index(start, "lp")] = 1.0

    def add_member(self, name: str) -> None:
        if name in self.names:
            return
        self.names.append(name)
        self.w = np.concatenate([self.w, np.zeros(len(_PER_MEMBER))])
        self.g = np.concatenate([self.g, np.full(len(_PER_MEMBER), 1e-2)])

    def _index(self, member: str, feat: str) -> int:
        return len(_GLOBAL) + self.names.index(member) * len(_PER_MEMBER) + _PER_MEMBER.index(feat)

    def features(self, ranked: dict[str, list[Scored]], last: str | None, seen: set[str] | dict,
                 extra: list[str]) -> Candidates:
        """Feature rows for the union of the members' lists (and ``extra`` apps, e.g. recent ones)."""
        apps: list[str] = []
        index: dict[str, int] = {}
        for lst in ranked.values():
            for s in lst:
                if s.app not in index:
                    index[s.app] = len(apps)
                    apps.append(s.app)
        for a in extra:
            if a not in index:
                index[a] = len(apps)
                apps.append(a)
        n = len(apps)
        f = np.zeros((n, len(self.w)))
        if last is not None and last in index:
            f[index[last], 0] = 1.0
        for i, a in enumerate(apps):
            if a not in seen:
                f[i, 1] = 1.0
        scores: dict[str, dict[str, float]] = {}
        for m, lst in ranked.items():
            if m not in self.names:
                self.add_member(m)
                f = np.concatenate([f, np.zeros((n, len(_PER_MEMBER)))], axis=1)
            col = self._index(m, "lp")
            floor = max(min((s.score for s in lst), default=FLOOR) * 0.5, 1e-12)
            f[:, col] = math.log(min(floor, FLOOR))
            ms: dict[str, float] = {}
            for r, s in enumerate(lst):
                i = index[s.app]
                f[i, col] = math.log(max(s.score, 1e-12))
                f[i, col + 1] = 1.0 / (r + 1)
                ms[s.app] = s.score
            if lst:
                f[index[lst[0].app], col + 2] = 1.0
            for s in lst:  # the probability itself: a linear pool next to the log pool
                f[index[s.app], col + 3] = s.score
            scores[m] = ms
        return Candidates(apps, f, scores)

    def probabilities(self, cands: Candidates) -> np.ndarray:
        if not cands.apps:
            return np.zeros(0)
        # Exactly rounded sums and libm's exp rather than BLAS/SIMD kernels, whose last bits depend on
        # memory alignment: a model restored from bytes must rank with the very same probabilities.
        rows = (cands.features * self.w[: cands.features.shape[1]]).tolist()
        z = [math.fsum(r) for r in rows]
        top = max(z)
        e = [math.exp(v - top) for v in z]
        total = math.fsum(e)
        return np.array([v / total for v in e])

    def update(self, cands: Candidates, app: str) -> None:
        """One AdaGrad step on -log P(app); nothing to learn when no member proposed the app."""
        if app not in cands.apps:
            return
        p = self.probabilities(cands)
        f = cands.features
        grad = f[cands.apps.index(app)] - p @ f
        d = len(grad)
        self.g[:d] += grad * grad
        self.w[:d] += LEARNING_RATE * grad / np.sqrt(self.g[:d])

    def _feature_names(self) -> list[str]:
        return [*_GLOBAL, *(f"{m}.{f}" for m in self.names for f in _PER_MEMBER)]

    def learned(self) -> dict[str, tuple[float, float]]:
        """Each feature's (weight, AdaGrad sum) by name ("bias_last", "ppm.lp", ...), for Population."""
        return {n: (float(self.w[i]), float(self.g[i])) for i, n in enumerate(self._feature_names())}

    def start_from(self, learned: dict[str, tuple[float, float]]) -> None:
        """Start from the population's weights for the features this mixer has (the others keep theirs)."""
        for i, n in enumerate(self._feature_names()):
            if n in learned:
                w, g = learned[n]
                self.w[i] = w
                self.g[i] = max(g * START_STEP_SHARE, 1e-2)

    def weights(self) -> dict[str, dict[str, float]]:
        """Each member's weight on each of its features: its say in this user's ensemble (explain)."""
        return {m: {f: float(self.w[self._index(m, f)]) for f in _PER_MEMBER} for m in self.names}

    def get_state(self) -> dict[str, Any]:
        return {"names": list(self.names), "w": self.w.tolist(), "g": self.g.tolist()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.names = list(state["names"])
        self.w = np.array(state["w"], dtype=float)
        self.g = np.array(state["g"], dtype=float)
