"""Which bytes to read ahead: every page range weighted by the chance that a launch soon uses it.

Each prediction brings its program's launch profile. A range's weight is the sum, over the predictions
whose profiles hold it, of probability x usefulness (the share of that program's past prefetches that
a launch used, from the feedback). Ranges many likely programs share (an interpreter, its standard
library) weigh more than any one program's probability; a profile whose prefetches went unused weighs
less. The prefetcher reads a range only where the weight beats the cost of reading it, and a higher
cost once the plan no longer fits in free memory (it would evict cache that may itself be used).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from memo.contract import AppProfile
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


_SPANS_KEPT = 16  # a round weighs a handful of programs; each entry holds one profile's spans
_spans_of: OrderedDict[tuple[str, int, int, int], dict[str, list[tuple[int, int]]]] = OrderedDict()


def _profile_spans(profile: AppProfile, cap: int) -> dict[str, list[tuple[int, int]]]:
    """_page_spans, merged per path, remembered per profile (app, size, ranges, cap): the same profiles
    are weighed again at every round while their programs stay predicted."""
    key = (profile.app, profile.bytes, len(profile.ranges), cap)
    hit = _spans_of.get(key)
    if hit is None:
        hit = _spans_of[key] = {path: _merged(spans) for path, spans in _page_spans(profile, cap).items()}
        while len(_spans_of) > _SPANS_KEPT:
            _spans_of.popitem(last=False)
    _spans_of.move_to_end(key)
    return hit


def weigh(candidates: Iterable[Candidate], per_app_cap: int) -> list[Span]:
    """Every page range of the candidates' profiles with its summed weight, heaviest first."""
    bounds: dict[str, list[tuple[int, float, str]]] = defaultdict(list)  # path -> (offset, +-weight, app)
    uid_of: dict[str, int] = {}
    for c in candidates:
        if c.weight <= 0:
            continue
        uid_of.setdefault(c.app, c.uid)
        for path, spans in _profile_spans(c.profile, per_app_cap).items():
            for s, e in spans:
                bounds[path] += [(s, c.weight, c.app), (e, -c.weight, c.app)]
    out: list[Span] = []
    for path, marks in bounds.items():
        marks.sort(key=lambda m: m[0])
        active: dict[str, float] = {}  # app -> its weight, while inside one of its spans
        prev = 0
        for off, w, app in marks:
            if active and off > prev:
                weight = sum(active.values())
                owner = max(active, key=active.__getitem__)
                if out and out[-1].path == path and out[-1].end == prev and out[-1].owner == owner \
                        and abs(out[-1].weight - min(weight, 1.0)) < 1e-9:
                    out[-1].end = off
                else:
                    out.append(Span(min(weight, 1.0), path, prev, off, owner, uid_of.get(owner)))
            if w > 0:
                active[app] = w
            else:
                active.pop(app, None)
            prev = off
    out.sort(key=lambda s: (-s.weight, s.path, s.start))
    return out


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def worth_reading(span: Span, min_weight: float, evict_cost: float, fits_in_free: bool) -> bool:
    """Reading pays when the chance of use beats the cost of the read, and also the cost of what it
    evicts once free memory is used up."""
    return span.weight > (min_weight if fits_in_free else min_weight + evict_cost)
