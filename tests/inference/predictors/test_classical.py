"""MFU, MRU, Markov-1 and PPM on sequences whose right answer is obvious."""

from __future__ import annotations

import pytest

from inference.predictors import Context, Launch, Population
from inference.predictors.markov import Markov
from inference.predictors.mfu import MFU
from inference.predictors.mru import MRU
from inference.predictors.ppm import PPM
from tests.inference.predictors.predictor_helpers import accuracy, replay, top


@pytest.fixture
def pop() -> Population:
    return Population()


def test_mfu_ranks_by_count_and_probabilities_sum_below_one(pop: Population) -> None:
    p = MFU(pop)
    replay(p, ["a", "b", "a", "c", "a", "b"])
    ranked = p.rank(Context(), 3)
    assert [s.app for s in ranked] == ["a", "b", "c"]
    assert 0 < sum(s.score for s in ranked) <= 1.0 + 1e-9


def test_mru_most_recent_first_without_duplicates(pop: Population) -> None:
    p = MRU(pop)
    replay(p, ["a", "b", "c", "a"])
    assert top(p, 3) == ["a", "c", "b"]


def test_markov_learns_strict_alternation(pop: Population) -> None:
    assert accuracy(Markov(pop), ["a", "b"] * 20, skip=2) == 1.0


def test_markov_learns_a_cycle_of_three(pop: Population) -> None:
    assert accuracy(Markov(pop), ["a", "b", "c"] * 20, skip=3) == 1.0


def test_ppm_uses_long_contexts_that_markov_cannot(pop: Population) -> None:
    # after "x" comes "a" or "b" depending on what came before the "x": order 2 is needed
    seq = ["a", "x", "b", "x"] * 40
    assert accuracy(Markov(Population()), seq, skip=8) <= 0.8  # right after a/b, a coin toss after x
    assert accuracy(PPM(pop), seq, skip=8) == 1.0


def test_ppm_blends_to_frequency_in_an_unseen_context(pop: Population) -> None:
    p = PPM(pop)
    replay(p, ["a", "a", "a", "b", "new"])
    assert top(p, 2)[0] == "a"  # "new" was never followed by anything: back off to counts


@pytest.mark.parametrize("cls", [MFU, MRU, Markov, PPM])
def test_cold_start_uses_population_prior(cls: type) -> None:
    pop = Population.from_sequences([["vim", "make", "vim", "make", "ls"]])
    assert top(cls(pop), 1) == ["vim"] or top(cls(pop), 1) == ["make"]
    assert len(cls(pop).rank(Context(), 3)) == 3


@pytest.mark.parametrize("cls", [MFU, MRU, Markov, PPM])
def test_new_app_scores_above_zero_after_first_launch(cls: type, pop: Population) -> None:
    p = cls(pop)
    replay(p, ["a", "b"] * 10 + ["brand-new"])
    scores = {s.app: s.score for s in p.rank(Context(), 10)}
    assert scores.get("brand-new", 0) > 0


@pytest.mark.parametrize("cls", [MFU, MRU, Markov, PPM])
def test_state_round_trip(cls: type, pop: Population) -> None:
    p = cls(pop)
    replay(p, list("abcabcabdabc"))
    q = cls(pop)
    q.set_state(p.get_state())
    assert p.rank(Context(), 5) == q.rank(Context(), 5)
    p.observe(Launch("c"))
    q.observe(Launch("c"))
    assert p.rank(Context(), 5) == q.rank(Context(), 5)


def test_population_unknown_app_gets_a_small_nonzero_prior() -> None:
    pop = Population.from_sequences([["a", "b", "a"]])
    assert 0 < pop.prob("never-seen") < pop.prob("b") < pop.prob("a")
    assert Population.from_bytes(pop.to_bytes()).prob("a") == pop.prob("a")
