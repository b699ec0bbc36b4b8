"""Delivers spooled batches to the inference service over its Unix socket, oldest first.

At-least-once: a batch leaves the spool only when an EventAck covers its seq; the service
de-duplicates on (source_id, seq), so a retry after a lost reply is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx

from collector.spool import Spool, Spooled
from memo.client import InferenceClient

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per POST is noise
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
IDLE_WAIT_S = 30.0
"""With nothing spooled the thread sleeps until a batch is sealed (notify); the timeout is only a
safety net. (A 0.5 s timer woke it twice a second for nothing: under memory pressure each wake-up
faults the collector's memory back in.)"""


class Sender(threading.Thread):
    def __init__(self, spool: Spool, socket: Path, timeout_s: float = 10.0) -> None:
        super().__init__(name="memo-sender", daemon=True)
        self.spool = spool
        self.socket = socket
        self._client = InferenceClient.unix(socket, timeout_s)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._down_since: float | None = None
        self.delivered_batches = 0
        self.delivered_events = 0
        self.duplicates = 0

    def notify(self) -> None:
        self._wake.set()

    def _post(self, item: Spooled) -> bool:
        try:
            ack = self._client.events(item.path.read_bytes())
        except httpx.HTTPStatusError as exc:
            r = exc.response
            if r.status_code < 500 and r.status_code not in (408, 429):
                # The service refuses this batch for good (it would refuse every retry): log, drop.
                log.error("inference rejected batch %d: HTTP %d %s", item.seq, r.status_code, r.text[:500])
                return True
            return self._unreachable(exc)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return self._unreachable(exc)
        if ack.seq < item.seq:
            log.error("ack for batch %d covers only seq %d; retrying", item.seq, ack.seq)
            return False
        if self._down_since is not None:
            log.info("inference is back after %.1f s; replaying the spool",
                     time.monotonic() - self._down_since)
            self._down_since = None
        self.delivered_batches += 1
        self.delivered_events += ack.accepted
        self.duplicates += ack.duplicate
        return True

    def _unreachable(self, exc: Exception) -> bool:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("inference unreachable at %s (%s): spooling batches in %s", self.socket, exc,
                        self.spool.dir)
        return False

    def _resume_seq(self) -> bool:
        """With the spool's seq unknown (first start, next_seq lost), move it past the service's
        highest seq from this source before anything is delivered."""
        try:
            stats = {s.source_id: s for s in self._client.sources()}
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return self._unreachable(exc)
        got = stats.get(self.spool.source_id)
        self.spool.resume_after(got.seq if got is not None else -1)
        return True

    def run(self) -> None:
        failures = 0
        while not self._halt.is_set():
            items = self.spool.pending()
            if items and not self.spool.seq_known:
                if not self._resume_seq():
                    failures += 1
                    self._halt.wait(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
                    continue
                items = self.spool.pending()
            if not items:
                self._wake.wait(IDLE_WAIT_S)  # a batch is on disk before notify() sets this
                self._wake.clear()
                continue
            for item in items:
                if self._halt.is_set():
                    break
                if self._post(item):
                    self.spool.remove(item)
                    failures = 0
                else:
                    failures += 1
                    self._halt.wait(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
                    break

    def drain(self, timeout_s: float) -> bool:
        """Give the queue up to timeout_s to empty, then stop; True if nothing is left."""
        deadline = time.monotonic() + timeout_s
        self.notify()
        while self.spool.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._halt.set()
        self._wake.set()
        self.join(timeout=max(1.0, deadline - time.monotonic()))
        self._client.close()
        left = self.spool.pending()
        if left:
            log.warning("%d batches left in the spool %s; they are sent on the next start", len(left),
                        self.spool.dir)
        return not left
