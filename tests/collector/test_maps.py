"""Batched reads and deletes of a real BPF hash map (collector/maps.py) agree with bcc's own."""

from __future__ import annotations

import ctypes as ct
import os
import struct

import pytest

from collector import maps

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF maps need root")


@pytest.fixture(scope="module")
def table():
    bcc = pytest.importorskip("bcc")
    b = bcc.BPF(text=b"BPF_HASH(t, u64, u64, 20000);")
    yield b[b"t"]
    b.cleanup()


def _entries(keys: bytes, values: bytes) -> list[tuple[int, int]]:
    pairs = zip(struct.iter_unpack("=Q", keys), struct.iter_unpack("=Q", values), strict=True)
    return [(k, v) for (k,), (v,) in pairs]


def test_batched_read_and_delete_match_the_map(table) -> None:
    table.clear()
    for i in range(9000):  # more than two batches
        table[ct.c_uint64(i)] = ct.c_uint64(i * 3)
    keys, values, n = maps.read(table)
    assert n == 9000 and sorted(_entries(keys, values)) == [(i, i * 3) for i in range(9000)]

    doomed = [k for k, _ in _entries(keys, values) if k % 2 == 0]
    del table[ct.c_uint64(doomed[100])]  # already gone: the batch stops there, the rest still go
    maps.delete(table, b"".join(struct.pack("=Q", k) for k in doomed))
    assert sorted(k.value for k in table.keys()) == list(range(1, 9000, 2))
    maps.delete(table, b"")


def test_an_empty_map_reads_empty(table) -> None:
    table.clear()
    assert maps.read(table) == (b"", b"", 0)
