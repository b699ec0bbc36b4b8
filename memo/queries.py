"""`memo predict`, `memo profile APP`, `memo explain APP`: the inference service's answers, readable.

Each is one GET (see memo.api); --json prints the service's answer as JSON for scripts.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from pydantic import BaseModel

from memo import config as memo_config
from memo.api import Api, default_uid

PREDICT_EXAMPLES = """\
examples:
  memo predict                     # your most likely next programs, with each model's score
  memo predict --uid 1000 -k 10    # another user's top 10
  memo predict --json              # GET /v1/predictions as it is
"""
PROFILE_EXAMPLES = """\
examples:
  memo profile /usr/bin/vim.basic  # the files and bytes vim reads at start (what gets prefetched)
  memo profile python3.11          # a basename is enough when it names one known program
  memo profile firefox --ranges    # every byte range, not just one line per file
"""
EXPLAIN_EXAMPLES = """\
examples:
  memo explain /usr/bin/git        # why git ranks where it does for you: each model's score and weight
  memo explain git --uid 1000      # ... for another user
"""


def _print_json(data: BaseModel) -> None:
    print(json.dumps(data.model_dump(mode="json"), indent=2))


def cmd_predict(args: argparse.Namespace) -> int:
    api = Api(memo_config.load())
    try:
        data = api.predictions(args.uid, args.k)
    finally:
        api.close()
    if args.json:
        _print_json(data)
        return 0
    from rich.console import Console
    from rich.table import Table

    preds = data.predictions
    if not preds:
        print(f"no predictions for uid {args.uid} yet: MEMO learns from this user's program launches "
              "(check `memo status`; `memo trace` shows what the collector sees)")
        return 0
    after = data.last_app or "(nothing yet)"
    t = Table(title=f"uid {data.uid}, after {after}", title_justify="left")
    for col in ("#", "app", "probability", "horizon", "profile", "models"):
        t.add_column(col, justify="right" if col in ("#", "probability", "horizon", "profile") else "left")
    for i, p in enumerate(preds, 1):
        models = " ".join(f"{k}={v:.2f}" for k, v in sorted(p.models.items(), key=lambda kv: -kv[1])[:5])
        t.add_row(str(i), p.app, f"{p.probability:.3f}", f"{p.horizon_s:.0f} s", _size(p.profile_bytes),
                  models)
    Console().print(t)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    api = Api(memo_config.load())
    try:
        app = api.resolve_app(args.app)
        prof = api.profile(app)
    finally:
        api.close()
    if prof is None:
        print(f"no launch profile for {app} yet")
        return 1
    if args.json:
        _print_json(prof)
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    files = len({r.path for r in prof.ranges})
    console.print(f"{app}: {_size(prof.bytes)} in {files} file{'s' * (files != 1)}, what it used in the "
                  f"first seconds of its last {min(prof.launches, 5)} of {prof.launches} launches",
                  highlight=False)
    if not prof.ranges:
        console.print(EMPTY_PROFILE, highlight=False)
        return 0
    t = Table()
    if args.ranges:
        for col in ("path", "offset", "length"):
            t.add_column(col, justify="left" if col == "path" else "right", overflow="fold")
        for r in prof.ranges:
            t.add_row(r.path, f"{r.offset:,}", _size(r.length))
    else:
        per_file: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in prof.ranges:
            per_file[r.path][0] += 1
            per_file[r.path][1] += r.length
        for col in ("path", "ranges", "bytes"):
            t.add_column(col, justify="left" if col == "path" else "right", overflow="fold")
        for path, (n, size) in sorted(per_file.items(), key=lambda kv: -kv[1][1]):
            t.add_row(path, str(n), _size(size))
    console.print(t)
    return 0


EMPTY_PROFILE = (
    "Its profile is empty: MEMO has seen it start but no file pages it used in its launch window (the first "
    "seconds after exec) that it could name. Usual reasons: every launch so far came before the collector "
    "was running, the program uses only files MEMO never prefetches (under /proc, /sys, /dev), or it exits "
    "at once (like `cat` of a small file). Run it again with `sudo make up` running; `sudo memo trace` "
    "shows what the collector sees.")


def _size(n: int) -> str:
    """Bytes as a person reads them (1.5 MiB, 12 KiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def cmd_explain(args: argparse.Namespace) -> int:
    api = Api(memo_config.load())
    try:
        app = api.resolve_app(args.app)
        data = api.explain(args.uid, app)
    finally:
        api.close()
    if args.json:
        _print_json(data)
        return 0
    from rich.console import Console
    from rich.table import Table

    rank = f"ranked #{data.rank}" if data.rank else "not ranked"
    console = Console()
    console.print(f"{app} for uid {data.uid}: {rank} (as `memo predict` ranks it now), probability "
                  f"{data.probability:.3f}", highlight=False)
    t = Table(title_justify="left", caption_justify="left", caption=EXPLAIN_LEGEND)
    for col in ("model", "its score", "its own rank", "trust in log-prob", "in prob", "in rank", "in first"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m in sorted(data.models, key=lambda m: -m.score):
        w = m.weights
        t.add_row(m.name, f"{m.score:.3f}", f"#{m.rank}" if m.rank else "-",
                  *(f"{w[k]:+.2f}" if k in w else "-" for k in ("lp", "p", "rr", "top")))
    console.print(t)
    return 0


EXPLAIN_LEGEND = (
    "its score: the model's own probability that this program is launched next; its own rank: where that "
    "model alone would put it. The trust columns are the weights the mixer has learnt for you on each of the "
    "model's signals: its log-probability, its probability, 1/its rank, and a bonus when it ranks the "
    "program first (0 = ignored, higher = followed). The final probability is the mixer's softmax over those "
    "signals.")


def add_predict_cli(p: argparse.ArgumentParser) -> None:
    p.epilog = PREDICT_EXAMPLES
    p.description = "A user's most likely next programs (GET /v1/predictions)."
    p.add_argument("--uid", type=int, default=default_uid(), help="the user (default: you, also under sudo)")
    p.add_argument("-k", type=int, default=None, help="how many (default inference.default_k)")
    p.add_argument("--json", action="store_true", help="the service's JSON")
    p.set_defaults(handler=cmd_predict)


def add_profile_cli(p: argparse.ArgumentParser) -> None:
    p.epilog = PROFILE_EXAMPLES
    p.description = ("A program's launch profile: the file ranges it reads at start "
                     "(GET /v1/apps/APP/profile).")
    p.add_argument("app", help="the program: its path as MEMO names it, or a basename")
    p.add_argument("--ranges", action="store_true", help="list every byte range")
    p.add_argument("--json", action="store_true", help="the service's JSON")
    p.set_defaults(handler=cmd_profile)


def add_explain_cli(p: argparse.ArgumentParser) -> None:
    p.epilog = EXPLAIN_EXAMPLES
    p.description = "Why a program ranks where it does: each model's score and the ensemble's weights."
    p.add_argument("app", help="the program: its path as MEMO names it, or a basename")
    p.add_argument("--uid", type=int, default=default_uid(), help="the user (default: you, also under sudo)")
    p.add_argument("--json", action="store_true", help="the service's JSON")
    p.set_defaults(handler=cmd_explain)
