"""Tiny sequences and a prequential replay shared by the predictor tests."""

from __future__ import annotations

from collections.abc import Iterable

from inference.predictors import Context, Launch, Predictor


def replay(pred: Predictor, apps: Iterable[str]) -> None:
    for a in apps:
        pred.observe(Launch(a))


def top(pred: Predictor, k: int = 1) -> list[str]:
    return [s.app for s in pred.rank(Context(), k)]


def accuracy(pred: Predictor, apps: list[str], skip: int = 0) -> float:
    """Top-1 accuracy, predict-then-observe, counting from launch ``skip`` on."""
    hits = 0
    for i, a in enumerate(apps):
        if i >= skip:
            hits += top(pred)[:1] == [a]
        pred.observe(Launch(a))
    return hits / max(1, len(apps) - skip)
