"""MRU: the apps used most recently, the most recent first.

Users return to what they just used (editors, shells, the launcher); this catches bursts that
frequency counts miss. Scores decay geometrically with recency; unused slots fall back to the
population's top apps with a small score so that a new user still gets k answers.
"""

from __future__ import annotations

from typing import Any

from inference.predictors.base import Context, Launch, Predictor, Scored
from inference.predictors.population import Prior

DECAY = 0.6  # score of the i-th most recent app is (1 - DECAY) * DECAY**i
KEEP = 64  # distinct recent apps remembered


class MRU(Predictor):
    name = "mru"

    def __init__(self, population: Prior) -> None:
        self.population = population
        self.recent: list[str] = []  # most recent first, distinct

    def observe(self, launch: Launch) -> None:
        if launch.app in self.recent:
            self.recent.remove(launch.app)
        self.recent.insert(0, launch.app)
        del self.recent[KEEP:]

    def rank(self, ctx: Context, k: int) -> list[Scored]:
        out = [Scored(a, (1 - DECAY) * DECAY**i) for i, a in enumerate(self.recent[:k])]
        if len(out) < k:
            floor = (1 - DECAY) * DECAY ** len(self.recent)
            seen = set(self.recent)
            extra = [(a, p) for a, p in self.population.top(k + len(seen)) if a not in seen]
            out += [Scored(a, floor * p) for a, p in extra[: k - len(out)]]
        return out

    def get_state(self) -> dict[str, Any]:
        return {"recent": list(self.recent)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.recent = list(state["recent"])
