"""The plan: page ranges weighted by the chance a predicted launch uses them, and what is worth reading."""

from __future__ import annotations

import random

from memo.contract import AppProfile, ProfileRange
from prefetcher.plan import Candidate, Span, weigh, worth_reading

P = 4096


def profile(app: str, *ranges: tuple[str, int, int]) -> AppProfile:
    rs = [ProfileRange(path=p, offset=o * P, length=n * P) for p, o, n in ranges]
    return AppProfile(app=app, launches=1, bytes=sum(r.length for r in rs), ranges=rs)


def _random_candidates(rng: random.Random, n: int, p: tuple[float, float], files: int, most: int
                       ) -> list[Candidate]:
    """1 to `most` programs, each with 1-7 ranges over `files` shared files, probabilities in p."""
    return [Candidate(f"app{i}", 1000 + i, rng.uniform(*p), 1.0, profile(f"app{i}-{n}", *[
                (f"/f{rng.randrange(files)}", rng.randrange(40), rng.randrange(1, 9))
                for _ in range(rng.randrange(1, 8))]))
            for i in range(rng.randrange(1, most + 1))]


def test_shared_ranges_weigh_the_sum_of_their_programs() -> None:
    """An interpreter's library shared by two scripts counts for both; each script's own files for one."""
    a = Candidate("a", 1, 0.5, 1.0, profile("a", ("/lib", 0, 10), ("/a", 0, 1)))
    b = Candidate("b", 1, 0.3, 1.0, profile("b", ("/lib", 5, 10)))
    got = [(s.weight, s.path, s.start // P, s.end // P, s.owner) for s in weigh([a, b], 1 << 40)]
    assert got == [(0.8, "/lib", 5, 10, "a"), (0.5, "/a", 0, 1, "a"), (0.5, "/lib", 0, 5, "a"),
                   (0.3, "/lib", 10, 15, "b")]


def test_feedback_lowers_a_wasteful_program_and_the_cap_bounds_a_profile() -> None:
    wasteful = Candidate("w", 1, 0.9, 0.1, profile("w", ("/w", 0, 100)))
    [span] = weigh([wasteful], per_app_cap=10 * P)
    assert abs(span.weight - 0.09) < 1e-9 and span.bytes == 10 * P


def test_overlapping_ranges_of_one_profile_count_once() -> None:
    c = Candidate("a", 1, 0.4, 1.0, profile("a", ("/f", 0, 4), ("/f", 2, 4)))
    assert [(s.weight, s.start // P, s.end // P) for s in weigh([c], 1 << 40)] == [(0.4, 0, 6)]


def test_every_page_weighs_what_its_holders_weigh_together() -> None:
    """Against a page-by-page count, on random profiles: a file one program holds keeps its spans as
    they are, a shared one is split where its holders change; each page's weight is the sum of its
    holders' (at most 1), its owner the heaviest, and it appears once."""
    rng = random.Random(7)
    for n in range(50):
        cands = _random_candidates(rng, n, (0.05, 0.7), files=4, most=3)
        want: dict[tuple[str, int], tuple[float, str]] = {}
        for path in {r.path for c in cands for r in c.profile.ranges}:
            for page in range(60):
                held = [c for c in cands if any(r.path == path and r.offset // P <= page
                                                < (r.offset + r.length) // P for r in c.profile.ranges)]
                if held:
                    heaviest = max(held, key=lambda c: c.weight)
                    want[(path, page)] = (min(sum(c.weight for c in held), 1.0), heaviest.app)
        got: dict[tuple[str, int], tuple[float, str]] = {}
        for s in weigh(cands, 1 << 40):
            assert s.uid == next(c.uid for c in cands if c.app == s.owner)
            for page in range(s.start // P, s.end // P):
                assert (s.path, page) not in got
                got[(s.path, page)] = (round(s.weight, 9), s.owner)
        assert got == {k: (round(w, 9), o) for k, (w, o) in want.items()}


def test_a_plan_leaves_out_only_what_would_never_be_read() -> None:
    """With min_weight, the plan is the full plan less the spans weighing no more than it (the reader
    stops at the first of those): a low-probability profile still adds its weight where it shares a file."""
    rng = random.Random(11)
    for n in range(50):
        cands = _random_candidates(rng, n, (0.02, 0.5), files=5, most=4)
        full = weigh(cands, 1 << 40)
        for m in (0.0, 0.1, 0.3):
            assert weigh(cands, 1 << 40, m) == [s for s in full if s.weight > m]
    low = Candidate("low", 1, 0.1, 1.0, profile("low", ("/lib", 0, 4), ("/own", 0, 4)))
    high = Candidate("high", 1, 0.25, 1.0, profile("high", ("/lib", 0, 4)))
    assert [(s.path, round(s.weight, 2)) for s in weigh([low, high], 1 << 40, 0.3)] == [("/lib", 0.35)]


def test_worth_reading_charges_eviction_once_free_memory_is_used() -> None:
    span = Span(0.5, "/f", 0, P, "a")
    assert worth_reading(span, 0.3, 0.4, fits_in_free=True)
    assert not worth_reading(span, 0.3, 0.4, fits_in_free=False)
    assert worth_reading(Span(0.8, "/f", 0, P, "a"), 0.3, 0.4, fits_in_free=False)
