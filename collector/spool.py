"""A bounded on-disk spool of sealed batches, oldest first: nothing is lost while the inference
service is down or restarting, and a collector restart resumes both the queue and the sequence.

Layout under <data_dir>/spool/<source_id>/: one `<seq:012d>-<events>.json` per unacknowledged
EventBatch, and `next_seq`. Files are written to a temporary name and renamed, so a crash leaves
either a whole batch or none. A batch is not fsynced: it survives the collector's crash and the
service's absence (the page cache holds it), and a power cut costs at most the last seconds of
events — each launch makes a few batches, and their four fsyncs each (file and folder, twice) were
journal commits competing with the launch's own reads. What must
survive a power cut is the sequence: the service drops a batch whose seq it has stored, so a seq
reused after a reboot would lose new events. `next_seq` is therefore durable and holds a bound
SEQ_RESERVE ahead of the seqs handed out, rewritten once per SEQ_RESERVE batches; a restart resumes
at that bound (seqs skip a few; the service only needs them unique and rising).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from memo import helpers
from memo.contract import Event, EventBatch, LostEvent

log = logging.getLogger(__name__)
SEQ_RESERVE = 1024
"""Seqs handed out per durable write of `next_seq`."""


@dataclass(frozen=True)
class Spooled:
    seq: int
    events: int
    path: Path


def _parse(path: Path) -> Spooled | None:
    try:
        seq, events = path.stem.split("-")
        return Spooled(int(seq), int(events), path)
    except ValueError:
        return None


class Spool:
    def __init__(self, root: Path, source_id: str, max_bytes: int) -> None:
        self.dir = root / "spool" / source_id
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.dir, self.dir.parent):
            os.chmod(d, 0o700)  # batches hold every user's execs with their argv
        self.source_id = source_id
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._dropped_events = 0
        items = self.pending()
        try:
            stored = int((self.dir / "next_seq").read_text())
        except (OSError, ValueError):
            stored = 0
        self._next_seq = max([stored] + [s.seq + 1 for s in items])
        self._reserved = self._next_seq  # seqs below it may be reused by nobody: next_seq says so on disk
        self._bytes = sum(s.path.stat().st_size for s in items)
        if items:
            log.info("spool: %d unacknowledged batches from a previous run in %s", len(items), self.dir)

    def pending(self) -> list[Spooled]:
        items = (_parse(p) for p in self.dir.glob("*.json"))
        return sorted((s for s in items if s), key=lambda s: s.seq)

    def append(self, events: list[Event]) -> EventBatch:
        """Seal events into the next batch on disk (a `lost` record first if the bound dropped any)."""
        with self._lock:
            if self._dropped_events:
                events = [LostEvent(ts_ns=time.monotonic_ns(), pid=0, count=self._dropped_events), *events]
                self._dropped_events = 0
            batch = EventBatch(source_id=self.source_id, seq=self._next_seq, events=events)
            data = batch.model_dump_json().encode()
            if self._next_seq >= self._reserved:  # before the batch can reach the service
                self._reserved = self._next_seq + SEQ_RESERVE
                helpers.atomic_write(self.dir / "next_seq", str(self._reserved).encode())
            helpers.atomic_write(self.dir / f"{batch.seq:012d}-{len(events)}.json", data, durable=False)
            self._next_seq += 1
            self._bytes += len(data)
            self._enforce_bound()
            return batch

    def _enforce_bound(self) -> None:
        items = self.pending()
        while self._bytes > self.max_bytes and len(items) > 1:
            old = items.pop(0)
            self._bytes -= old.path.stat().st_size
            old.path.unlink()
            self._dropped_events += old.events
            log.error("spool over %d bytes: dropped batch %d (%d events)", self.max_bytes, old.seq,
                      old.events)

    def remove(self, item: Spooled) -> None:
        with self._lock:
            try:
                self._bytes -= item.path.stat().st_size
                item.path.unlink()
            except FileNotFoundError:
                pass

