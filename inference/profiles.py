"""Launch profiles: the file ranges an app pulls into the page cache at start, merged into byte ranges.

A profile is the union of the pages of the app's most recent profiled launches (``RECENT``), so a file
the app stopped reading drops out instead of being prefetched forever. Profiles are cached per app and
dropped when a batch brings the app new pages.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from inference.store import PAGE_SIZE, Store
from memo.contract import AppProfile, ProfileRange

RECENT = 5


def merge(pages: list[tuple[str, int, int, int, int]]) -> list[ProfileRange]:
    """(path, dev, ino, index, nr_pages) -> merged byte ranges per file, sorted by path and offset."""
    per_file: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for path, _dev, _ino, idx, nr in pages:
        if path:  # a file the collector could not name cannot be prefetched
            per_file[path].append((idx, idx + nr))
    out: list[ProfileRange] = []

    def emit(path: str, start: int, end: int) -> None:
        out.append(ProfileRange(path=path, offset=start * PAGE_SIZE, length=(end - start) * PAGE_SIZE))

    for path in sorted(per_file):
        spans = sorted(per_file[path])
        start, end = spans[0]
        for s, e in spans[1:]:
            if s <= end:
                end = max(end, e)
            else:
                emit(path, start, end)
                start, end = s, e
        emit(path, start, end)
    return out


class Profiles:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, AppProfile] = {}
        self._lock = threading.Lock()

    def invalidate(self, apps: set[str]) -> None:
        with self._lock:
            for app in apps:
                self._cache.pop(app, None)

    def get(self, app: str) -> AppProfile:
        with self._lock:
            cached = self._cache.get(app)
        if cached is not None:
            return cached
        ranges = merge(self.store.profile_pages(app, RECENT))
        profile = AppProfile(app=app, launches=self.store.app_launches(app),
                             bytes=sum(r.length for r in ranges),
                             ranges=ranges)
        with self._lock:
            self._cache[app] = profile
        return profile

    def bytes_of(self, app: str) -> int:
        return self.get(app).bytes
