"""Kernel records (bcc-reflected ctypes from bpf/memo.h) -> the contract's event models.

One converter per ring buffer; the field names are the C struct's, checked against memo/contract.py
by tests/collector/test_contract.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from memo.contract import MAX_RANGE_PAGES, ExecEvent, ExitEvent, ForkEvent, PageCacheEvent, SwapinEvent


def _str(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def exec_event(r: Any) -> ExecEvent:
    return ExecEvent(ts_ns=r.ts_ns, pid=r.pid, ppid=r.ppid, uid=r.uid, cgroup_id=r.cgroup_id,
                     comm=_str(r.comm), filename=_str(r.filename))


def fork_event(r: Any) -> ForkEvent:
    return ForkEvent(ts_ns=r.ts_ns, pid=r.pid, ppid=r.ppid, uid=r.uid, comm=_str(r.comm))


def exit_event(r: Any) -> ExitEvent:
    return ExitEvent(ts_ns=r.ts_ns, pid=r.pid, exit_code=r.exit_code, minflt=r.minflt,
                     majflt=r.majflt, swapin=r.swapin)


def pagecache_event(r: Any) -> PageCacheEvent:
    return PageCacheEvent(ts_ns=r.ts_ns, pid=r.pid, dev=r.dev, ino=r.ino, index=r.index,
                          nr_pages=min(max(1, r.nr_pages), MAX_RANGE_PAGES))


USAGE_KEY = struct.Struct("=QQII")  # struct memo_usage_key: ino, chunk, pid, dev
USAGE_VALUE = struct.Struct("=QQ")  # struct memo_usage: first_ns, bits
"""The `usage` map's C structs as the sweep reads them in bulk (checked against bcc's view at load)."""


def usage_events(entries: Iterable[tuple[int, int, int, int, int, int]], chunk_shift: int = 6
                 ) -> list[PageCacheEvent]:
    """`usage` map entries (pid, dev, ino, chunk, first_ns, bits: a chunk's bitmap of used pages) -> a
    pagecache record per run of used pages, a run that goes on into the next chunk of the same file and
    process joined to it (up to MAX_RANGE_PAGES): a file used whole is one record, not one per chunk
    (each record is built, sent, parsed and stored once more)."""
    runs: list[list[int]] = []  # [pid, dev, ino, index, nr_pages, first_ns]
    for pid, dev, ino, chunk, first_ns, bits in sorted(entries, key=lambda e: e[:4]):
        base, i = chunk << chunk_shift, 0
        while bits:
            if not bits & 1:
                skip = (bits & -bits).bit_length() - 1  # zeros up to the next used page
                bits >>= skip
                i += skip
                continue
            run = (~bits & (bits + 1)).bit_length() - 1  # ones in a row from here
            last = runs[-1] if runs else None
            if last is not None and last[:3] == [pid, dev, ino] and last[3] + last[4] == base + i \
                    and last[4] + run <= MAX_RANGE_PAGES:
                last[4] += run
                last[5] = min(last[5], first_ns)
            else:
                runs.append([pid, dev, ino, base + i, run, first_ns])
            bits >>= run
            i += run
    return [PageCacheEvent(ts_ns=ts, pid=pid, dev=dev, ino=ino, index=index, nr_pages=nr)
            for pid, dev, ino, index, nr, ts in runs]


def swapin_event(r: Any) -> SwapinEvent:
    return SwapinEvent(ts_ns=r.ts_ns, pid=r.pid, memcg_id=r.memcg_id, count=r.count)


# ring buffer -> converter (open_events is handled by the enricher, not converted)
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "exec_events": exec_event,
    "fork_events": fork_event,
    "exit_events": exit_event,
    "page_events": pagecache_event,
    "swap_events": swapin_event,
}


def open_record(r: Any) -> tuple[int, int, tuple[int, int] | None, str]:
    """(pid, fd, (dev, ino) of the opened file or None when the kernel could not read it, filename) of
    a memo_open record."""
    return r.pid, r.fd, ((r.dev, r.ino) if r.ino else None), _str(r.filename)
