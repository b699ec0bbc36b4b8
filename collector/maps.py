"""Reading and deleting a BPF hash map in batches (BPF_MAP_LOOKUP_BATCH / BPF_MAP_DELETE_BATCH).

bcc's own `items()` costs two syscalls and two ctypes objects per entry, and the `usage` map holds
thousands of entries after a launch: sweeping it was a quarter of the collector's CPU in a replayed
session. Here a read is one syscall per BATCH entries and hands back the raw C structs, back to back,
for `struct.iter_unpack` to read in one pass. bcc 0.26's `items_lookup_batch()` passes one ctypes
object as both the batch cursor and the count, so these calls go to libbcc's wrappers directly.
Kernels without batch operations on the map get bcc's per-entry path.
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
from typing import Any

from bcc.libbcc import lib

log = logging.getLogger(__name__)
ENOTSUPP = 524  # the kernel's own errno for "no batch operations for this map type"
BATCH = 4096
"""Entries fetched per syscall (160 KB of buffers for the `usage` map)."""


def read(table: Any) -> tuple[bytes, bytes, int]:
    """Every entry of a hash map: (keys, values, n), each the n C structs back to back."""
    try:
        return _read_batched(table)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, ENOTSUPP):
            raise
        log.debug("batch lookup unsupported (%s): per-entry reads", exc)
        items = table.items()
        return b"".join(bytes(k) for k, _ in items), b"".join(bytes(v) for _, v in items), len(items)


def _read_batched(table: Any) -> tuple[bytes, bytes, int]:
    ksize, vsize = ct.sizeof(table.Key), ct.sizeof(table.Leaf)
    keys, values = (table.Key * BATCH)(), (table.Leaf * BATCH)()
    cursor, count = ct.c_uint32(0), ct.c_uint32(0)
    kparts: list[bytes] = []
    vparts: list[bytes] = []
    total = 0
    first = True
    while True:
        count.value = BATCH
        res = lib.bpf_lookup_batch(table.map_fd, None if first else ct.byref(cursor), ct.byref(cursor),
                                   ct.byref(keys), ct.byref(values), ct.byref(count))
        err = (ct.get_errno() or -res) if res != 0 else 0
        if res != 0 and err != errno.ENOENT:
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
        n = count.value
        kparts.append(ct.string_at(keys, n * ksize))
        vparts.append(ct.string_at(values, n * vsize))
        total += n
        if res != 0:  # ENOENT: that was the last bucket
            return b"".join(kparts), b"".join(vparts), total
        first = False


def delete(table: Any, keys: bytes) -> None:
    """Delete the keys (C structs back to back, as `read` gives them). A key already gone stops the
    kernel's batch there; the rest then go one by one."""
    ksize = ct.sizeof(table.Key)
    for start in range(0, len(keys), BATCH * ksize):
        part = keys[start:start + BATCH * ksize]
        n = len(part) // ksize
        count = ct.c_uint32(n)
        buf = ct.create_string_buffer(part, len(part))
        if lib.bpf_delete_batch(table.map_fd, buf, ct.byref(count)) == 0:
            continue
        for i in range(count.value, n):
            try:
                del table[table.Key.from_buffer_copy(part, i * ksize)]
            except KeyError:
                pass
