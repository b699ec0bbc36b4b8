"""`memo eval`: input checks, the --json shape, the plot, and accuracy on real traces."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest

from inference import evaluate
from memo.cli import main

METRICS = {"top1", "top3", "top5", "mrr", "cold_top5", "rare_top5", "new_top5", "latency_ms"}
CLASSICAL = ("markov", "ppm")


def write_trace(path: Path, rows: list[tuple[str, str, str]], header: str = "user,ts,app") -> Path:
    path.write_text(header + "\n" + "".join(f"{u},{t},{a}\n" for u, t, a in rows))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    rows = [("u1", "", a) for a in "abcabcabcabcabcabcab"] + [
        ("u2", f"2024-01-01T10:{i:02d}:00", a) for i, a in enumerate("xyxyxyxyxyxy")]
    return write_trace(tmp_path / "t.csv", rows)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["eval", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_is_one_object_with_every_model(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--input", str(tiny), "--json", "--models", "mfu", "markov", "ppm",
                     "--jobs", "1", "--no-progress")
    assert rc == 0
    result = json.loads(out)  # exactly one JSON document on stdout
    assert set(result["models"]) == {"mfu", "markov", "ppm", "ensemble"}
    for met in result["models"].values():
        assert set(met) == METRICS
        assert all(0 <= met[m] <= 1 for m in METRICS - {"latency_ms"})
        assert met["latency_ms"] >= 0
    assert result["users"] == 2 and result["launches"] == 32
    assert result["models"]["markov"]["top1"] > 0.8  # both users are cycles


def test_table_plot_and_user_limit(tiny: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "out.png"
    rc, out, _ = run(capsys, "--input", str(tiny), "--plot", str(png), "--users", "1",
                     "--models", "mru,markov", "--jobs", "1")
    assert rc == 0
    assert "ensemble" in out and "markov" in out and "1 users" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("app,user,ts\nu,,a\n", "header must be 'user,ts,app'"),
        ("", "header must be 'user,ts,app'"),
        ("user,ts,app\n", "no rows"),
        ("user,ts,app\nu1,,a\nu1,,\n", ":3: user and app must not be empty"),
        ("user,ts,app\nu1,,a,extra\n", ":2: expected 3 fields"),
        ("user,ts,app\nu1,yesterday,a\n", ":2: ts 'yesterday' is neither ISO-8601 nor Unix seconds"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                    message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    rc, out, err = run(capsys, "--input", str(bad), "--json")
    assert rc == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_missing_file_and_unknown_models(tiny: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "--input", str(tmp_path / "nope.csv"))
    assert rc == 2 and "no such file" in err
    rc, _, err = run(capsys, "--input", str(tiny), "--models", "nonsense")
    assert rc == 2 and "none of the models" in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_timestamps_parse_and_nul_padding_is_dropped(tmp_path: Path) -> None:
    rows = [("u", "2024-01-01T10:00:00", "a"), ("u", "\x00\x002024-01-01T10:01:00", "b"),
            ("u", "1704103320", "c")]
    trace = write_trace(tmp_path / "t.csv", rows)
    launches = evaluate.load_trace(trace)["u"]
    assert [a for a, _ in launches] == ["a", "b", "c"]
    assert launches[1][1] - launches[0][1] == 60 and launches[2][1] == 1704103320.0


def _sample(shared_data: Path, name: str, users: int, rows: int, out: Path) -> Path:
    """The first ``rows`` launches of the first ``users`` users of a shared trace."""
    kept: dict[str, list[list[str]]] = {}
    with (shared_data / name).open(newline="") as f:
        for row in csv.DictReader(f):
            seq = kept.setdefault(row["user"], []) if len(kept) < users or row["user"] in kept else None
            if seq is not None and len(seq) < rows:
                seq.append([row["user"], row["ts"].replace("\0", ""), row["app"]])
    return write_trace(out, [tuple(r) for seq in kept.values() for r in seq])  # type: ignore[misc]


def test_ensemble_at_least_best_classical_on_android_sample(shared_data: Path, tmp_path: Path) -> None:
    sample = _sample(shared_data, "android6.csv", users=3, rows=600, out=tmp_path / "a.csv")
    result = evaluate.evaluate(evaluate.load_trace(sample), ["mfu", "mru", "markov", "ppm", "lstm"],
                               progress=False)["models"]
    best1 = max(result[m]["top1"] for m in CLASSICAL)
    best5 = max(result[m]["top5"] for m in CLASSICAL)
    assert result["ensemble"]["top1"] >= best1
    assert result["ensemble"]["top5"] >= best5


# -- the full traces: the targets of issue 3 (make test-slow) -------------------------------------
REFERENCE = {"sea-dev.csv": (0.763, 0.887), "android6.csv": (0.390, 0.720)}
MEMBERS = ["mfu", "mru", "markov", "ppm", "lstm"]


@functools.cache
def _full(path: Path) -> dict:
    return evaluate.evaluate(evaluate.load_trace(path), MEMBERS, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sea-dev.csv", "purdue.csv", "android6.csv"])
def test_full_trace_ensemble_beats_best_classical(shared_data: Path, name: str) -> None:
    result = _full(shared_data / name)
    models = result["models"]
    for metric in ("top1", "top5"):
        assert models["ensemble"][metric] > max(models[m][metric] for m in CLASSICAL), metric
    if name in REFERENCE:
        top1, top5 = REFERENCE[name]
        assert models["ensemble"]["top1"] > top1 and models["ensemble"]["top5"] > top5
    if name == "sea-dev.csv":
        assert result["wall_s"] < 600  # the whole trace, LSTM included, within 10 minutes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sea-dev.csv", "purdue.csv", "android6.csv"])
def test_full_trace_lstm_beats_markov(shared_data: Path, name: str) -> None:
    models = _full(shared_data / name)["models"]
    assert models["lstm"]["top1"] > models["markov"]["top1"]


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch) -> None:
    """A bar's carriage-return frames piled up in logs (23 KB in one `memo eval` log): plain lines there."""
    import sys

    from inference import evaluate

    out = open(tmp_path / "err.log", "w")  # noqa: SIM115
    monkeypatch.setattr(sys, "stderr", out)
    bar = evaluate._progress_bar(100, True)
    for _ in range(100):
        bar.update(1)
    bar.close()
    out.close()
    text = (tmp_path / "err.log").read_text()
    assert "\r" not in text and "100/100 launches" in text


def test_each_user_starts_from_the_other_users_mixers_never_their_own() -> None:
    trace = {"u1": [("a", None), ("b", None)], "u2": [("a", None)]}
    shared = {"mfu.lp": (5.0, 1e9)}  # a huge AdaGrad sum: the first steps barely move it
    def start_of(mixers: dict) -> float:
        job = evaluate._Job(trace, ["mfu", "markov"], True, 1.0, mixers=mixers)
        return evaluate.replay_user("u1", job)[1]["mfu.lp"][0]
    assert start_of({"u2": shared}) == pytest.approx(5.0, abs=0.01)
    assert start_of({"u1": shared}) == pytest.approx(start_of({}), abs=1e-9) != pytest.approx(5.0, abs=1)


def test_rare_and_new_apps_are_scored_apart() -> None:
    t = evaluate.Tally()
    t.add(["a", "b"], "a", False, 0.0, seen=0)  # never launched before: new, a hit
    t.add(["a", "b"], "c", False, 0.0, seen=0)  # new, a miss
    t.add(["a", "b"], "b", False, 0.0, seen=3)  # rare (1-4 times before), a hit
    t.add(["a", "b"], "a", False, 0.0, seen=9)  # common: neither slice
    m = t.metrics()
    assert (t.new_n, t.rare_n) == (2, 1) and m["new_top5"] == 0.5 and m["rare_top5"] == 1.0
    # a user without rare launches does not pull the macro-average down
    trace = {"u1": [("x", None)] * 3 + [("y", None)], "u2": [("z", None)]}
    res = evaluate.evaluate(trace, ["mfu"], jobs=1, progress=False)
    assert res["per_user"]["u1"]["mfu"]["rare_top5"] == 1.0  # x, launched twice before, ranks first
    assert res["models"]["mfu"]["rare_top5"] == 1.0
