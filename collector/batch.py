"""Turning a stream of events into batches: coalesce page ranges, seal by size or age."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from memo.contract import Event, PageCacheEvent


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
                if prev.index + prev.nr_pages == ev.index:
                    out[i] = prev.model_copy(update={"nr_pages": prev.nr_pages + ev.nr_pages,
                                                     "path": prev.path or ev.path})
                    continue
            open_ranges[key] = len(out)
        out.append(ev)
    return out


class Batcher:
    """Collects events and hands a list to `seal` when it holds max_events or its oldest event has
    waited max_age_s (checked on add and on tick)."""

    def __init__(self, seal: Callable[[list[Event]], None], max_events: int, max_age_s: float) -> None:
        self._seal = seal
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._events: list[Event] = []
        self._since = 0.0

    def add(self, events: Sequence[Event]) -> None:
        for ev in events:
            if not self._events:
                self._since = time.monotonic()
            self._events.append(ev)
            if len(self._events) >= self._max_events:
                self.flush()
        self.tick()

    def tick(self) -> None:
        if self._events and time.monotonic() - self._since >= self._max_age_s:
            self.flush()

    def flush(self) -> None:
        if self._events:
            events, self._events = self._events, []
            self._seal(events)
