"""Give back what bcc's compile step left resident once the programs are loaded.

Compiling bpf/memo.c runs clang and LLVM inside this process: ~85 MB of their code pages and ~50 MB of
heap stay resident afterwards although the collector never compiles again. The freed heap goes back
with malloc_trim; the code pages are dropped from this process's page tables with MADV_DONTNEED —
safe for mappings that are read-only and hold no private (relocated, copy-on-write) page, because the
kernel reads such a page again from the file if it is ever touched.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from pathlib import Path

from memo import helpers

log = logging.getLogger(__name__)

MADV_DONTNEED = 4
COMPILER_LIBS = ("libLLVM", "libclang")
"""Basenames (prefixes) of the libraries only the compile step uses."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def droppable(smaps: str, prefixes: tuple[str, ...] = COMPILER_LIBS) -> list[tuple[int, int]]:
    """(start, end) of the read-only, copy-on-write-free mappings of ``prefixes`` in a smaps text."""
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            current = None
            name = Path(head[5].strip()).name if len(head) == 6 else ""
            if "w" not in head[1] and name.startswith(prefixes):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                current = (lo, hi)
        elif current is not None and head[:1] == ["Anonymous:"] and int(head[1]) == 0:
            out.append(current)
            current = None
    return out


def return_compile_memory() -> int:
    """Trim the heap and drop the compiler's code pages; the bytes of mappings dropped."""
    before = helpers.pss_kb()
    gc.collect()
    libc = _libc()
    libc.malloc_trim(0)
    try:
        spans = droppable(Path("/proc/self/smaps").read_text())
    except OSError as exc:
        log.debug("cannot read /proc/self/smaps: %s", exc)
        return 0
    dropped = 0
    for lo, hi in spans:
        if libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0:
            dropped += hi - lo
    after = helpers.pss_kb()
    log.info("returned %d MB of the compile step's memory (PSS now %d MB)", (before - after) // 1024,
             after // 1024)
    return dropped
