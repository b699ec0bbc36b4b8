"""The ``llm`` ensemble member: an LLM scores the other members' candidates after each launch.

Off the hot path. ``observe`` (the service's observer thread, under the UserModel lock) gathers the
candidates — the other members' top 20 merged, plus the user's most frequent apps — builds the
prompt and, in the service, hands it to the process's scorer asynchronously: at most one call per
launch per user; a queued call is replaced by the next launch's, a late answer is dropped. ``rank`` only reads
the result cached for the current launch and returns nothing until it is there (the mixer then sees
a constant feature and leaves the other members to decide). ``train_pending`` reports a fresh result
so that the UserModel re-ranks; in ``memo eval`` (synchronous scorer) it makes the call inline, so a
replay sees the LLM's answer for every launch, deterministically. The mixer learns per user how much
to trust this member like any other.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from inference.llm import prompt as llm_prompt
from inference.llm import runtime
from inference.predictors.base import Context, Launch, Predictor, Scored, top_scored
from inference.predictors.population import Prior

CANDIDATES = len(llm_prompt.LABELS)  # 20: one single-token label each
FREQUENT = 4  # of them, at least this many are the user's most frequent apps
PEER_K = 20


class LLMPredictor(Predictor):
    name = "llm"

    def __init__(self, population: Prior | None = None) -> None:
        self.population = population
        self.history: deque[Launch] = deque(maxlen=llm_prompt.HISTORY)
        self.counts: Counter[str] = Counter()
        self.peers: list[Predictor] = []
        self.n = 0
        self._result: tuple[int, dict[str, float]] | None = None  # (launch count, app -> probability)
        self._pending: tuple[int, llm_prompt.Prompt] | None = None  # synchronous mode's next call
        self._fresh = False
        self._lock = threading.Lock()

    def bind_peers(self, peers: list[Predictor]) -> None:
        """The other members, whose rankings become the candidates (called by UserModel)."""
        self.peers = [p for p in peers if p is not self]

    # -- candidates and prompt --------------------------------------------------------------------
    def candidates(self, ctx: Context) -> list[str]:
        """The peers' rankings merged by best reciprocal rank, then frequent and recent apps; <= 20."""
        best: dict[str, float] = {}
        for peer in self.peers:
            for r, s in enumerate(peer.rank(ctx, PEER_K)):
                best[s.app] = max(best.get(s.app, 0.0), 1.0 / (r + 1) + 1e-3 * s.score)
        frequent = [a for a, _ in self.counts.most_common(FREQUENT)]
        ranked = [a for a, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))]
        out = [a for a in ranked if a not in frequent][: CANDIDATES - len(frequent)]
        out += frequent
        for x in reversed(self.history):
            if len(out) < CANDIDATES and x.app not in out:
                out.append(x.app)
        if self.population is not None and len(out) < CANDIDATES:  # cold start: what others launch
            for app, _ in self.population.top(CANDIDATES):
                if len(out) < CANDIDATES and app not in out:
                    out.append(app)
        return out

    # -- Predictor --------------------------------------------------------------------------------
    def observe(self, launch: Launch) -> None:
        self.history.append(launch)
        self.counts[launch.app] += 1
        self.n += 1
        scorer = runtime.current()
        if scorer is None or scorer.state != "ready":
            return
        p = llm_prompt.build(list(self.history), self.candidates(Context(now=launch.ts)))
        n = self.n
        if scorer.synchronous:
            self._pending = (n, p)
        else:
            scorer.submit(self, p.text, lambda top: self._deliver(n, p, top))

    def _deliver(self, n: int, p: llm_prompt.Prompt, top: dict[str, float] | None) -> None:
        if top is None:
            return
        probs = llm_prompt.decode(top, p)
        with self._lock:
            if n == self.n and probs:  # a launch came meanwhile: this answer is for a past state
                self._result = (n, probs)
                self._fresh = True

    def train_pending(self) -> bool:
        pending, self._pending = self._pending, None
        scorer = runtime.current()
        if pending is not None and scorer is not None:
            self._deliver(pending[0], pending[1], scorer.score(pending[1].text))
        with self._lock:
            fresh, self._fresh = self._fresh, False
        return fresh

    def rank(self, ctx: Context, k: int) -> list[Scored]:
        result = self._result
        if result is None or result[0] != self.n:
            return []
        return top_scored(result[1], k)

    def get_state(self) -> dict[str, Any]:
        # The cached answer is not state: it belongs to one launch and is recomputed after the next.
        return {"history": [[x.app, x.ts] for x in self.history], "counts": dict(self.counts), "n": self.n}

    def set_state(self, state: dict[str, Any]) -> None:
        self.history = deque((Launch(a, ts) for a, ts in state["history"]), maxlen=llm_prompt.HISTORY)
        self.counts = Counter(state["counts"])
        self.n = state["n"]
        self._result = None
