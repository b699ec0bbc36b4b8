"""What the collector drops after compiling: read-only compiler mappings without private pages only."""

from __future__ import annotations

from collector.trim import droppable

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 08:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               1024 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
7f0000100000-7f0000900000 r-xp 00100000 08:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               8192 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
7f0000900000-7f0000a00000 r--p 00900000 08:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               1024 kB
Anonymous:           512 kB
VmFlags: rd mr mw me ac sd
7f0000a00000-7f0000a10000 rw-p 00a00000 08:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:                 64 kB
Anonymous:            64 kB
VmFlags: rd wr mr mw me ac sd
7f0001000000-7f0001100000 r-xp 00000000 08:01 12 /usr/lib/llvm-14/lib/libclang-cpp.so.14
Size:               1024 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
7f0002000000-7f0002100000 r-xp 00000000 08:01 13 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
Size:               1024 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
"""


def test_only_clean_read_only_compiler_mappings_are_dropped() -> None:
    spans = droppable(SMAPS)
    assert spans == [(0x7F0000000000, 0x7F0000100000), (0x7F0000100000, 0x7F0000900000),
                     (0x7F0001000000, 0x7F0001100000)]  # not RELRO with relocated pages, .data, or libbcc

