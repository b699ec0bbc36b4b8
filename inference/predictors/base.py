"""The one interface every predictor implements, and the records it sees.

Predictors are online and prequential: for each launch the caller first asks ``rank`` (predict),
then calls ``observe`` (learn). One instance serves one user; ``memo eval`` and the live service
drive the very same classes through ``inference.predictors.UserModel``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Launch:
    """A program start as a user perceives it (after launch segmentation)."""

    app: str
    ts: float | None = None  # Unix seconds; None when the trace has no times


@dataclass(frozen=True, slots=True)
class Context:
    """What a predictor may know at prediction time besides the launches it observed."""

    now: float | None = None  # Unix seconds; None when the trace has no times


@dataclass(frozen=True, slots=True)
class Scored:
    app: str
    score: float  # a probability-like score in [0, 1]; higher ranks first


class Predictor(ABC):
    """An online next-launch predictor for one user."""

    name: str = "base"

    @abstractmethod
    def observe(self, launch: Launch) -> None:
        """Learn from a launch that just happened (after ``rank`` was asked for it)."""

    @abstractmethod
    def rank(self, ctx: Context, k: int) -> list[Scored]:
        """The k most likely next launches, best first. Must be fast: it is on the request path."""

    def train_pending(self) -> bool:
        """Do deferred (background) learning; True if any was done. Most predictors learn in observe."""
        return False

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Everything learned, as plain msgpack-able values (str keys, lists, numbers, bytes)."""

    @abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned; ``rank`` then answers exactly as before."""


def top_scored(scores: dict[str, float], k: int) -> list[Scored]:
    """The k best of ``scores`` as Scored, best first; ties broken by name so that runs repeat."""
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [Scored(app, score) for app, score in best]
