"""`memo eval`: replay a `user,ts,app` trace online through the service's own UserModel and score it.

Prequential, per user: predict, then observe, then let the model run whatever background training it
has due (inline here, a worker thread in the service) — the very code path the service uses. Each
user's cold start comes from a population prior built from the *other* users' traces (what a service
already serving other users would know), and so does the start of the user's mixer: the other users'
mixers, learned in a first pass from each one's own first MIXER_PASS launches. The user's own launches
join the prior as they happen. Metrics are macro-averaged over users. Users are spread over processes
(one per core) because each is independent.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  memo eval --input ../shared/data/android6.csv                  # table of every predictor's accuracy
  memo eval --input ../shared/data/sea-dev.csv --json > r.json   # one JSON object on stdout
  memo eval --input trace.csv --plot accuracy.png                # and a bar chart
  memo eval --input trace.csv --models markov ppm --users 5      # a subset of models and users
  memo eval --input trace.csv --head 0.7                         # only each user's first 70% (tuning)
  memo eval --input ../shared/data/android6.csv --models mfu mru markov ppm lstm llm   # with the LLM
"""

DEPTH = 20  # rankings are scored this deep: MRR counts a hit below rank 20 as 0
COLD = 100  # cold start: each user's first 100 launches
MIXER_PASS = 1000  # launches of each user the first pass learns a mixer from (the population's start)
RARE = 5  # a rare app: launched by this user fewer than 5 times before (at least once)
METRICS = ("top1", "top3", "top5", "mrr", "cold_top5", "rare_top5", "new_top5", "latency_ms")
# Slices some users have no launch in: averaged over the users that have one.
SLICES = {"cold_top5": "cold_n", "rare_top5": "rare_n", "new_top5": "new_n"}
ENSEMBLE = "ensemble"


class EvalError(Exception):
    """A problem with the input that the user can fix; printed without a traceback."""


# -- input ----------------------------------------------------------------------------------------
def _parse_ts(value: str, where: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise EvalError(f"{where}: ts {value!r} is neither ISO-8601 nor Unix seconds") from None


def load_trace(path: str | Path) -> dict[str, list[tuple[str, float | None]]]:
    """Per user, in file order, (app, ts). Raises EvalError naming the file and line of a problem."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"no such file: {path}")
    users: dict[str, list[tuple[str, float | None]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["user", "ts", "app"]:
            raise EvalError(f"{path}:1: header must be 'user,ts,app', got {','.join(header or [])!r}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row:
                continue
            if len(row) != 3:
                raise EvalError(f"{where}: expected 3 fields (user,ts,app), got {len(row)}")
            if any("\x00" in x for x in row):  # seen in android6.csv: a logger's NUL padding
                print(f"memo eval: {where}: ignored NUL bytes in the row", file=sys.stderr)
                row = [x.replace("\x00", "") for x in row]
            user, ts, app = (x.strip() for x in row)
            if not user or not app:
                raise EvalError(f"{where}: user and app must not be empty")
            users.setdefault(user, []).append((app, _parse_ts(ts, where)))
    if not users:
        raise EvalError(f"{path}: no rows after the header")
    return users


# -- one user's replay -----------------------------------------------------------------------------
@dataclass
class Tally:
    """Sums for one model over one user's launches."""

    n: int = 0
    hit1: int = 0
    hit3: int = 0
    hit5: int = 0
    rr: float = 0.0
    cold_n: int = 0
    cold_hit5: int = 0
    rare_n: int = 0
    rare_hit5: int = 0
    new_n: int = 0
    new_hit5: int = 0
    seconds: float = 0.0

    def add(self, ranking: list[str], truth: str, cold: bool, seconds: float, seen: int = -1) -> None:
        """One launch: ``seen`` is how often this user launched ``truth`` before (-1: not told)."""
        r = ranking.index(truth) if truth in ranking else None
        self.n += 1
        self.seconds += seconds
        if r is not None:
            self.hit1 += r < 1
            self.hit3 += r < 3
            self.hit5 += r < 5
            self.rr += 1.0 / (r + 1)
        hit5 = r is not None and r < 5
        if cold:
            self.cold_n += 1
            self.cold_hit5 += hit5
        if seen == 0:
            self.new_n += 1
            self.new_hit5 += hit5
        elif 0 < seen < RARE:
            self.rare_n += 1
            self.rare_hit5 += hit5

    def metrics(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"top1": self.hit1 / n, "top3": self.hit3 / n, "top5": self.hit5 / n, "mrr": self.rr / n,
                "cold_top5": self.cold_hit5 / max(self.cold_n, 1),
                "rare_top5": self.rare_hit5 / max(self.rare_n, 1),
                "new_top5": self.new_hit5 / max(self.new_n, 1),
                "latency_ms": 1e3 * self.seconds / n}


@dataclass
class _Job:
    trace: dict[str, list[tuple[str, float | None]]]
    models: list[str]
    population: bool
    head: float
    progress: Any = None  # a shared multiprocessing counter of replayed launches
    limit: int | None = None  # replay at most this many launches of each user
    mixers: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # user -> learned


_JOB: _Job | None = None  # set before the worker processes fork, so the trace is not pickled per user


def _length(job: _Job, user: str) -> int:
    n = len(job.trace[user])
    n = max(1, math.ceil(n * job.head)) if job.head < 1 else n
    return min(n, job.limit) if job.limit is not None else n


def replay_user(user: str, job: _Job) -> tuple[dict[str, Tally], dict[str, tuple[float, float]]]:
    """Predict-then-observe over one user's launches: a Tally per member and for the ensemble, and
    what the user's mixer learned."""
    from inference.predictors import Context, Launch, Population, UserModel

    others = (seq for u, seq in job.trace.items() if u != user) if job.population else ()
    pop = Population.from_sequences([a for a, _ in seq] for seq in others)
    for u, learned in job.mixers.items():
        if u != user:
            pop.share_mixer(u, learned)
    model = UserModel(job.models, pop)
    launches = job.trace[user]
    n = _length(job, user)
    tallies = {name: Tally() for name in [*model.names, ENSEMBLE]}
    prev_ts: float | None = None
    unreported = 0
    seen: dict[str, int] = {}
    for i, (app, ts) in enumerate(launches[:n]):
        ctx = Context(now=prev_ts)  # predicting right after the previous launch: no peeking at ts
        t0 = time.perf_counter()
        ranked, members = model.predict_detailed(ctx, DEPTH)
        dt = time.perf_counter() - t0
        cold = i < COLD
        before = seen.get(app, 0)
        tallies[ENSEMBLE].add([r.app for r in ranked], app, cold, dt, before)
        for name, lst in members.items():
            tallies[name].add([s.app for s in lst], app, cold, model.rank_seconds.get(name, 0.0), before)
        seen[app] = before + 1
        model.observe(Launch(app, ts))
        model.train_pending()
        prev_ts = ts
        unreported += 1
        if job.progress is not None and unreported >= 200:
            with job.progress.get_lock():
                job.progress.value += unreported
            unreported = 0
    if job.progress is not None and unreported:
        with job.progress.get_lock():
            job.progress.value += unreported
    return tallies, model.mixer.learned()


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core beats torch's intra-op threads on tiny tensors


def _run_one(user: str) -> tuple[str, tuple[dict[str, Tally], dict[str, tuple[float, float]]]]:
    assert _JOB is not None
    return user, replay_user(user, _JOB)


def _replay_all(job: _Job, users: list[str], jobs: int, bar: Any
                ) -> dict[str, tuple[dict[str, Tally], dict[str, tuple[float, float]]]]:
    """replay_user for every user, one process per core; the bar counts launches."""
    global _JOB
    results: dict[str, tuple[dict[str, Tally], dict[str, tuple[float, float]]]] = {}
    if jobs <= 1 or len(users) == 1:
        _worker_init()
        for u in users:
            results[u] = replay_user(u, job)
            bar.update(_length(job, u))
        return results
    ctx = mp.get_context("fork")
    job.progress = ctx.Value("q", 0)
    start = bar.n
    _JOB = job
    try:
        with ProcessPoolExecutor(min(jobs, len(users)), mp_context=ctx, initializer=_worker_init) as pool:
            pending: set[Future] = {pool.submit(_run_one, u) for u in users}
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    u, res = fut.result()
                    results[u] = res
                bar.update(start + job.progress.value - bar.n)
    finally:
        _JOB = None
    return results


def evaluate(trace: dict[str, list[tuple[str, float | None]]], models: list[str], *, jobs: int = 0,
             population: bool = True, head: float = 1.0, progress: bool = True) -> dict[str, Any]:
    """Replay every user and macro-average their metrics: {"models": {name: metrics}, ...}.

    With the population on and more than one user, a first pass learns each user's mixer from their
    own first MIXER_PASS launches alone (no prior: nothing of anyone else leaks into it), and each user
    of the scored pass starts from the other users' mixers, as a new user of a service would."""
    jobs = jobs or os.cpu_count() or 1
    if "llm" in models:  # start the configured LLM backend, synchronous (one call per launch, inline)
        from inference.llm import runtime

        jobs = runtime.prepare_eval(jobs)
    users = sorted(trace, key=lambda u: -len(trace[u]))  # longest first: better balance across processes
    scored = _Job(trace, models, population, head)
    # The first pass leaves the LLM out (its weights start at 0, as for any member that joins late).
    learn = (_Job(trace, [m for m in models if m != "llm"], False, head, limit=MIXER_PASS)
             if population and len(users) > 1 else None)
    total = sum(_length(scored, u) + (_length(learn, u) if learn else 0) for u in users)
    t0 = time.perf_counter()
    bar = _progress_bar(total, progress)
    if learn is not None:
        scored.mixers = {u: res[1] for u, res in _replay_all(learn, users, jobs, bar).items()}
    results = {u: res[0] for u, res in _replay_all(scored, users, jobs, bar).items()}
    bar.close()
    names = list(next(iter(results.values())).keys())
    def mean(name: str, m: str) -> float:
        had = [u for u in users if m not in SLICES or getattr(results[u][name], SLICES[m]) > 0]
        return sum(results[u][name].metrics()[m] for u in had) / max(len(had), 1)

    macro = {name: {m: mean(name, m) for m in METRICS} for name in names}
    return {
        "models": macro,
        "users": len(users),
        "launches": sum(_length(scored, u) for u in users),
        "wall_s": round(time.perf_counter() - t0, 2),
        "per_user": {u: {name: results[u][name].metrics() for name in names} for u in users},
    }


class _ProgressLines:
    """Progress as a plain line every `every_s` seconds: for a log file or a pipe, where a bar's
    carriage-return frames pile up (23 KB of them in one `memo eval` log)."""

    def __init__(self, total: int, every_s: float = 30.0) -> None:
        self.total, self.n, self.every_s = total, 0, every_s
        self._t0 = self._last = time.monotonic()

    def update(self, k: int) -> None:
        self.n += k
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._say()

    def _say(self) -> None:
        print(f"memo eval: {self.n}/{self.total} launches ({100 * self.n / max(1, self.total):.0f} %), "
              f"{time.monotonic() - self._t0:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._say()


def _progress_bar(total: int, enabled: bool) -> Any:
    """A bar on a terminal, plain lines elsewhere, nothing when disabled."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return _ProgressLines(total)
    return tqdm(total=total, unit="launch", desc="memo eval", file=sys.stderr, disable=not enabled,
                smoothing=0.1, dynamic_ncols=True)


# -- output ---------------------------------------------------------------------------------------
def render_table(result: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    heads = {"cold_top5": "cold@5", "rare_top5": "rare@5", "new_top5": "new@5", "latency_ms": "ms"}
    for m in METRICS:
        table.add_column(heads.get(m, m), justify="right")
    for name, met in result["models"].items():
        cells = [f"{100 * met[m]:.1f}%" if m not in ("mrr", "latency_ms") else f"{met[m]:.3f}"
                 for m in METRICS]
        table.add_row(name, *cells, style="bold" if name == ENSEMBLE else None)
    Console().print(table)
    print(f"{result['users']} users, {result['launches']} launches, {result['wall_s']:.1f} s; "
          f"macro-averaged over users; MRR over the top {DEPTH}; cold = each user's first {COLD} launches, "
          f"rare = apps the user launched 1-{RARE - 1} times before, new = never before (each over the "
          "users that have such launches)")


def write_plot(result: dict[str, Any], path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["models"])
    shown = ("top1", "top3", "top5", "mrr", "cold_top5")
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    width = 0.8 / len(shown)
    for j, m in enumerate(shown):
        xs = [i + (j - (len(shown) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [result["models"][n][m] for n in names], width, label=m)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction (macro-average over users)")
    ax.set_title(title)
    ax.legend(ncols=len(shown), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line ---------------------------------------------------------------------------------
def add_cli(parser: argparse.ArgumentParser) -> None:
    from inference.predictors import DEFAULT_MODELS

    parser.description = ("Replay a user,ts,app CSV online (predict, then learn) per user through the "
                          "service's predictors and print top-1/3/5, MRR, cold-start top-5 and latency.")
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--input", required=True, metavar="CSV", help="trace with header user,ts,app")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--plot", metavar="PNG", help="write a bar chart of the metrics")
    # The LLM scores one prompt per launch in one process (~20 min for android6): asked for, not default.
    default = [m for m in DEFAULT_MODELS if m != "llm"]
    parser.add_argument("--models", nargs="+", default=default, metavar="NAME",
                        help=f"ensemble members (default: {' '.join(default)}; add llm for the LLM)")
    parser.add_argument("--users", type=int, metavar="N", help="only the first N users of the file")
    parser.add_argument("--jobs", type=int, default=0, metavar="N", help="processes (default: one per core)")
    parser.add_argument("--head", type=float, default=1.0, metavar="FRACTION",
                        help="replay only this leading fraction of each user's launches (for tuning)")
    parser.add_argument("--no-population", action="store_true",
                        help="start every user from nothing instead of the other users' prior")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    try:
        if args.users is not None and args.users < 1:
            raise EvalError("--users must be at least 1")
        if not 0 < args.head <= 1:
            raise EvalError("--head must be in (0, 1]")
        models = [m for arg in args.models for m in arg.split(",") if m]
        trace = load_trace(args.input)
        if args.users:
            trace = dict(list(trace.items())[: args.users])
        from inference.predictors import registry

        if not registry.resolve(models):
            known = ", ".join(sorted(registry.known()))
            raise EvalError(f"none of the models {models} exists (known: {known})")
        result = evaluate(trace, models, jobs=args.jobs, population=not args.no_population, head=args.head,
                          progress=not args.no_progress)
    except EvalError as exc:
        print(f"memo eval: {exc}", file=sys.stderr)
        return 2
    result["input"] = str(args.input)
    title = f"memo eval {Path(args.input).name}"
    if args.plot:
        write_plot(result, args.plot, title)
    if args.json:
        print(json.dumps(result))
    else:
        render_table(result, title)
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
