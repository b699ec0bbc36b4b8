"""Launch profiles: the file ranges an app pulls into the page cache at start, merged into byte ranges.

A profile is the union of the pages of the app's most recent profiled launches (``RECENT``), so a file
the app stopped reading drops out instead of being prefetched forever. Profiles are cached per app and
dropped when a batch brings the app new pages; each launch's merged pages are kept too, so that the
rebuild reads only the launch still gaining them (the store's page rows of a program like chromium are
tens of thousands per launch).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable

from inference.store import PAGE_SIZE, Store
from memo.contract import AppProfile, ProfileRange, is_file_path
from memo.helpers import Recent

RECENT = 5
LAUNCHES_KEPT = 64
"""Launches whose merged pages are kept between builds (a handful of programs are ranked, RECENT launches
each): a launch's pages stop changing once its window closes, so a rebuild reads only the newest."""


def _merged(spans: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """(path, first page, end page) spans, sorted by path and page and merged where they touch."""
    out: list[tuple[str, int, int]] = []
    for path, s, e in sorted(spans):
        if out and out[-1][0] == path and s <= out[-1][2]:
            if e > out[-1][2]:
                out[-1] = (path, out[-1][1], e)
        else:
            out.append((sys.intern(path), s, e))
    return out


def _ranges(spans: list[tuple[str, int, int]]) -> list[ProfileRange]:
    """Merged page spans -> byte ranges. A file the collector could not name ("") cannot be prefetched;
    a path the contract refuses (a row stored before it did) is never served. Constructed without
    validation: the path was checked here, and a profile holds thousands of ranges."""
    return [ProfileRange.model_construct(path=path, offset=s * PAGE_SIZE, length=(e - s) * PAGE_SIZE)
            for path, s, e in spans if is_file_path(path)]


def merge(pages: list[tuple[str, int, int, int, int]]) -> list[ProfileRange]:
    """(path, dev, ino, index, nr_pages) -> merged byte ranges per file, sorted by path and offset."""
    return _ranges(_merged((path, idx, idx + nr) for path, _dev, _ino, idx, nr in pages))


class Profiles:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, AppProfile] = {}
        self._bytes: dict[str, int] = {}  # app -> bytes when last built, kept past invalidation
        self._first_version = self._next_version = int(time.time() * 1000)
        self._version: dict[str, int] = {}  # app -> version, for apps that gained pages since start
        # launch id -> ((rows, last rowid) when read, its merged spans)
        self._launches: Recent[int, tuple[tuple[int, int], list[tuple[str, int, int]]]] = \
            Recent(LAUNCHES_KEPT)
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
        ranges = _ranges(_merged(span for launch in self.store.profiled_launches(app, RECENT)
                                 for span in self._launch_spans(*launch)))
        profile = AppProfile(app=app, launches=self.store.app_launches(app),
                             bytes=sum(r.length for r in ranges),
                             ranges=ranges, version=version)
        with self._lock:
            if self._version.get(app, self._first_version) == version:  # not outdated while built
                self._cache[app] = profile
            self._bytes[app] = profile.bytes
        return profile

    def _launch_spans(self, launch_id: int, rows: int, last_rowid: int) -> list[tuple[str, int, int]]:
        """One launch's merged pages, read from the store only when it gained rows since last read."""
        with self._lock:
            hit = self._launches.get(launch_id)
        if hit is not None and hit[0] == (rows, last_rowid):
            return hit[1]
        spans = _merged((path, idx, idx + nr) for path, idx, nr in self.store.launch_pages(launch_id))
        with self._lock:
            self._launches[launch_id] = ((rows, last_rowid), spans)
        return spans

    def bytes_of(self, app: str) -> int:
        """The profile's size for a ranking: the size it had when last built. A profile is built again
        when it is asked for (GET .../profile: the prefetcher does, for the programs it plans with),
        not for every ranking: a launch's pages arrive over several batches, and rebuilding each
        ranked program's profile (its last launches' pages from the store, merged) after each of them
        was half of the service's CPU in a replayed session."""
        with self._lock:
            seen = self._bytes.get(app)
        return seen if seen is not None else self.get(app).bytes
