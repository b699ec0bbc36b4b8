"""Predictors by name, so that config (``inference.models``) picks the ensemble's members.

Entries are ``module:Class`` strings imported on first use: torch loads only when the LSTM is wanted,
and a predictor added later (the LLM) joins by dropping a module here and naming it — or at run time
through ``register``. Unknown or unimportable names are skipped with one warning each, never a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterable

from inference.predictors.base import Predictor
from inference.predictors.population import Prior

log = logging.getLogger(__name__)

Factory = Callable[[Prior], Predictor]

_TARGETS: dict[str, str] = {
    "mfu": "inference.predictors.mfu:MFU",
    "mru": "inference.predictors.mru:MRU",
    "markov": "inference.predictors.markov:Markov",
    "ppm": "inference.predictors.ppm:PPM",
    "lstm": "inference.predictors.lstm:LSTMPredictor",
    "llm": "inference.predictors.llm:LLMPredictor",  # opt-in: vLLM in its own process (inference/llm)
}
_FACTORIES: dict[str, Factory] = {}
_warned: set[str] = set()


def register(name: str, factory: Factory) -> None:
    """Make ``factory(population)`` available as the ensemble member ``name``."""
    _FACTORIES[name] = factory


def available(name: str) -> bool:
    """Whether ``name`` can be built, without importing it."""
    if name in _FACTORIES:
        return True
    target = _TARGETS.get(name)
    return target is not None and importlib.util.find_spec(target.split(":")[0]) is not None


def factory(name: str) -> Factory | None:
    """The factory for ``name``, or None (warned once) when there is no such predictor."""
    if name in _FACTORIES:
        return _FACTORIES[name]
    target = _TARGETS.get(name)
    try:
        if target is None:
            raise LookupError(f"no predictor named {name!r} (known: {', '.join(sorted(known()))})")
        module, cls = target.split(":")
        _FACTORIES[name] = getattr(importlib.import_module(module), cls)
        return _FACTORIES[name]
    except (LookupError, ImportError, AttributeError) as exc:
        if name not in _warned:
            _warned.add(name)
            log.warning("predictor %r skipped: %s", name, exc)
        return None


def known() -> set[str]:
    return set(_TARGETS) | set(_FACTORIES)


def resolve(names: Iterable[str]) -> list[str]:
    """The names that can be built, in order, without duplicates; the rest warned about once."""
    out: list[str] = []
    for n in names:
        if n not in out and factory(n) is not None:
            out.append(n)
    return out
