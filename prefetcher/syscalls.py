"""The few Linux system calls the prefetcher needs that Python's os module lacks, through ctypes.

Numbers are x86_64 (measured on this machine kind: kernel 6.18). Every call raises OSError with the
kernel's errno, so callers can fall back (cachestat -> mincore) or skip one pid without guessing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from dataclasses import dataclass

SYS_IOPRIO_SET = 251
SYS_PIDFD_OPEN = 434
SYS_PROCESS_MADVISE = 440
SYS_CACHESTAT = 451
SYS_OPENAT2 = 437

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
O_PATH = 0o10000000
AT_FDCWD = -100

MADV_COLD = 20
MADV_PAGEOUT = 21
MADV_WILLNEED = 3
MADV_COLLAPSE = 25

IOPRIO_CLASS_IDLE = 3
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_SHIFT = 13

PAGE_SIZE = mmap.PAGESIZE
HUGE_PAGE_SIZE = 2 << 20  # x86_64 PMD
IOV_MAX = 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.readahead.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_size_t]
_libc.readahead.restype = ctypes.c_ssize_t

_MAP_FAILED = ctypes.c_void_p(-1).value


def _check(ret: int) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class CacheStat:
    """Page-cache state of a byte range, in pages (what cachestat(2) reports)."""

    nr_cache: int
    nr_dirty: int = 0
    nr_writeback: int = 0
    nr_evicted: int = 0
    nr_recently_evicted: int = 0


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_hows: dict[tuple[int, int], _OpenHow] = {}  # built once: a plan opens thousands of files
_AT_FDCWD = ctypes.c_int(AT_FDCWD)
_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))


def openat2(path: str, flags: int, resolve: int) -> int:
    """openat2(2) from the root directory's view of an absolute path: `resolve` says which links
    the walk may cross (RESOLVE_NO_SYMLINKS: none, in any component)."""
    how = _hows.get((flags, resolve))
    if how is None:
        how = _hows[(flags, resolve)] = _OpenHow(flags=flags, mode=0, resolve=resolve)
    return _check(_libc.syscall(SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), ctypes.byref(how), _HOW_SIZE))


def cachestat(fd: int, offset: int = 0, length: int = 0) -> CacheStat:
    """cachestat(2) over [offset, offset+length) (length 0 = to the end): one syscall, no mapping."""
    rng = _CachestatRange(offset, length)
    out = _Cachestat()
    _check(_libc.syscall(SYS_CACHESTAT, ctypes.c_int(fd), ctypes.byref(rng), ctypes.byref(out),
                         ctypes.c_uint(0)))
    return CacheStat(out.nr_cache, out.nr_dirty, out.nr_writeback, out.nr_evicted, out.nr_recently_evicted)


def mincore(fd: int, offset: int, length: int) -> bytes:
    """One byte per page of [offset, offset+length), bit 0 set when resident. Maps the file read-only
    without touching it (touching would fault pages in and defeat the measurement)."""
    start = offset - offset % PAGE_SIZE
    size = length + (offset - start)
    if size <= 0:
        return b""
    addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
    if addr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    try:
        npages = (size + PAGE_SIZE - 1) // PAGE_SIZE
        vec = (ctypes.c_ubyte * npages)()
        _check(_libc.mincore(addr, size, vec))
        return bytes(vec)
    finally:
        _libc.munmap(addr, size)


_cachestat_ok: bool | None = None


def resident_pages(fd: int, offset: int, length: int) -> int:
    """Resident pages of a range: cachestat(2) where the kernel has it (>= 6.5), else mincore(2)."""
    global _cachestat_ok
    if _cachestat_ok is not False:
        try:
            n = cachestat(fd, offset, length).nr_cache
            _cachestat_ok = True
            return n
        except OSError as exc:
            if _cachestat_ok or exc.errno not in (38, 1):  # ENOSYS, EPERM (seccomp): fall back for good
                raise
            _cachestat_ok = False
    return sum(b & 1 for b in mincore(fd, offset, length))


def readahead(fd: int, offset: int, length: int) -> None:
    """Start reading [offset, offset+length) into the page cache without waiting for it.

    The kernel caps one readahead(2) to the device's readahead window (force_page_cache_ra), so a long
    range is issued in chunks; pages already cached are skipped by the kernel."""
    chunk = 128 * 1024
    end = offset + length
    pos = offset
    while pos < end:
        n = min(chunk, end - pos)
        try:
            _check(_libc.readahead(fd, pos, n))
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: not a readahead-capable file; fadvise does the same job
                raise
            os.posix_fadvise(fd, pos, n, os.POSIX_FADV_WILLNEED)
        pos += n


def drop_file_cache(fd: int, offset: int = 0, length: int = 0) -> None:
    """posix_fadvise DONTNEED: evict a file's clean pages (tests and benches make a cold start with it)."""
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def set_idle_io_priority() -> None:
    """ioprio_set(IOPRIO_CLASS_IDLE) for this process, so prefetch I/O yields to everyone else's."""
    _check(_libc.syscall(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT))


def pidfd_open(pid: int) -> int:
    """A file descriptor for the process pid; stays valid (and stale-safe) if the pid is reused."""
    return _check(_libc.syscall(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0)))


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def process_madvise(pidfd: int, ranges: list[tuple[int, int]], advice: int) -> int:
    """process_madvise(2) over (start, length) ranges of another process; returns bytes advised.

    Issued IOV_MAX ranges at a time; needs CAP_SYS_NICE (and ptrace access) over the target."""
    done = 0
    for i in range(0, len(ranges), IOV_MAX):
        part = ranges[i:i + IOV_MAX]
        iov = (_Iovec * len(part))(*[_Iovec(start, length) for start, length in part])
        done += _check(_libc.syscall(SYS_PROCESS_MADVISE, ctypes.c_int(pidfd), iov,
                                     ctypes.c_size_t(len(part)), ctypes.c_int(advice), ctypes.c_uint(0)))
    return done
