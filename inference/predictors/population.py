"""The cross-user prior: how often each app is launched across all users, and what follows what.

A new user has no history, so every predictor backs off to this prior instead of to nothing; an app
nobody has launched yet still gets a small, non-zero probability (add-half smoothing). One instance is
shared by all of a service's UserModels, hence the lock.

Privacy: the prior is what one user learns of the others. With ``min_users`` = k, an app (and a
transition a -> b) counts in it only once k distinct users have launched it, so that nothing in it can
be traced to one person; the users of a not-yet-public app are kept (at most k ids) until it is. The
probabilities are normalised over the public counts only, so a private launch does not even move them.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any

import msgpack

from inference.predictors.base import Launch

NOVEL = 64  # nominal number of apps nobody has launched yet, sharing the smoothing mass
_REFRESH_EVERY = 64  # observes between recomputations of the cached top list (a prior moves slowly)


class _Gate:
    """Which keys (apps, transitions) k distinct users have reached, and who reached the others."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.public: set[Any] = set()
        self.users: dict[Any, set[Hashable]] = {}

    def see(self, key: Any, user: Hashable) -> bool:
        """Record that ``user`` launched ``key``; True when ``key`` just became public."""
        if key in self.public:
            return False
        who = self.users.setdefault(key, set())
        who.add(user)
        if len(who) < self.k:
            return False
        del self.users[key]
        self.public.add(key)
        return True


class Population:
    """Cross-user launch frequencies (unigram and bigram), thread-safe; only what ``min_users``
    distinct users share is visible."""

    def __init__(self, min_users: int = 1) -> None:
        self.min_users = max(1, int(min_users))
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._next: dict[str, Counter[str]] = {}
        self._apps = _Gate(self.min_users)
        self._pairs = _Gate(self.min_users)
        self._total = 0  # every launch counted (a cheap version number for callers)
        self._public_total = 0  # the launches of public apps: the denominator
        self._top: list[tuple[str, float]] = []
        self._stale = 0

    @classmethod
    def from_sequences(cls, sequences: Iterable[Iterable[str]], min_users: int = 1) -> Population:
        """A prior built from whole per-user app sequences (e.g. the other users in ``memo eval``)."""
        pop = cls(min_users)
        for user, seq in enumerate(sequences):
            prev: str | None = None
            for app in seq:
                pop._add(app, prev, user)
                prev = app
        return pop

    def observe(self, launch: Launch, prev: str | None = None, user: Hashable = None) -> None:
        """Count ``user``'s launch; ``prev`` is the same user's previous app, for the transitions."""
        with self._lock:
            self._add(launch.app, prev, user)

    def _add(self, app: str, prev: str | None, user: Hashable) -> None:
        self._counts[app] += 1
        self._total += 1
        if app in self._apps.public:
            self._public_total += 1
        elif self._apps.see(app, user):
            self._public_total += self._counts[app]
        if prev is not None:
            self._next.setdefault(prev, Counter())[app] += 1
            self._pairs.see((prev, app), user)
        self._stale += 1

    @property
    def total(self) -> int:
        """Launches counted, public or not: changes whenever the prior may have."""
        return self._total

    def _denominator(self) -> float:
        return self._public_total + 0.5 * (len(self._apps.public) + NOVEL)

    def prob(self, app: str) -> float:
        """P(app) across users, add-half smoothed so that an app never seen (or not yet public) still
        gets a little."""
        with self._lock:
            seen = self._counts.get(app, 0) if app in self._apps.public else 0
            return (seen + 0.5) / self._denominator()

    def top(self, n: int) -> list[tuple[str, float]]:
        """The n most launched public apps with their smoothed probabilities."""
        with self._lock:
            public = self._apps.public
            if not self._top or self._stale >= _REFRESH_EVERY or len(self._top) < min(n, len(public)):
                denom = self._denominator()
                counts = ((a, self._counts[a]) for a in public)
                best = heapq.nlargest(max(n, 32), counts, key=lambda kv: kv[1])
                self._top = [(a, (c + 0.5) / denom) for a, c in best]
                self._stale = 0
            return self._top[:n]

    def next_probs(self, prev: str, n: int) -> list[tuple[str, float]]:
        """The n apps that most often follow ``prev`` across users (public transitions), with
        P(app | prev)."""
        with self._lock:
            nxt = self._next.get(prev)
            if not nxt:
                return []
            shown = Counter({a: c for a, c in nxt.items() if (prev, a) in self._pairs.public})
            total = sum(shown.values())
            return [(a, c / total) for a, c in shown.most_common(n)] if total else []

    def to_bytes(self) -> bytes:
        with self._lock:
            return msgpack.packb({
                "counts": dict(self._counts), "next": {a: dict(c) for a, c in self._next.items()},
                "min_users": self.min_users,
                "public": sorted(self._apps.public),
                "users": {a: sorted(u, key=str) for a, u in self._apps.users.items()},
                "public_pairs": sorted(self._pairs.public),
                "pair_users": [[a, b, sorted(u, key=str)] for (a, b), u in self._pairs.users.items()],
            })

    @classmethod
    def from_bytes(cls, data: bytes, min_users: int | None = None) -> Population:
        """The saved prior. A snapshot saved without its users (older MEMO), or under another
        ``min_users``, cannot tell what is public: ValueError, and the caller relearns it."""
        state = msgpack.unpackb(data, strict_map_key=False)
        saved_k = state.get("min_users")
        if saved_k is None or (min_users is not None and saved_k != min_users):
            raise ValueError(f"population saved with min_users={saved_k!r}, wanted {min_users}")
        pop = cls(saved_k)
        pop._counts = Counter(state["counts"])
        pop._next = {a: Counter(c) for a, c in state["next"].items()}
        pop._total = sum(pop._counts.values())
        pop._apps.public = set(state["public"])
        pop._apps.users = {a: set(u) for a, u in state["users"].items()}
        pop._pairs.public = {(a, b) for a, b in state["public_pairs"]}
        pop._pairs.users = {(a, b): set(u) for a, b, u in state["pair_users"]}
        pop._public_total = sum(pop._counts[a] for a in pop._apps.public)
        return pop
