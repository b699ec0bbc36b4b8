"""PPM/APPM: prediction by partial matching with blended variable-order contexts (the seeds' APPM).

Every context of the last 0..MAX_ORDER launches predicts the next one; the orders are blended, the
longest first: a context that has seen ``n`` launches with ``u`` distinct successors keeps
``n / (n + u)`` of the mass for its own counts and passes ``u / (n + u)`` (PPM escape method C) to the
next shorter context, and order -1 is the population prior. Long habits ("make, cc, ld") win when they
have been seen; otherwise the model degrades smoothly to Markov-1 and to frequencies.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from inference.predictors.base import Context, Launch, Predictor, Scored, top_scored
from inference.predictors.population import Prior

MAX_ORDER = 5
_TOP_REFRESH = 32  # observes between recomputations of the cached order-0 candidate list


class PPM(Predictor):
    name = "ppm"

    def __init__(self, population: Prior, max_order: int = MAX_ORDER) -> None:
        self.population = population
        self.max_order = max_order
        self.ctx: dict[tuple[str, ...], Counter[str]] = {}
        self.tot: dict[tuple[str, ...], int] = {}
        self.history: list[str] = []
        self._top0: list[str] = []
        self._stale = _TOP_REFRESH

    def observe(self, launch: Launch) -> None:
        h = self.history
        for o in range(min(self.max_order, len(h)) + 1):
            key = tuple(h[len(h) - o:]) if o else ()
            c = self.ctx.get(key)
            if c is None:
                c = self.ctx[key] = Counter()
                self.tot[key] = 0
            c[launch.app] += 1
            self.tot[key] += 1
        h.append(launch.app)
        if len(h) > 4 * self.max_order + 16:
            del h[: len(h) - self.max_order]
        self._stale += 1

    def _blend(self) -> list[tuple[float, Counter[str], int]]:
        """(weight, counts, total) per active context, longest first; the rest of the mass is the prior's."""
        h = self.history
        out = []
        for o in range(min(self.max_order, len(h)), -1, -1):
            key = tuple(h[len(h) - o:]) if o else ()
            c = self.ctx.get(key)
            if c:
                out.append((c, self.tot[key]))
        parts = []
        w = 1.0
        for c, n in out:
            u = len(c)
            parts.append((w / (n + u), c, n))
            w *= u / (n + u)
        parts.append((w, Counter(), 0))
        return parts

    def rank(self, ctx: Context, k: int) -> list[Scored]:
        parts = self._blend()
        prior_w = parts[-1][0]
        cands: set[str] = set()
        for _, c, _ in parts[:-2]:
            cands.update(c)
        root = self.ctx.get(())
        if root:
            if self._stale >= _TOP_REFRESH or len(self._top0) < min(max(k, 32), len(root)):
                self._top0 = [a for a, _ in heapq.nlargest(max(k, 32), root.items(), key=lambda kv: kv[1])]
                self._stale = 0
            cands.update(self._top0[: max(k, 32)])
        cands.update(a for a, _ in self.population.top(k))
        prob = self.population.prob
        scores = {}
        for a in cands:
            s = prior_w * prob(a)
            for w, c, _ in parts[:-1]:
                n = c.get(a)
                if n:
                    s += w * n
            scores[a] = s
        return top_scored(scores, k)

    def get_state(self) -> dict[str, Any]:
        return {"max_order": self.max_order, "history": self.history[-self.max_order:],
                "ctx": [[list(key), dict(c)] for key, c in self.ctx.items()]}

    def set_state(self, state: dict[str, Any]) -> None:
        self.max_order = state["max_order"]
        self.history = list(state["history"])
        self.ctx = {tuple(key): Counter(c) for key, c in state["ctx"]}
        self.tot = {key: sum(c.values()) for key, c in self.ctx.items()}
        self._stale = _TOP_REFRESH
