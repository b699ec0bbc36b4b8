"""MFU: the user's most frequently used apps, smoothed towards the population prior.

The weakest sensible baseline, and the ensemble's long-term-habit feature. With few launches the
population prior dominates (cold start); it fades as the user's own counts grow.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from inference.predictors.base import Context, Launch, Predictor, Scored, top_scored
from inference.predictors.population import Prior

PRIOR_WEIGHT = 2.0  # pseudo-launches of population prior mixed into the user's counts


class MFU(Predictor):
    name = "mfu"

    def __init__(self, population: Prior) -> None:
        self.population = population
        self.counts: Counter[str] = Counter()
        self.total = 0

    def observe(self, launch: Launch) -> None:
        self.counts[launch.app] += 1
        self.total += 1

    def prob(self, app: str) -> float:
        return (self.counts.get(app, 0) + PRIOR_WEIGHT * self.population.prob(app)) / (
            self.total + PRIOR_WEIGHT
        )

    def rank(self, ctx: Context, k: int) -> list[Scored]:
        cands = {a for a, _ in heapq.nlargest(k, self.counts.items(), key=lambda kv: kv[1])}
        cands.update(a for a, _ in self.population.top(k))
        return top_scored({a: self.prob(a) for a in cands}, k)

    def get_state(self) -> dict[str, Any]:
        return {"counts": dict(self.counts)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.counts = Counter(state["counts"])
        self.total = sum(self.counts.values())
