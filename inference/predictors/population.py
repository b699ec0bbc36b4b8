"""The cross-user prior: how often each app is launched across all users.

A new user has no history, so every predictor backs off to this prior instead of to nothing; an app
nobody has launched yet still gets a small, non-zero probability (add-half smoothing). One instance is
shared by all of a service's UserModels, hence the lock.

Privacy: the prior is what one user learns of the others. With ``min_users`` = k, an app counts for
everyone only once k distinct users have launched it, so that nothing in it can be traced to one person.
Until then each user sees only their own launches of it, through their ``view``: on a machine with one
user the prior is exactly that user's own frequencies, as if there were no threshold. Probabilities are
normalised over what the asker may see, so another user's private launch does not even move them.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import Counter
from collections.abc import Hashable, Iterable

import msgpack

from inference.predictors.base import Launch

MIXER_MIN_LAUNCHES = 100  # a user's mixer speaks for the population once past its own cold start
NOVEL = 64  # nominal number of apps nobody has launched yet, sharing the smoothing mass
_REFRESH_EVERY = 64  # observes between recomputations of the cached top list (a prior moves slowly)
_TOP = 32  # the cached public top list's length


class Population:
    """Cross-user launch frequencies, thread-safe. Its own answers (``prob``, ``top``) show only the
    public apps (a user never seen); ``view(user)`` adds that user's own not-yet-public ones."""

    def __init__(self, min_users: int = 1) -> None:
        self.min_users = max(1, int(min_users))
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()  # public apps only
        self._private: dict[str, Counter[Hashable]] = {}  # app -> its launches by each of < k users
        self._mine: dict[Hashable, Counter[str]] = {}  # user -> their launches of private apps
        self._mine_total: Counter[Hashable] = Counter()  # user -> the sum of their _mine
        self._total = 0  # every launch counted (a version number for callers)
        self._public_total = 0
        self._top: list[tuple[str, int]] = []
        self._stale = 0
        self._mixers: dict[Hashable, dict[str, tuple[float, float]]] = {}  # user -> their mixer, learned

    @classmethod
    def from_sequences(cls, sequences: Iterable[Iterable[str]], min_users: int = 1) -> Population:
        """A prior built from whole per-user app sequences (e.g. the other users in ``memo eval``)."""
        pop = cls(min_users)
        for user, seq in enumerate(sequences):
            for app in seq:
                pop._add(app, user)
        return pop

    def observe(self, launch: Launch, user: Hashable = None) -> None:
        """Count ``user``'s launch."""
        with self._lock:
            self._add(launch.app, user)

    def _add(self, app: str, user: Hashable) -> None:
        self._total += 1
        self._stale += 1
        if app in self._counts:
            self._counts[app] += 1
            self._public_total += 1
            return
        by_user = self._private.setdefault(app, Counter())
        by_user[user] += 1
        self._mine.setdefault(user, Counter())[app] += 1
        self._mine_total[user] += 1
        if len(by_user) >= self.min_users:  # k users now: everyone's, and nobody's in particular
            del self._private[app]
            for u, c in by_user.items():
                del self._mine[u][app]
                self._mine_total[u] -= c
            self._counts[app] = by_user.total()
            self._public_total += by_user.total()

    def share_mixer(self, user: Hashable, learned: dict[str, tuple[float, float]]) -> None:
        """``user``'s mixer as it stands (Mixer.learned), once they have MIXER_MIN_LAUNCHES launches."""
        with self._lock:
            self._mixers[user] = dict(learned)

    def mixer_start(self, user: Hashable) -> dict[str, tuple[float, float]] | None:
        """Where a new mixer for ``user`` starts: each feature's mean over the other users' mixers, once
        ``min_users`` of them have shared one (how much each predictor is trusted, never an app); None
        before that."""
        with self._lock:
            others = [m for u, m in self._mixers.items() if u != user]
        if len(others) < self.min_users:  # min_users >= 1: never an empty mean
            return None
        names = {n for m in others for n in m}
        out = {}
        for n in names:
            vals = [m[n] for m in others if n in m]
            out[n] = (sum(w for w, _ in vals) / len(vals), sum(g for _, g in vals) / len(vals))
        return out

    @property
    def total(self) -> int:
        """Launches counted, public or not: changes whenever the prior may have."""
        return self._total

    def view(self, user: Hashable) -> PopulationView:
        """The prior as ``user`` may see it: the public apps and their own."""
        return PopulationView(self, user)

    def _prob(self, app: str, user: Hashable) -> float:
        with self._lock:
            mine = self._mine.get(user) or Counter()
            seen = self._counts.get(app) or mine.get(app, 0)
            return (seen + 0.5) / self._denominator(user, mine)

    def _top_of(self, n: int, user: Hashable) -> list[tuple[str, float]]:
        with self._lock:
            if not self._top or self._stale >= _REFRESH_EVERY or len(self._top) < min(n, len(self._counts)):
                self._top = heapq.nlargest(max(n, _TOP), self._counts.items(), key=lambda kv: kv[1])
                self._stale = 0
            mine = self._mine.get(user) or Counter()
            best = heapq.nlargest(n, [*self._top, *mine.items()], key=lambda kv: kv[1]) if mine else self._top
            denom = self._denominator(user, mine)
            return [(a, (c + 0.5) / denom) for a, c in best[:n]]

    def _denominator(self, user: Hashable, mine: Counter[str]) -> float:
        seen = self._public_total + self._mine_total.get(user, 0)
        return seen + 0.5 * (len(self._counts) + len(mine) + NOVEL)

    def prob(self, app: str) -> float:
        """P(app) across users (public apps), add-half smoothed so that an app never seen still gets a
        little."""
        return self._prob(app, _NOBODY)

    def top(self, n: int) -> list[tuple[str, float]]:
        """The n most launched public apps with their smoothed probabilities."""
        return self._top_of(n, _NOBODY)

    def to_bytes(self) -> bytes:
        with self._lock:
            return msgpack.packb({
                "min_users": self.min_users, "counts": dict(self._counts),
                "private": {a: [[u, c] for u, c in by.items()] for a, by in self._private.items()},
                "mixers": [[u, m] for u, m in self._mixers.items()],
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
        pop._public_total = sum(pop._counts.values())
        for app, pairs in state["private"].items():
            by_user = pop._private[app] = Counter({u: c for u, c in pairs})
            for u, c in by_user.items():
                pop._mine.setdefault(u, Counter())[app] = c
                pop._mine_total[u] += c
        pop._total = pop._public_total + sum(by.total() for by in pop._private.values())
        for u, m in state.get("mixers", []):  # absent in snapshots from before the pooled start
            try:
                learned = {str(n): (float(w), float(g)) for n, (w, g) in m.items()}
            except (AttributeError, TypeError, ValueError):
                continue  # one damaged entry: that user's mixer is shared again at its next launches
            if all(math.isfinite(w) and math.isfinite(g) and g > 0 for w, g in learned.values()):
                pop._mixers[u] = learned
        return pop


_NOBODY = object()
"""The asker with no launches of their own (a user never seen): the public prior alone."""


class PopulationView:
    """One user's window on the shared Population (what their predictors back off to)."""

    def __init__(self, population: Population, user: Hashable) -> None:
        self.population = population
        self.user = user

    def prob(self, app: str) -> float:
        return self.population._prob(app, self.user)

    def top(self, n: int) -> list[tuple[str, float]]:
        return self.population._top_of(n, self.user)


Prior = Population | PopulationView
"""What a predictor backs off to: the public prior, or one user's view of it."""
