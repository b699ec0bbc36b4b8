"""The prompt and its decoding: candidates get single-token labels so that one forward pass scores all.

The user's recent launches are written with the labels themselves, one per line, after the time of
day and a legend naming each label's app. Predicting the next label is then in-context sequence
continuation, which even a 135M model does well (induction), while the legend's names let it use
what it knows about apps. One
request with max_tokens=1 and logprobs=20 returns the next-token distribution over the labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inference.predictors.base import Launch

LABELS = tuple("ABCDEFGHIJKLMNOPQRST")  # " A".." T" are single tokens in the SmolLM2/GPT-style vocab
HISTORY = 24  # recent launches written into the prompt
OTHER = "?"  # history entries that are not among the candidates


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    labels: dict[str, str]  # label -> candidate app


def short_name(app: str) -> str:
    """What a person would call the app: an Android package's last part, a path's basename."""
    base = app.rstrip("/").rsplit("/", 1)[-1]
    parts = [p for p in base.split(".") if p]
    if len(parts) >= 3 and parts[0] in ("com", "org", "net", "io", "de", "me", "tv", "app"):
        tail = parts[-1]
        return f"{parts[-2]} {tail}" if tail in ("android", "app", "launcher", "music", "mobile") else tail
    return base


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M", time.localtime(ts)) if ts is not None else ""


def build(history: Sequence[Launch], candidates: Sequence[str], now: float | None = None) -> Prompt:
    """The prompt for the launch after ``history`` (oldest first), over at most 20 ``candidates``."""
    labels = dict(zip(LABELS, candidates, strict=False))
    of = {app: lab for lab, app in labels.items()}
    lines = ["Apps on this computer:"]
    lines += [f"{lab} = {short_name(app)}" for lab, app in labels.items()]
    lines.append("")
    lines.append("The apps the user opened, oldest first:")
    lines += [of.get(x.app, OTHER) for x in history[-HISTORY:]]
    text = "\n".join(lines) + "\n"  # the next token is the next launch's label
    # Time of day goes in a header, not on each line: per-line times made the model copy the line
    # that followed the same time earlier instead of continuing the sequence (12/15 vs 15/15 on
    # alternations and cycles).
    last = now if now is not None else next((x.ts for x in reversed(history) if x.ts is not None), None)
    if last is not None:
        text = f"It is {_clock(last)}.\n" + text
    return Prompt(text, labels)


def decode(top: Mapping[str, float], prompt: Prompt) -> dict[str, float]:
    """Next-token log-probabilities (token text -> logprob, the top 20) to probabilities over the
    candidates. Labels outside the returned top share what is left below the smallest one seen."""
    best: dict[str, float] = {}
    for token, lp in top.items():
        lab = token.strip()
        if lab in prompt.labels and lp > best.get(lab, -math.inf):
            best[lab] = lp
    if not best:
        return {}
    missing = [lab for lab in prompt.labels if lab not in best]
    floor = min(best.values()) - math.log(2.0)
    for lab in missing:
        best[lab] = floor
    top_lp = max(best.values())
    w = {lab: math.exp(lp - top_lp) for lab, lp in best.items()}
    total = sum(w.values())
    return {prompt.labels[lab]: v / total for lab, v in w.items()}
