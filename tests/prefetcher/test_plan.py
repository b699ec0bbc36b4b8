"""The plan: page ranges weighted by the chance a predicted launch uses them, and what is worth reading."""

from __future__ import annotations

from memo.contract import AppProfile, ProfileRange
from prefetcher.plan import Candidate, Span, weigh, worth_reading

P = 4096


def profile(app: str, *ranges: tuple[str, int, int]) -> AppProfile:
    rs = [ProfileRange(path=p, offset=o * P, length=n * P) for p, o, n in ranges]
    return AppProfile(app=app, launches=1, bytes=sum(r.length for r in rs), ranges=rs)


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


def test_worth_reading_charges_eviction_once_free_memory_is_used() -> None:
    span = Span(0.5, "/f", 0, P, "a")
    assert worth_reading(span, 0.3, 0.4, fits_in_free=True)
    assert not worth_reading(span, 0.3, 0.4, fits_in_free=False)
    assert worth_reading(Span(0.8, "/f", 0, P, "a"), 0.3, 0.4, fits_in_free=False)
