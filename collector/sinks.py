"""Where events go: JSON lines on stdout (the debugging view), or batches to the inference service."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from collector.batch import Batcher
from collector.rescan import Heartbeat
from collector.sender import Sender
from collector.spool import Spool
from memo.config import Config
from memo.contract import Event, ExecEvent

log = logging.getLogger(__name__)


class StdoutSink:
    """One JSON object per line: type, pid, ts_ns and the record's other fields."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.events = 0

    def emit(self, events: list[Event]) -> None:
        # Straight to the descriptor, every byte: through the text layer, a SIGTERM that arrives while
        # the write waits on a full pipe lost the rest of the buffer (measured: 349 of 742 lines).
        data = memoryview("".join(ev.model_dump_json() + "\n" for ev in events).encode())
        self.out.flush()
        fd = self.out.fileno()
        while data:
            data = data[os.write(fd, data):]
        self.events += len(events)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        log.info("done: printed %d events", self.events)


class ServiceSink:
    """Batches -> on-disk spool -> sender thread -> POST /v1/events on the Unix socket."""

    def __init__(self, cfg: Config, source_id: str, drain_s: float = 5.0) -> None:
        self.spool = Spool(cfg.paths.data_dir, source_id, cfg.collector.spool_max_bytes)
        self.sender = Sender(self.spool, cfg.paths.socket)
        self.batcher = Batcher(self._seal, cfg.collector.batch_max_events, cfg.collector.flush_interval_s,
                               cfg.collector.bulk_flush_s, urgent=lambda ev: isinstance(ev, ExecEvent))
        self.drain_s = drain_s
        self.heartbeat = Heartbeat(self.spool.dir / "heartbeat.json")
        self.last_run_ns = self.heartbeat.last()  # when the previous run stopped (this boot), if known
        self.batches = 0
        self.events = 0
        self.sender.start()
        log.info("sending to %s as source %r", cfg.paths.socket, source_id)

    def _seal(self, events: list[Event]) -> None:
        batch = self.spool.append(events)
        self.batches += 1
        self.events += len(batch.events)
        self.sender.notify()

    def emit(self, events: list[Event]) -> None:
        self.batcher.add(events)

    def tick(self) -> None:
        self.batcher.tick()
        self.heartbeat.beat()

    def close(self) -> None:
        self.heartbeat.beat(force=True)
        self.batcher.flush()
        self.sender.drain(self.drain_s)
        log.info("done: sealed batches=%d events=%d delivered batches=%d events=%d duplicates=%d "
                 "spooled=%d", self.batches, self.events, self.sender.delivered_batches,
                 self.sender.delivered_events, self.sender.duplicates, len(self.spool.pending()))
