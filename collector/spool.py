"""A bounded on-disk spool of sealed batches, oldest first: nothing is lost while the inference
service is down or restarting, and a collector restart resumes both the queue and the sequence.

Layout under <data_dir>/spool/<source_id>/: one `<seq:012d>-<events>.json` per unacknowledged
EventBatch, and `next_seq`. Files are written to a temporary name and renamed, so a crash leaves
either a whole batch or none. Neither is fsynced: they survive the collector's crash and the
service's absence (the page cache holds them), and a power cut costs at most the last seconds of
events; each launch makes a few batches, and four fsyncs each (file and folder, twice) were journal
commits competing with the launch's own reads. What must survive a power cut is the sequence: the
service drops a batch whose seq it has stored, so a seq handed out again after a reboot would lose new
events. `next_seq` therefore holds the boot it was written in (/proc/sys/kernel/random/boot_id): in the
same boot it is exact (seqs stay dense, and a gap at the service means a lost batch); after a reboot the
collector resumes SEQ_RESERVE seqs further on (more batches than the kernel keeps unwritten) and
records that durably before the first batch. Where `next_seq` is missing or damaged, the seq is
unknown: the sender asks the service for the highest seq it stored from this source before it delivers
anything, and renumbers this run's batches past it (resume_after); batches of a previous run keep their
seqs (one may be a retry of a batch the service already has).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from memo import helpers, procfs
from memo.contract import Event, EventBatch, LostEvent

log = logging.getLogger(__name__)
SEQ_RESERVE = 1024
"""Seqs skipped after a reboot: more batches than a power cut can have lost with the page cache."""


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
        self._boot = procfs.boot_id()
        stored, boot = self._read_next_seq()
        self.seq_known = bool(boot)  # False: first start, or next_seq lost: see resume_after
        if boot and boot != self._boot:  # rebooted since: its last writes may be lost
            stored += SEQ_RESERVE
        self._next_seq = max([stored] + [s.seq + 1 for s in items])
        self._first_new = self._next_seq  # seqs from here on were handed out by this run
        self._write_next_seq(durable=True)
        self._bytes = sum(s.path.stat().st_size for s in items)
        if items:
            log.info("spool: %d unacknowledged batches from a previous run in %s", len(items), self.dir)

    def _read_next_seq(self) -> tuple[int, str]:
        """(next seq, boot id) as stored; a damaged or missing file reads as (0, "")."""
        try:
            seq, _, boot = (self.dir / "next_seq").read_text().strip().partition(" ")
            return max(0, int(seq)), boot
        except (OSError, ValueError):
            return 0, ""

    def _write_next_seq(self, durable: bool = False) -> None:
        # without the boot while the seq is unknown: a crash before the service was asked keeps it so
        text = f"{self._next_seq} {self._boot}" if self.seq_known else str(self._next_seq)
        helpers.atomic_write(self.dir / "next_seq", text.encode(), durable=durable)

    def resume_after(self, high: int) -> int:
        """The service's highest stored seq from this source is `high` (-1: none): with the seq unknown
        at start, this run's batches and seqs move past it, else the service would drop them as
        duplicates. Returns how many batches were renumbered."""
        with self._lock:
            moved = 0
            if not self.seq_known and self._first_new <= high:
                mine = [item for item in self.pending() if item.seq >= self._first_new]
                shift = high + 1 - mine[0].seq if mine and mine[0].seq <= high else 0
                # all up by the same shift, highest first: a new name never lands on a batch still
                # waiting for its own, and the order of delivery stays
                for item in reversed(mine if shift else []):
                    batch = EventBatch.model_validate_json(item.path.read_bytes())
                    seq = item.seq + shift
                    data = batch.model_copy(update={"seq": seq}).model_dump_json().encode()
                    helpers.atomic_write(self.dir / f"{seq:012d}-{item.events}.json", data, durable=False)
                    item.path.unlink()
                    moved += 1
                self._next_seq = max(self._next_seq + shift, high + 1)
                log.warning("spool: next_seq was lost; the service holds seqs up to %d from %s: resuming "
                            "at %d (%d batches renumbered)", high, self.source_id, self._next_seq, moved)
            self.seq_known = True
            self._write_next_seq(durable=True)
            return moved

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
            helpers.atomic_write(self.dir / f"{batch.seq:012d}-{len(events)}.json", data, durable=False)
            self._next_seq += 1
            self._write_next_seq()
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

