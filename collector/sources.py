"""Where events come from: the eBPF programs (preferred) or the proc connector (fallback).

A source runs in the caller's thread until `stop` is set and hands lists of contract events,
oldest first, to `emit`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from collector import enrich, loader, maps, records
from collector.batch import coalesce
from memo import procfs
from memo.config import CollectorConfig
from memo.contract import Event, ExecEvent, ExitEvent, FaultsEvent, ForkEvent, LostEvent, PageCacheEvent

log = logging.getLogger(__name__)
Emit = Callable[[list[Event]], None]
POLL_MS = 100
POLL_IDLE_MS = 250
"""Poll timeout while nothing is in flight: a record wakes the poll at once anyway, so a quiet machine
costs four wake-ups a second instead of one per flush interval."""
NAME_WAIT_NS = 500_000_000
"""How long a page-cache record without a file name waits for the open or exec record that names it
(they travel in other ring buffers and can land in a later poll round)."""
LOST_SWEEP_S = 1.0
USAGE_SWEEP_S = 2.0
"""Shortest time between two sweeps of the `usage` map, which run only while launches happened lately
(an idle machine has nothing there), and then only when a chunk is due or a launched process exited."""


class Source(Protocol):
    def start(self, stop: threading.Event) -> None: ...
    def run(self, emit: Emit, stop: threading.Event, tick: Callable[[], None] = ...) -> None: ...
    def close(self) -> None: ...


class BPFSource:
    """Polls the ring buffers; sweeps the `counts` map into faults records and `lost` into lost."""

    def __init__(self, cfg: CollectorConfig, force_swap_source: str | None = None) -> None:
        self.cfg = cfg
        self.loaded = loader.load(cfg, force_swap_source)
        self.enricher = enrich.Enricher()
        self._pending: list[Event] = []
        self._held: list[Event] = []
        self._faults_seen: dict[int, tuple[int, int]] = {}
        self._lost_seen = 0
        self._window_ns = int(cfg.launch_window_s * 1e9)
        self._last_exec_ns = time.monotonic_ns()
        self._launched: set[int] = set()  # pids that exec'd or forked since the launches went quiet
        self._exited: set[int] = set()  # of those, pids whose exit record came since the last sweep
        self._usage_due_ns = 0  # when the oldest chunk in `usage` is due (0: unknown, sweep)
        self._last_emit = 0.0  # monotonic time of the last events handed on
        b = self.loaded.bpf
        for ring, convert in records.CONVERTERS.items():
            b[ring].open_ring_buffer(self._callback(ring, convert))
        b["open_events"].open_ring_buffer(self._on_open)

    def start(self, stop: threading.Event) -> None:
        """Nothing to do: the programs are attached once the constructor returns."""

    def _callback(self, ring: str, convert: Callable[[Any], Event]) -> Callable[[Any, Any, int], int]:
        table = self.loaded.bpf[ring]

        def cb(_ctx: Any, data: Any, _size: int) -> int:
            self._pending.append(convert(table.event(data)))
            return 0

        return cb

    def _on_open(self, _ctx: Any, data: Any, _size: int) -> int:
        pid, fd, key, name = records.open_record(self.loaded.bpf["open_events"].event(data))
        self.enricher.files.learn_open(pid, fd, name, key)
        return 0

    def _sweep_faults(self) -> list[Event]:
        """Per-process fault deltas since the last sweep; entries of processes that are gone (their
        exit record was missed or raced a late fold) are deleted so the map cannot fill up."""
        now = time.monotonic_ns()
        out: list[Event] = []
        seen: dict[int, tuple[int, int]] = {}
        table = self.loaded.bpf["counts"]
        gone = []
        for k, v in table.items():
            pid, cur = k.value, (v.faults, v.majflt)
            if procfs.owner(pid) is None:  # gone
                gone.append(k)
                continue
            seen[pid] = cur
            old = self._faults_seen.get(pid, (0, 0))
            d_all, d_maj = cur[0] - old[0], cur[1] - old[1]
            if d_all > 0 or d_maj > 0:
                out.append(FaultsEvent(ts_ns=now, pid=pid, minflt=max(0, d_all - d_maj),
                                       majflt=max(0, d_maj)))
        for k in gone:
            try:
                del table[k]
            except KeyError:
                pass
        self._faults_seen = seen
        return out

    def _sweep_usage(self, final: bool = False) -> list[Event]:
        """Pagecache records of the `usage` chunks whose launch window is over or whose process has
        exited (every chunk when final), deleted from the map as they are taken: the drain runs after a
        launch, not during it. Also notes when the next sweep is worth its read of the whole map."""
        table = self.loaded.bpf["usage"]
        now = time.monotonic_ns()
        due = now - self._window_ns
        exited, self._exited = self._exited, set()
        used: list[tuple[int, int, int, int, int, int]] = []
        taken: list[bytes] = []
        oldest_left = now
        keys, values, _ = maps.read(table)
        ksize = records.USAGE_KEY.size
        entries = zip(records.USAGE_KEY.iter_unpack(keys), records.USAGE_VALUE.iter_unpack(values),
                      strict=True)
        for i, ((ino, chunk, pid, dev), (first_ns, bits)) in enumerate(entries):
            if final or first_ns <= due or pid in exited:
                taken.append(keys[i * ksize:(i + 1) * ksize])
                used.append((pid, dev, ino, chunk, first_ns, bits))
            else:
                oldest_left = min(oldest_left, first_ns)
        maps.delete(table, b"".join(taken))
        # A chunk left now is due a window after its first use; one made after this sweep, later still.
        self._usage_due_ns = oldest_left + self._window_ns
        return records.usage_events(used)

    def _usage_sweep_due(self, now_ns: int) -> bool:
        """Whether to read `usage` now: only launches fill it, so only while one happened lately; then
        when its oldest chunk is due, or a launched process exited (its chunks need not wait)."""
        if now_ns - self._last_exec_ns > 2 * self._window_ns + int(3 * USAGE_SWEEP_S * 1e9):
            self._exited.clear()
            self._launched.clear()
            return False
        return now_ns >= self._usage_due_ns or bool(self._exited)

    def lost_total(self) -> int:
        return int(self.loaded.bpf["lost"].sum(0).value)

    def _sweep_lost(self) -> list[Event]:
        total = self.lost_total()
        if total <= self._lost_seen:
            return []
        ev = LostEvent(ts_ns=time.monotonic_ns(), pid=0, count=total - self._lost_seen)
        self._lost_seen = total
        log.warning("ring buffers full: %d records lost", ev.count)
        return [ev]

    def _drain(self, emit: Emit, extra: list[Event], final: bool = False) -> None:
        events, self._pending = self._pending + extra, []
        if not events:
            return
        events.sort(key=lambda e: e.ts_ns)
        execs = [ev.ts_ns for ev in events if isinstance(ev, ExecEvent)]
        if execs:
            self._last_exec_ns = max(self._last_exec_ns, execs[-1])
        for ev in events:
            if isinstance(ev, ExecEvent | ForkEvent):
                self._launched.add(ev.pid)
            elif isinstance(ev, ExitEvent) and ev.pid in self._launched:
                self._launched.discard(ev.pid)
                self._exited.add(ev.pid)
        # Execs first: execve reads the binary's pages before its exec record, and learning the
        # exec'd files is what names those pages.
        events = [self.enricher.exec(ev) if isinstance(ev, ExecEvent) else ev for ev in events]
        waited = time.monotonic_ns() - NAME_WAIT_NS
        out: list[Event] = []
        for ev in events:
            if isinstance(ev, PageCacheEvent) and not ev.path:
                ev = self.enricher.pagecache(ev)
                if not ev.path and ev.ts_ns > waited and not final:
                    self._held.append(ev)
                    continue
            out.append(ev)
        self._pending, self._held = self._held + self._pending, []
        if out:
            emit(coalesce(out))
            self._last_emit = time.monotonic()

    def run(self, emit: Emit, stop: threading.Event, tick: Callable[[], None] = lambda: None) -> None:
        b = self.loaded.bpf
        # While events are in flight, wake at least once per flush interval, so that a lone exec is not
        # held back by the poll; otherwise a record wakes the poll. Open records wake no one
        # (bpf/files.c): while a launch window is open they are taken every POLL_MS, soon enough to
        # name most files from /proc/PID/fd (the name they were opened by serves for the rest).
        busy_ms = max(1, min(POLL_MS, int(self.cfg.flush_interval_s * 1000)))
        next_faults = time.monotonic() + self.cfg.faults_interval_s
        next_usage = time.monotonic() + USAGE_SWEEP_S
        next_lost = 0.0
        while not stop.is_set():
            busy = self._pending or self._held or \
                time.monotonic() - self._last_emit < 2 * self.cfg.flush_interval_s
            in_window = time.monotonic_ns() - self._last_exec_ns < self._window_ns
            b.ring_buffer_poll(busy_ms if busy else POLL_MS if in_window else POLL_IDLE_MS)
            if busy or in_window:  # the poll takes only rings that woke it: open records wait in theirs
                b.ring_buffer_consume()
            now = time.monotonic()
            extra: list[Event] = []
            if now >= next_lost:  # a per-CPU map read: once a second, not every poll round
                next_lost = now + LOST_SWEEP_S
                extra += self._sweep_lost()
            if now >= next_faults:
                next_faults += self.cfg.faults_interval_s
                extra += self._sweep_faults()
            if now >= next_usage and self._usage_sweep_due(time.monotonic_ns()):
                next_usage = now + USAGE_SWEEP_S
                extra += self._sweep_usage()
            self._drain(emit, extra)
            tick()
        b.ring_buffer_consume()
        self._drain(emit, self._sweep_lost() + self._sweep_usage(final=True), final=True)

    def close(self) -> None:
        loader.close(self.loaded, self.cfg.keep_pins)


def _comm(pid: int) -> str:
    return procfs.text(pid, "comm").strip()


class ProcConnectorSource:
    """exec/fork/exit from the kernel's proc connector (netlink), for when eBPF cannot load.

    Fields only the kernel programs know (cgroup id, fault and swap-in counts) are zero here.
    """

    def __init__(self) -> None:
        from pyroute2 import ProcEventSocket

        self._sock_cls = ProcEventSocket
        self._queue: queue.Queue[Any] = queue.Queue()
        self.enricher = enrich.Enricher()

    def _convert(self, msg: Any) -> Event | None:
        kind, ts = msg["event"].removeprefix("PROC_EVENT_"), msg["timestamp_ns"]
        if kind == "EXEC":
            pid = msg["process_tgid"]
            ev = ExecEvent(ts_ns=ts, pid=pid, ppid=int(procfs.field(pid, "status", "PPid")),
                           uid=int(procfs.field(pid, "status", "Uid")), cgroup_id=0, comm=_comm(pid),
                           filename=enrich.exe(pid))
            return self.enricher.exec(ev)
        if kind == "FORK" and msg["child_pid"] == msg["child_tgid"]:
            pid = msg["child_tgid"]
            return ForkEvent(ts_ns=ts, pid=pid, ppid=msg["parent_tgid"],
                             uid=int(procfs.field(pid, "status", "Uid")), comm=_comm(pid))
        if kind == "EXIT" and msg["process_pid"] == msg["process_tgid"]:
            code = msg["exit_code"]
            return ExitEvent(ts_ns=ts, pid=msg["process_tgid"],
                             exit_code=-(code & 0x7F) if code & 0x7F else (code >> 8) & 0xFF,
                             minflt=0, majflt=0, swapin=0)
        return None

    def start(self, stop: threading.Event, timeout_s: float = 5.0) -> None:
        """Subscribe in a reader thread (pyroute2 wants get() in the thread that made the socket)
        and return once the kernel delivers to it, so that no event after start() is missed."""
        subscribed = threading.Event()
        failure: list[BaseException] = []

        def reader() -> None:
            try:
                sock = self._sock_cls()
                sock.bind()
                sock.control(listen=True)
            except BaseException as exc:  # reported by start()
                failure.append(exc)
                subscribed.set()
                return
            subscribed.set()
            while not stop.is_set():
                for msg in sock.get():
                    self._queue.put(msg)

        threading.Thread(target=reader, name="memo-proc-connector", daemon=True).start()
        if not subscribed.wait(timeout_s) or failure:
            raise RuntimeError(f"proc connector unavailable: {failure[0] if failure else 'timeout'}")

    def run(self, emit: Emit, stop: threading.Event, tick: Callable[[], None] = lambda: None) -> None:
        """Convert what the reader queued and emit it every POLL_MS."""
        while not stop.is_set():
            batch: list[Event] = []
            deadline = time.monotonic() + POLL_MS / 1000
            while (left := deadline - time.monotonic()) > 0:
                try:
                    ev = self._convert(self._queue.get(timeout=left))
                except queue.Empty:
                    break
                if ev is not None:
                    batch.append(ev)
            if batch:
                emit(batch)
            tick()

    def close(self) -> None:
        pass
