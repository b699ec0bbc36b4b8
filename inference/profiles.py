"""Launch profiles: the file ranges an app pulls into the page cache at start, merged into byte ranges.

A profile is the union of the pages of the app's most recent profiled launches (``RECENT``), so a file
the app stopped reading drops out instead of being prefetched forever. Profiles are cached per app and
dropped when a batch brings the app new pages.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from inference.store import PAGE_SIZE, Store
from memo.contract import AppProfile, ProfileRange, is_file_path

RECENT = 5


def merge(pages: list[tuple[str, int, int, int, int]]) -> list[ProfileRange]:
    """(path, dev, ino, index, nr_pages) -> merged byte ranges per file, sorted by path and offset."""
    per_file: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for path, _dev, _ino, idx, nr in pages:
        per_file[path].append((idx, idx + nr))
    out: list[ProfileRange] = []

    def emit(path: str, start: int, end: int) -> None:
        # Constructed without validation: the path was checked once per file below, and a profile
        # holds thousands of ranges.
        out.append(ProfileRange.model_construct(path=path, offset=start * PAGE_SIZE,
                                                length=(end - start) * PAGE_SIZE))

    # A file the collector could not name ("") cannot be prefetched; a path the contract refuses (a row
    # stored before it did) is never served.
    for path in sorted(p for p in per_file if is_file_path(p)):
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
        self._bytes: dict[str, int] = {}  # app -> bytes when last built, kept past invalidation
        self._first_version = self._next_version = int(time.time() * 1000)
        self._version: dict[str, int] = {}  # app -> version, for apps that gained pages since start
        self._lock = threading.Lock()

    def invalidate(self, apps: set[str]) -> None:
        with self._lock:
            for app in apps:
                self._cache.pop(app, None)
                self._next_version += 1
                self._version[app] = self._next_version

    def version_of(self, app: str) -> int:
        """Moves whenever the app's profile gains pages; unique across restarts (it starts at the
        service's start time in ms), so a client's copy from an earlier run never looks current."""
        with self._lock:
            return self._version.get(app, self._first_version)

    def get(self, app: str) -> AppProfile:
        with self._lock:
            cached = self._cache.get(app)
        if cached is not None:
            return cached
        version = self.version_of(app)  # before the read: pages landing during it move the version on
        ranges = merge(self.store.profile_pages(app, RECENT))
        profile = AppProfile(app=app, launches=self.store.app_launches(app),
                             bytes=sum(r.length for r in ranges),
                             ranges=ranges, version=version)
        with self._lock:
            if self._version.get(app, self._first_version) == version:  # not outdated while built
                self._cache[app] = profile
            self._bytes[app] = profile.bytes
        return profile

    def bytes_of(self, app: str) -> int:
        """The profile's size for a ranking: the size it had when last built. A profile is built again
        when it is asked for (GET .../profile: the prefetcher does, for the programs it plans with),
        not for every ranking: a launch's pages arrive over several batches, and rebuilding each
        ranked program's profile (its last launches' pages from the store, merged) after each of them
        was half of the service's CPU in a replayed session."""
        with self._lock:
            seen = self._bytes.get(app)
        return seen if seen is not None else self.get(app).bytes
