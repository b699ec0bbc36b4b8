"""The LSTM learns in train_pending only (in a worker process in the service), and serves from a frozen
copy with numpy."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from inference.predictors import Context, Launch, Population, lstm
from inference.predictors.lstm import LSTMPredictor, time_features
from tests.inference.predictors.predictor_helpers import replay, top


def trained_on(seq: list[str], rounds: int = 30) -> LSTMPredictor:
    p = LSTMPredictor(Population())
    for i, a in enumerate(seq):
        p.observe(Launch(a, 1_700_000_000.0 + 60 * i))
        p.train_pending()
    for _ in range(rounds):  # extra rounds on the same data, as a worker thread would do over time
        p.trained_upto, p.round_ts = p.trained_upto - 8, None
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
    assert p.serving is not None and p.serving.vocab >= 71
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


def round_times(times: list[float | None]) -> list[int]:
    """The launch numbers after which a round ran, for launches at ``times``."""
    p, out = LSTMPredictor(Population()), []
    for i, ts in enumerate(times):
        p.observe(Launch("abc"[i % 3], ts))
        before = p.trained_upto
        p.train_pending()
        if p.trained_upto != before:
            out.append(p.n)
    return out


def test_a_burst_of_launches_pays_for_one_round() -> None:
    """A round costs a worker start: at most one per ROUND_GAP_S of the user's time, the first at once."""
    gap = 10.0
    every = int(lstm.ROUND_GAP_S // gap)  # launches per ROUND_GAP_S
    rounds = round_times([1.7e9 + gap * i for i in range(lstm.FIRST_TRAIN + 2 * every + 1)])
    assert rounds == [lstm.FIRST_TRAIN, lstm.FIRST_TRAIN + every, lstm.FIRST_TRAIN + 2 * every]
    n = lstm.RETRAIN_EVERY
    spread = round_times([1.7e9 + lstm.ROUND_GAP_S * i for i in range(lstm.FIRST_TRAIN + 2 * n + 1)])
    assert spread == [lstm.FIRST_TRAIN, lstm.FIRST_TRAIN + n, lstm.FIRST_TRAIN + 2 * n]
    untimed = round_times([None] * (lstm.FIRST_TRAIN + 2 * n + 1))  # a trace without times: launches alone
    assert untimed == spread


def test_rounds_in_the_worker_process_learn_exactly_as_inline() -> None:
    """The service trains in a worker process (torch resident only there); same rounds, same net."""
    seq = list("abcabd") * 12
    inline = trained_on(seq, rounds=2)
    trainer = lstm.ProcessTrainer()
    old, lstm._trainer = lstm._trainer, trainer
    try:
        worked = trained_on(seq, rounds=2)
        assert trainer.started == 1 and trainer._proc is not None
        nice = os.getpriority(os.PRIO_PROCESS, trainer._proc.pid)
    finally:
        lstm._trainer = old
        trainer.close()
    assert nice == 19
    assert inline.rank(Context(), 5) == worked.rank(Context(), 5)
    assert all(np.array_equal(inline.serving.w[k], worked.serving.w[k]) for k in inline.serving.w)


def test_the_service_side_never_imports_torch() -> None:
    code = ("import sys; from inference.predictors import lstm, Context, Launch, Population; "
            "t = lstm.train_in_worker_process(); p = lstm.LSTMPredictor(Population()); "
            "[(p.observe(Launch(a, 1.7e9 + 60 * i)), p.train_pending()) for i, a in enumerate('ab' * 20)]; "
            "assert p.serving is not None and p.rank(Context(), 2); t.close(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_numpy_serving_matches_torchs_forward() -> None:
    import torch

    from inference.predictors import lstm_train

    p = trained_on(list("abcabd") * 8, rounds=1)
    net = lstm_train._Net(p.serving.vocab)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in p.serving.w.items()})
    net.eval()
    x = p.seq[-lstm.WINDOW:]
    t = p.tfeat[-lstm.WINDOW:]
    with torch.no_grad():
        want = torch.softmax(net(torch.tensor([x]), torch.tensor([t], dtype=torch.float32))[0, -1], 0).numpy()
    h, e = p.serving.features(x, t)
    assert np.allclose(p.serving.softmax(h, e, p.serving.vocab), want, atol=1e-5)
