"""Markov-1 (preload's idea): P(next | last app), from the user's own transition counts.

Unseen transitions back off to the user's smoothed app frequencies (MFU), so a fresh context or a
new user still ranks something sensible.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from inference.predictors.base import Context, Launch, Predictor, Scored, top_scored
from inference.predictors.mfu import MFU
from inference.predictors.population import Prior

BACKOFF_WEIGHT = 1.0  # pseudo-counts of the frequency back-off in each context


class Markov(Predictor):
    name = "markov"

    def __init__(self, population: Prior) -> None:
        self.freq = MFU(population)
        self.next: dict[str, Counter[str]] = {}
        self.last: str | None = None

    def observe(self, launch: Launch) -> None:
        if self.last is not None:
            self.next.setdefault(self.last, Counter())[launch.app] += 1
        self.freq.observe(launch)
        self.last = launch.app

    def rank(self, ctx: Context, k: int) -> list[Scored]:
        nxt = self.next.get(self.last) if self.last is not None else None
        if not nxt:
            return self.freq.rank(ctx, k)
        n = sum(nxt.values())
        cands = {a for a, _ in heapq.nlargest(k, nxt.items(), key=lambda kv: kv[1])}
        cands.update(s.app for s in self.freq.rank(ctx, k))
        prob = self.freq.prob
        scores = {a: (nxt.get(a, 0) + BACKOFF_WEIGHT * prob(a)) / (n + BACKOFF_WEIGHT) for a in cands}
        return top_scored(scores, k)

    def get_state(self) -> dict[str, Any]:
        return {"freq": self.freq.get_state(), "next": {a: dict(c) for a, c in self.next.items()},
                "last": self.last}

    def set_state(self, state: dict[str, Any]) -> None:
        self.freq.set_state(state["freq"])
        self.next = {a: Counter(c) for a, c in state["next"].items()}
        self.last = state["last"]
