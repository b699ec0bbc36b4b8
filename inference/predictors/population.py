"""The cross-user prior: how often each app is launched across all users, and what follows what.

A new user has no history, so every predictor backs off to this prior instead of to nothing; an app
nobody has launched yet still gets a small, non-zero probability (add-half smoothing). One instance is
shared by all of a service's UserModels, hence the lock.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Iterable

import msgpack

from inference.predictors.base import Launch

NOVEL = 64  # nominal number of apps nobody has launched yet, sharing the smoothing mass
_REFRESH_EVERY = 64  # observes between recomputations of the cached top list (a prior moves slowly)


class Population:
    """Cross-user launch frequencies (unigram and bigram), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._next: dict[str, Counter[str]] = {}
        self._total = 0
        self._top: list[tuple[str, float]] = []
        self._stale = 0

    @classmethod
    def from_sequences(cls, sequences: Iterable[Iterable[str]]) -> Population:
        """A prior built from whole per-user app sequences (e.g. the other users in ``memo eval``)."""
        pop = cls()
        for seq in sequences:
            prev: str | None = None
            for app in seq:
                pop._add(app, prev)
                prev = app
        return pop

    def observe(self, launch: Launch, prev: str | None = None) -> None:
        """Count a launch; ``prev`` is the same user's previous app, for the cross-user transitions."""
        with self._lock:
            self._add(launch.app, prev)

    def _add(self, app: str, prev: str | None) -> None:
        self._counts[app] += 1
        self._total += 1
        if prev is not None:
            self._next.setdefault(prev, Counter())[app] += 1
        self._stale += 1

    @property
    def total(self) -> int:
        return self._total

    def prob(self, app: str) -> float:
        """P(app) across users, add-half smoothed so that an app never seen still gets a little."""
        with self._lock:
            return (self._counts.get(app, 0) + 0.5) / (self._total + 0.5 * (len(self._counts) + NOVEL))

    def top(self, n: int) -> list[tuple[str, float]]:
        """The n most launched apps across users with their smoothed probabilities."""
        with self._lock:
            if not self._top or self._stale >= _REFRESH_EVERY or len(self._top) < min(n, len(self._counts)):
                denom = self._total + 0.5 * (len(self._counts) + NOVEL)
                best = heapq.nlargest(max(n, 32), self._counts.items(), key=lambda kv: kv[1])
                self._top = [(a, (c + 0.5) / denom) for a, c in best]
                self._stale = 0
            return self._top[:n]

    def next_probs(self, prev: str, n: int) -> list[tuple[str, float]]:
        """The n apps that most often follow ``prev`` across users, with P(app | prev)."""
        with self._lock:
            nxt = self._next.get(prev)
            if not nxt:
                return []
            total = sum(nxt.values())
            return [(a, c / total) for a, c in nxt.most_common(n)]

    def to_bytes(self) -> bytes:
        with self._lock:
            return msgpack.packb(
                {"counts": dict(self._counts), "next": {a: dict(c) for a, c in self._next.items()}}
            )

    @classmethod
    def from_bytes(cls, data: bytes) -> Population:
        state = msgpack.unpackb(data)
        pop = cls()
        pop._counts = Counter(state["counts"])
        pop._next = {a: Counter(c) for a, c in state["next"].items()}
        pop._total = sum(pop._counts.values())
        return pop
