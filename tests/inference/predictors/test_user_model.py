"""UserModel: the API the service codes against — ranking, cold start, persistence, threads."""

from __future__ import annotations

import threading
import time

import pytest

from inference.predictors import DEFAULT_MODELS, Context, Launch, Population, Ranked, UserModel, registry
from inference.predictors.base import Predictor, Scored
from inference.predictors.population import MIXER_MIN_LAUNCHES

CLASSICAL = ["mfu", "mru", "markov", "ppm"]


def fed(models: list[str], apps: list[str], population: Population | None = None, train: bool = False
        ) -> UserModel:
    m = UserModel(models, population)
    for i, a in enumerate(apps):
        m.observe(Launch(a, 1_700_000_000.0 + 30 * i))
        if train:
            m.train_pending()
    return m


def test_default_models_follow_config() -> None:
    """The LLM member is opt-in (about 1 GB while its engine runs, no measured gain yet)."""
    assert DEFAULT_MODELS == ("mfu", "mru", "markov", "ppm", "lstm")


def test_predict_is_normalised_and_explains_each_member() -> None:
    m = fed(CLASSICAL, ["a", "b", "c"] * 10)
    out = m.predict(Context(), 3)
    assert all(isinstance(r, Ranked) for r in out)
    assert out[0].app == "a"
    assert [r.probability for r in out] == sorted((r.probability for r in out), reverse=True)
    full = m.predict(Context(), 100)
    assert sum(r.probability for r in full) == pytest.approx(1.0)
    assert set(out[0].models) == set(CLASSICAL)
    assert out[0].models["markov"] > 0.5


def test_unknown_model_names_are_skipped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    m = UserModel(["markov", "no-such-model", "no-such-model"])
    UserModel(["no-such-model", "ppm"])
    assert m.names == ["markov"]
    assert sum("no-such-model" in r.message for r in caplog.records) <= 1
    assert m.predict(Context(), 3) == []  # nothing known yet, no population: an empty answer, no crash


def test_new_user_starts_from_the_population_prior() -> None:
    pop = Population.from_sequences([["vim", "make", "vim", "make", "ls"] * 20] * 3)
    out = UserModel(CLASSICAL, pop).predict(Context(), 3)
    assert {r.app for r in out} == {"vim", "make", "ls"}


def test_new_app_gets_a_sensible_score() -> None:
    m = fed(CLASSICAL, ["a", "b"] * 30 + ["fresh"])
    scores = {r.app: r.probability for r in m.predict(Context(), 10)}
    assert scores.get("fresh", 0) > 1e-4  # after strict alternation "a" is likelier, but not by 1e9


def test_a_member_added_at_run_time_joins_the_ensemble() -> None:
    class Constant(Predictor):
        name = "constant"

        def observe(self, launch: Launch) -> None: ...

        def rank(self, ctx: Context, k: int) -> list[Scored]:
            return [Scored("z", 0.9)]

        def get_state(self) -> dict:
            return {}

        def set_state(self, state: dict) -> None: ...

    registry.register("constant", lambda pop: Constant())
    m = fed(["markov", "constant"], ["a", "b"] * 5 + ["z"] * 30)
    assert m.predict(Context(), 1)[0].app == "z"
    assert m.predict(Context(), 1)[0].models["constant"] == 0.9


def test_round_trip_predicts_identically(tmp_path) -> None:
    seq = list("abcabdabcabe") * 8
    m = fed(list(DEFAULT_MODELS), seq, train=True)
    pop = m.population
    clone = UserModel.from_bytes(m.to_bytes(), Population.from_bytes(pop.to_bytes()))
    assert clone.predict(Context(), 5) == m.predict(Context(), 5)
    m.save(tmp_path / "u.model")
    assert UserModel.load(tmp_path / "u.model", pop).predict(Context(), 5) == m.predict(Context(), 5)
    assert [p.name for p in tmp_path.iterdir()] == ["u.model"]  # no temp file left behind
    for a in "abc":  # and they keep learning alike (each feeding its own copy of the population)
        for x in (m, clone):
            x.observe(Launch(a))
    assert clone.predict(Context(), 5) == m.predict(Context(), 5)


def test_predict_stays_available_while_train_pending_runs() -> None:
    m = fed(list(DEFAULT_MODELS), list("abcd") * 50)
    errors: list[BaseException] = []
    stop = threading.Event()

    def trainer() -> None:
        try:
            while not stop.is_set():
                m.members["lstm"].trained_upto = 0  # type: ignore[attr-defined]  # always work to do
                m.train_pending()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=trainer)
    t.start()
    latencies = []
    try:
        deadline = time.monotonic() + 3
        i = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            out = m.predict(Context(), 5)
            latencies.append(time.perf_counter() - t0)
            assert len(out) == 4 and abs(sum(r.probability for r in m.predict(Context(), 50)) - 1) < 1e-6
            m.observe(Launch("abcd"[i % 4]))
            i += 1
    finally:
        stop.set()
        t.join()
    assert not errors
    assert sorted(latencies)[len(latencies) // 2] < 0.05  # predict does not wait for a training round


def test_mixer_learns_to_trust_the_member_that_is_right() -> None:
    # strict alternation with a twist MFU cannot see: Markov should gain weight over MFU
    m = fed(["mfu", "markov"], ["a", "b", "a", "c"] * 60)
    w = m.mixer.weights()
    assert set(w) == {"mfu", "markov"} and set(w["markov"]) == {"lp", "rr", "top", "p"}
    assert m.predict(Context(), 1)[0].app == "a"  # the sequence ended "... a c": "a" follows


def test_the_prior_shows_each_user_their_own_apps_and_only_what_enough_users_share() -> None:
    pop = Population(min_users=2)
    for _ in range(3):
        pop.observe(Launch("mine"), user="a")
    a, b = pop.view("a"), pop.view("b")
    assert [x for x, _ in a.top(5)] == ["mine"] and a.prob("mine") > a.prob("never-seen")
    assert b.top(5) == [] and pop.top(5) == [] and b.prob("mine") == b.prob("never-seen"), "a's alone"
    pop.observe(Launch("mine"), user="b")
    assert [x for x, _ in b.top(5)] == [x for x, _ in pop.top(5)] == ["mine"], "two users: everyone's"
    assert b.prob("mine") > b.prob("never-seen")
    again = Population.from_bytes(pop.to_bytes(), min_users=2)
    assert again.view("b").prob("mine") == b.prob("mine") and again.view("a").top(3) == a.top(3)
    with pytest.raises(ValueError):
        Population.from_bytes(pop.to_bytes(), min_users=3)  # another threshold: relearnt, never guessed


def test_one_user_alone_sees_the_prior_as_if_there_were_no_threshold() -> None:
    apps = ["vim", "git", "vim", "make", "vim", "git"]
    alone, open_ = Population(min_users=3), Population(min_users=1)
    for app in apps:
        alone.observe(Launch(app), user=1000)
        open_.observe(Launch(app), user=1000)
    mine, everyone = alone.view(1000), open_.view(1000)
    assert mine.top(5) == everyone.top(5) and mine.prob("make") == everyone.prob("make")


def test_a_new_user_s_mixer_starts_from_what_the_other_users_mixers_learned() -> None:
    pop = Population(min_users=2)
    cycle = ["a", "b", "a", "c"] * 40  # Markov is right, MFU is not
    first = UserModel(["mfu", "markov"], pop, user=1)
    for i, app in enumerate(cycle):
        first.observe(Launch(app, 1_700_000_000.0 + 30 * i))
    assert first.n >= MIXER_MIN_LAUNCHES and pop.mixer_start(2) is None, "one user's mixer is not shared"
    second = UserModel(["mfu", "markov"], pop, user=2)
    for i, app in enumerate(cycle):
        second.observe(Launch(app, 1_700_000_000.0 + 30 * i))
    start = pop.mixer_start(3)
    assert start is not None and start["markov.lp"][0] > start["mfu.lp"][0]
    assert pop.mixer_start(1) is None, "a user's own mixer is left out: one other is too few to share"
    third = UserModel(["mfu", "markov", "mru"], pop, user=3)
    learned = third.mixer.learned()
    assert learned["markov.lp"][0] == pytest.approx(start["markov.lp"][0])
    assert learned["mru.lp"] == (0.0, 1e-2), "a member nobody has shared keeps its own start"
    fresh = UserModel(["mfu", "markov"], Population(), user=3)
    assert fresh.mixer.learned()["markov.lp"] == (1.0, 1e-2), "no population: the fixed start (Markov)"
    again = Population.from_bytes(pop.to_bytes(), min_users=2)
    assert again.mixer_start(3) == start


def test_a_damaged_shared_mixer_in_a_snapshot_is_skipped() -> None:
    import msgpack

    pop = Population(min_users=1)
    pop.share_mixer(1, {"ppm.lp": (0.5, 2.0)})
    state = msgpack.unpackb(pop.to_bytes(), strict_map_key=False)
    state["mixers"].append([2, {"ppm.lp": "junk"}])
    state["mixers"].append([3, ["not", "a", "map"]])
    state["mixers"].append([4, {"ppm.lp": [float("nan"), 1.0]}])
    again = Population.from_bytes(msgpack.packb(state))
    assert again.mixer_start(9) == {"ppm.lp": (0.5, 2.0)}
