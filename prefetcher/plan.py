"""Which bytes to read ahead: every page range weighted by the chance that a launch soon uses it.

Each prediction brings its program's launch profile. A range's weight is the sum, over the predictions
whose profiles hold it, of probability x usefulness (the share of that program's past prefetches that
a launch used, from the feedback). Ranges many likely programs share (an interpreter, its standard
library) weigh more than any one program's probability; a profile whose prefetches went unused weighs
less. The prefetcher reads a range only where the weight beats the cost of reading it, and a higher
cost once the plan no longer fits in free memory (it would evict cache that may itself be used).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from memo.contract import AppProfile
from memo.helpers import Recent, merge_spans
from prefetcher import syscalls

PAGE = syscalls.PAGE_SIZE


@dataclass
class Candidate:
    """A predicted program: who, how likely, how useful its prefetches were, and its profile."""

    app: str
    uid: int
    probability: float
    usefulness: float
    profile: AppProfile
    horizon_s: float = 60.0

    @property
    def weight(self) -> float:
        return self.probability * self.usefulness


@dataclass(order=True)
class Span:
    """Pages [start, end) of a file (byte offsets, page-aligned), worth `weight`, read for `owner`
    (the most likely candidate whose profile holds it: feedback is reported per program)."""

    weight: float
    path: str
    start: int
    end: int
    owner: str = field(compare=False, default="")
    uid: int | None = field(compare=False, default=None)  # the owner's user: the file must be theirs to read

    @property
    def bytes(self) -> int:
        return self.end - self.start


def _page_spans(profile: AppProfile, cap: int) -> dict[str, list[tuple[int, int]]]:
    """The profile's ranges as page-aligned spans per path, in profile order, at most `cap` bytes."""
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    left = cap
    for r in profile.ranges:
        if left <= 0:
            break
        start = r.offset - r.offset % PAGE
        end = min(-(-(r.offset + r.length) // PAGE) * PAGE, start + left)
        if end > start:
            out[r.path].append((start, end))
            left -= end - start
    return out


Spans = dict[str, list[tuple[int, int]]]
_spans_of: Recent[tuple[str, int | None, int, int, int], Spans] = Recent(16)  # a round weighs a few programs


def _profile_spans(profile: AppProfile, cap: int) -> dict[str, list[tuple[int, int]]]:
    """_page_spans, merged per path, remembered per profile (app, version, size, ranges, cap): the same
    profiles are weighed again at every round while their programs stay predicted."""
    key = (profile.app, profile.version, profile.bytes, len(profile.ranges), cap)
    hit = _spans_of.get(key)
    if hit is None:
        hit = _spans_of[key] = {path: merge_spans(spans) for path, spans in _page_spans(profile, cap).items()}
    return hit


def weigh(candidates: Iterable[Candidate], per_app_cap: int, min_weight: float = 0.0) -> list[Span]:
    """Every page range of the candidates' profiles with its summed weight above min_weight, heaviest
    first. What weighs no more is never read (prefetch_spans stops there), so it is not built: the
    unlikely predictions' profiles are most of the ranges, and the plan is weighed again after every
    launch."""
    holders: dict[str, list[tuple[Candidate, list[tuple[int, int]]]]] = defaultdict(list)
    for c in candidates:
        if c.weight > 0:
            for path, spans in _profile_spans(c.profile, per_app_cap).items():
                holders[path].append((c, spans))
    out: list[Span] = []
    for path, held in holders.items():
        if len(held) == 1:  # most files are one program's: its merged spans as they are, no sweep
            c, spans = held[0]
            w = min(c.weight, 1.0)
            if w > min_weight:
                out.extend(Span(w, path, s, e, c.app, c.uid) for s, e in spans)
        elif sum(c.weight for c, _ in held) > min_weight:
            first = len(out)
            _sweep(path, held, out)
            out[first:] = [s for s in out[first:] if s.weight > min_weight]
    out.sort(key=lambda s: (-s.weight, s.path, s.start))
    return out


def _sweep(path: str, held: list[tuple[Candidate, list[tuple[int, int]]]], out: list[Span]) -> None:
    """The spans of a file several candidates hold, split where the set of holders changes, each
    weighing the sum of its holders' weights and owned by the heaviest of them."""
    uid_of = {c.app: c.uid for c, _ in held}
    marks = sorted(((m, c.weight if m == s else -c.weight, c.app) for c, spans in held for s, e in spans
                    for m in (s, e)), key=lambda m: m[0])
    active: dict[str, float] = {}  # app -> its weight, while inside one of its spans
    prev = 0
    first = len(out)
    for off, w, app in marks:
        if active and off > prev:
            weight = min(sum(active.values()), 1.0)
            owner = max(active, key=active.__getitem__)
            last = out[-1] if len(out) > first else None
            if last is not None and last.end == prev and last.owner == owner \
                    and abs(last.weight - weight) < 1e-9:
                last.end = off
            else:
                out.append(Span(weight, path, prev, off, owner, uid_of.get(owner)))
        if w > 0:
            active[app] = w
        else:
            active.pop(app, None)
        prev = off


def worth_reading(span: Span, min_weight: float, evict_cost: float, fits_in_free: bool) -> bool:
    """Reading pays when the chance of use beats the cost of the read, and also the cost of what it
    evicts once free memory is used up."""
    return span.weight > (min_weight if fits_in_free else min_weight + evict_cost)
