"""The LSTM learns in train_pending only, and serves from a frozen copy."""

from __future__ import annotations

from inference.predictors import Context, Launch, Population
from inference.predictors.lstm import LSTMPredictor, time_features
from tests.inference.predictors.predictor_helpers import replay, top


def trained_on(seq: list[str], rounds: int = 30) -> LSTMPredictor:
    p = LSTMPredictor(Population())
    for i, a in enumerate(seq):
        p.observe(Launch(a, 1_700_000_000.0 + 60 * i))
        p.train_pending()
    for _ in range(rounds):  # extra rounds on the same data, as a worker thread would do over time
        p.trained_upto -= 8
        p.train_pending()
    return p


def test_rank_never_trains() -> None:
    p = LSTMPredictor(Population())
    replay(p, ["a", "b"] * 20)
    assert p.serving is None
    p.rank(Context(), 3)
    assert p.serving is None  # only train_pending trains
    assert p.train_pending() is True
    assert p.serving is not None
    assert p.train_pending() is False  # nothing new


def test_learns_strict_alternation() -> None:
    p = trained_on(["a", "b"] * 60)
    assert top(p) == ["a"]
    p.observe(Launch("a", 1_700_009_000.0))
    assert top(p) == ["b"]


def test_time_features_are_zero_without_timestamps() -> None:
    assert time_features(None, None) == [0.0] * 6
    f = time_features(1_700_000_000.0, 1_699_999_000.0)
    assert f[-1] == 1.0 and f[4] > 0


def test_state_round_trip_predicts_identically() -> None:
    p = trained_on(list("abcabd") * 15, rounds=2)
    q = LSTMPredictor(Population())
    q.set_state(p.get_state())
    assert p.rank(Context(), 5) == q.rank(Context(), 5)
    p.observe(Launch("a"))
    q.observe(Launch("a"))
    assert p.rank(Context(), 5) == q.rank(Context(), 5)


def test_vocabulary_grows_past_the_first_capacity() -> None:
    apps = [f"app{i}" for i in range(70)]
    p = trained_on(apps * 3, rounds=0)
    assert p.serving is not None and p.serving.emb.num_embeddings >= 71
    assert len(p.rank(Context(), 5)) == 5


def test_each_launch_nudges_the_serving_net_between_rounds() -> None:
    p = trained_on(["a", "b"] * 60, rounds=0)
    p.trained_upto = p.n  # no round due for the next few launches
    n, b = p.n, p.index["b"]
    before = float(p._softmax_at(p.serving, n)[2][b])
    p.observe(Launch("b", 1_700_009_000.0))  # an unusual successor
    assert p.train_pending() is True and p.trained_upto == n  # the per-launch step, not a round
    assert float(p._softmax_at(p.serving, n)[2][b]) > before
    assert p.train_pending() is False  # nothing new
