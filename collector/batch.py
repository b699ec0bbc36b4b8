"""Turning a stream of events into batches: coalesce page ranges, seal by size or age."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from memo.contract import MAX_RANGE_PAGES, Event, PageCacheEvent


def coalesce(events: Sequence[Event]) -> list[Event]:
    """Merge a pagecache record into the previous one of the same (pid, dev, ino) when it continues
    that range: a 20 MB sequential read becomes a few ranges instead of thousands of pages."""
    out: list[Event] = []
    open_ranges: dict[tuple[int, int, int], int] = {}  # (pid, dev, ino) -> index in out
    for ev in events:
        if isinstance(ev, PageCacheEvent):
            key = (ev.pid, ev.dev, ev.ino)
            i = open_ranges.get(key)
            if i is not None:
                prev = out[i]
                assert isinstance(prev, PageCacheEvent)
                if prev.index + prev.nr_pages == ev.index and prev.nr_pages + ev.nr_pages <= MAX_RANGE_PAGES:
                    out[i] = prev.model_copy(update={"nr_pages": prev.nr_pages + ev.nr_pages,
                                                     "path": prev.path or ev.path})
                    continue
            open_ranges[key] = len(out)
        out.append(ev)
    return out


class Batcher:
    """Collects events and hands a list to `seal` when it holds max_events, when an urgent event (an
    exec: predictions and the prefetcher's hold wait for it) has waited max_age_s, or when its oldest
    event has waited bulk_age_s (checked on add and on tick). Everything else rides along: one
    launch's forks, exits and pages make a few batches, not one per poll round."""

    def __init__(self, seal: Callable[[list[Event]], None], max_events: int, max_age_s: float,
                 bulk_age_s: float | None = None, urgent: Callable[[Event], bool] = lambda ev: True) -> None:
        self._seal = seal
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._bulk_age_s = max(max_age_s, bulk_age_s if bulk_age_s is not None else max_age_s)
        self._urgent = urgent
        self._events: list[Event] = []
        self._since = 0.0
        self._urgent_since: float | None = None

    def add(self, events: Sequence[Event]) -> None:
        for ev in events:
            if not self._events:
                self._since = time.monotonic()
            if self._urgent_since is None and self._urgent(ev):
                self._urgent_since = time.monotonic()
            self._events.append(ev)
            if len(self._events) >= self._max_events:
                self.flush()
        self.tick()

    def tick(self) -> None:
        if not self._events:
            return
        now = time.monotonic()
        if now - self._since >= self._bulk_age_s or \
                (self._urgent_since is not None and now - self._urgent_since >= self._max_age_s):
            self.flush()

    def flush(self) -> None:
        if self._events:
            events, self._events, self._urgent_since = self._events, [], None
            self._seal(events)
