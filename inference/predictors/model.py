"""UserModel: one user's predictors and their ensemble — what the service and ``memo eval`` both drive.

Thread model: ``observe`` and ``predict`` hold the model's lock and are fast; ``train_pending`` (the
LSTM's background training) runs outside it on a private copy and only takes the lock to swap in the
new weights, so a worker thread can train while requests are answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np

from inference.predictors import registry
from inference.predictors.base import Context, Launch, Predictor, Scored
from inference.predictors.ensemble import Candidates, Mixer
from inference.predictors.population import MIXER_MIN_LAUNCHES, Population
from memo import helpers

SHARE_EVERY = 50  # a user's mixer goes to the population every this many launches (past its cold start)
MEMBER_K = 20  # how deep each member's ranking goes into the ensemble's candidates
RECENT = 8  # the most recent distinct apps are always candidates
_FORMAT = 1


def _config_default_models() -> list[str]:
    from memo.config import InferenceConfig

    return list(InferenceConfig.model_fields["models"].default_factory())  # type: ignore[misc]


# memo config's inference.models default, less any predictor this install lacks.
DEFAULT_MODELS: tuple[str, ...] = tuple(n for n in _config_default_models() if registry.available(n))


@dataclass(slots=True)
class Ranked:
    app: str
    probability: float
    models: dict[str, float] = field(default_factory=dict)  # each member's own score for this app


class UserModel:
    """One user's online predictors plus the learned mixer over them."""

    def __init__(self, models: Sequence[str] = DEFAULT_MODELS, population: Population | None = None,
                 user: Hashable = None) -> None:
        self.population = population if population is not None else Population()
        self.user = user if user is not None else id(self)  # who this is to the shared population
        self.names = registry.resolve(models)
        self.members: dict[str, Predictor] = {}
        prior = self.population.view(self.user)  # the shared prior as this user may see it
        for n in self.names:
            make = registry.factory(n)
            assert make is not None
            self.members[n] = make(prior)
        for m in self.members.values():  # the LLM member scores the other members' candidates
            if hasattr(m, "bind_peers"):
                m.bind_peers(list(self.members.values()))
        self.mixer = Mixer(self.names)
        start = self.population.mixer_start(self.user)
        if start is not None:  # a new user: start from what the other users' mixers learned
            self.mixer.start_from(start)
        self.seen: dict[str, int] = {}
        self.recent: list[str] = []
        self.last_ts: float | None = None
        self.n = 0
        self._lock = threading.RLock()
        self._train_lock = threading.Lock()
        self.rank_seconds: dict[str, float] = {}  # each member's latest rank() time, for memo eval
        self._cache: tuple[int, Candidates, dict[str, list[Scored]]] | None = None

    # -- learning ---------------------------------------------------------------------------------
    def observe(self, launch: Launch) -> None:
        """Learn a launch: the mixer from the ranking it would have made, then every member, then the
        shared population prior."""
        with self._lock:
            cands = self._candidates(Context(now=self.last_ts))[0]
            self.mixer.update(cands, launch.app)
            for m in sorted(self.members.values(), key=lambda m: hasattr(m, "bind_peers")):
                m.observe(launch)  # members with peers last: they rank what the others just learned
            self.population.observe(launch, user=self.user)
            self.seen[launch.app] = self.seen.get(launch.app, 0) + 1
            if launch.app in self.recent:
                self.recent.remove(launch.app)
            self.recent.insert(0, launch.app)
            del self.recent[RECENT:]
            if launch.ts is not None:
                self.last_ts = launch.ts
            self.n += 1
            self._cache = None
            if self.n >= MIXER_MIN_LAUNCHES and self.n % SHARE_EVERY == 0:
                self.population.share_mixer(self.user, self.mixer.learned())

    def train_pending(self) -> bool:
        """Run the members' deferred training (the LSTM's); safe to call from a worker thread."""
        with self._train_lock:
            did = False
            for m in list(self.members.values()):
                did = m.train_pending() or did
            if did:
                with self._lock:
                    self._cache = None  # new weights: the next predict must ask the members again
            return did

    # -- prediction -------------------------------------------------------------------------------
    def _candidates(self, ctx: Context) -> tuple[Candidates, dict[str, list[Scored]]]:
        if self._cache is not None and self._cache[0] == self.n:
            return self._cache[1], self._cache[2]
        ranked = {}
        for name, m in self.members.items():
            t0 = time.perf_counter()
            ranked[name] = m.rank(ctx, MEMBER_K)
            self.rank_seconds[name] = time.perf_counter() - t0
        cands = self.mixer.features(ranked, self.recent[0] if self.recent else None, self.seen, self.recent)
        self._cache = (self.n, cands, ranked)
        return cands, ranked

    def predict_detailed(self, ctx: Context, k: int) -> tuple[list[Ranked], dict[str, list[Scored]]]:
        """The ensemble's top k and each member's own ranking (``MEMBER_K`` deep), for ``memo eval``."""
        with self._lock:
            cands, ranked = self._candidates(ctx)
            p = self.mixer.probabilities(cands)
            order = np.argsort(-p, kind="stable")[:k]
            out = [
                Ranked(cands.apps[i], float(p[i]),
                       {m: cands.scores[m].get(cands.apps[i], 0.0) for m in self.names})
                for i in order
            ]
            return out, ranked

    def predict(self, ctx: Context, k: int) -> list[Ranked]:
        """The k most likely next launches; probabilities are normalised over the candidates."""
        return self.predict_detailed(ctx, k)[0]

    # -- persistence ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Full state (members incl. LSTM weights, mixer); the shared Population is saved on its own."""
        with self._lock:
            return msgpack.packb({
                "format": _FORMAT,
                "names": self.names,
                "members": {n: m.get_state() for n, m in self.members.items()},
                "mixer": self.mixer.get_state(),
                "seen": self.seen, "recent": self.recent, "last_ts": self.last_ts, "n": self.n,
            })

    @classmethod
    def from_bytes(cls, data: bytes, population: Population | None = None,
                   user: Hashable = None) -> UserModel:
        state = msgpack.unpackb(data, strict_map_key=False)
        if state.get("format") != _FORMAT:
            raise ValueError(f"unsupported UserModel format {state.get('format')!r}")
        model = cls(state["names"], population, user)
        for n, m in model.members.items():
            m.set_state(state["members"][n])
        model.mixer.set_state(state["mixer"])
        for n in model.names:
            model.mixer.add_member(n)
        model.seen = dict(state["seen"])
        model.recent = list(state["recent"])
        model.last_ts = state["last_ts"]
        model.n = state["n"]
        return model

    def save(self, path: str | Path) -> None:
        """Checkpoint atomically (a crash leaves the old checkpoint or the new one)."""
        helpers.atomic_write(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path, population: Population | None = None) -> UserModel:
        return cls.from_bytes(Path(path).read_bytes(), population)
