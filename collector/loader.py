"""Compile bpf/memo.c with bcc, attach its programs, pin programs and maps under the pin dir.

Everything the C needs from this kernel is passed as -D flags: struct member offsets and the
vm_event_item values from BTF, which optional tracepoint fields exist, the swap-in source (memcg
tracepoint, else fentry, else kprobe, else none) and the fault source (memcg tracepoint when it is
the swap source and the config allows, else exceptions:page_fault_user); the log says which.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpf import SOURCE_DIR
from collector import btf, kernelfs, trim
from memo.config import CollectorConfig

log = logging.getLogger(__name__)

# name of the BPF function -> tracepoint it is attached to
TRACEPOINTS = {
    "memo_exec": "sched:sched_process_exec",
    "memo_fork": "task:task_newtask",
    "memo_exit": "sched:sched_process_exit",
    "memo_openat_enter": "syscalls:sys_enter_openat",
    "memo_openat_exit": "syscalls:sys_exit_openat",
}
# Hot paths (they fire on every page fault or file read) attach raw: no per-event record formatting.
RAW_TRACEPOINTS = {"memo_fault": "page_fault_user"}
# What a launch uses of its files (pagecache.c): tracepoint group "filemap".
USAGE_TRACEPOINTS = {"memo_use_read": "mm_filemap_get_pages", "memo_use_map": "mm_filemap_map_pages",
                     "memo_use_fault": "mm_filemap_fault"}
RINGS = ("exec_events", "fork_events", "exit_events", "page_events", "swap_events", "open_events")
PINNED_MAPS = ("counts", "launch", "lost", "swap_pending", "usage")
# The kernel's swap-in function, newest name first (fallback sources attach to it).
SWAP_FUNCS = ("swap_read_folio", "swap_readpage")
SWAP_EMIT_NS = 100_000_000
FAULTS_FROM_MEMCG = "-DMEMO_FAULTS_FROM_MEMCG"  # cflag: memo_memcg counts faults, memo_fault is not built
FAULT_BATCH = 32  # faults counted per CPU before they are added to the shared `counts` hash
USAGE_CHUNKS = 4  # a used range spanning more 64-page chunks than this is sent as one record
USAGE_ENTRIES = 131072  # (pid, file, chunk) entries awaiting the collector's drain (~11 MB of kernel memory)


class LoadError(RuntimeError):
    """eBPF cannot be used here (no root, no BPF, no headers): the caller falls back."""


class PinsInUse(RuntimeError):
    """Another running collector owns the pin dir: starting would tear its pins down."""


@dataclass
class Loaded:
    bpf: Any  # bcc.BPF
    swap_source: str
    fault_source: str = "page_fault_user"
    pins: list[Path] = field(default_factory=list)
    pin_dir: Path | None = None
    lock: int | None = None  # fd holding the pin dir's lock


LOCK_DIR = Path("/run/lock")


def lock_path(pin_dir: Path) -> Path:
    return LOCK_DIR / ("memo-pins" + str(pin_dir).replace("/", "-") + ".lock")


def lock_pin_dir(pin_dir: Path) -> int:
    """Hold an exclusive lock naming pin_dir for as long as this process runs (the kernel drops it
    when the process dies, so a crashed collector never blocks the next one)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(pin_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise PinsInUse(f"{pin_dir} belongs to a running collector (pid {owner})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _pages(n: int) -> int:
    """bcc needs a power-of-two page count."""
    p = 16
    while p < n:
        p *= 2
    return p


def _swap_sources(force: str | None, faults_from_memcg: bool) -> Iterator[tuple[str, list[str]]]:
    """Candidate swap-in sources, best first, with their cflags: memcg tracepoint (counting faults
    too if faults_from_memcg), fentry, kprobe; "none" last (no swap-in records, everything else
    still works)."""
    from bcc import BPF

    for source in [force] if force else ["tracepoint", "fentry", "kprobe"]:
        if source == "tracepoint":
            if not BPF.tracepoint_exists("memcg", "count_memcg_events"):
                log.warning("swap source tracepoint: memcg:count_memcg_events is missing")
                continue
            kb = btf.kernel()
            yield source, ["-DMEMO_SWAP_TRACEPOINT",
                           f"-DMEMO_PSWPIN={kb.enum_value('vm_event_item', 'PSWPIN')}",
                           f"-DMEMO_PGMAJFAULT={kb.enum_value('vm_event_item', 'PGMAJFAULT')}",
                           f"-DMEMO_OFF_MEMCG_CSS={kb.offset('mem_cgroup', 'css')}",
                           f"-DMEMO_OFF_CSS_CGROUP={kb.offset('cgroup_subsys_state', 'cgroup')}",
                           f"-DMEMO_OFF_CGROUP_KN={kb.offset('cgroup', 'kn')}",
                           f"-DMEMO_OFF_KERNFS_ID={kb.offset('kernfs_node', 'id')}",
                           *([FAULTS_FROM_MEMCG,
                              f"-DMEMO_PGFAULT={kb.enum_value('vm_event_item', 'PGFAULT')}"]
                             if faults_from_memcg else [])]
            continue
        func = _swap_func()
        if func is None:
            log.warning("swap source %s: no swap-in function (%s) in /proc/kallsyms", source,
                        "/".join(SWAP_FUNCS))
        elif source == "fentry" and not BPF.support_kfunc():
            log.warning("swap source fentry: this kernel has no fentry support")
        elif source == "kprobe" and not Path("/sys/kernel/tracing/kprobe_events").exists():
            log.warning("swap source kprobe: this kernel has no kprobes (CONFIG_KPROBES off)")
        else:
            yield source, [f"-DMEMO_SWAP_{'KFUNC' if source == 'fentry' else 'KPROBE'}",
                           f"-DMEMO_SWAP_FUNC={func}"]
    yield "none", []


def _swap_func() -> str | None:
    try:
        symbols = {line.split()[2] for line in Path("/proc/kallsyms").read_text().splitlines()}
    except OSError:
        return None
    return next((f for f in SWAP_FUNCS if f in symbols), None)


def cflags(cfg: CollectorConfig, swap_flags: list[str]) -> list[str]:
    kb = btf.kernel()
    flags = [
        f"-I{SOURCE_DIR}",
        f"-DMEMO_RINGBUF_PAGES={_pages(cfg.ringbuf_pages)}",
        f"-DMEMO_LAUNCH_WINDOW_NS={int(cfg.launch_window_s * 1e9)}ULL",
        f"-DMEMO_SWAP_EMIT_NS={SWAP_EMIT_NS}ULL",
        f"-DMEMO_FAULT_BATCH={FAULT_BATCH}",
        f"-DMEMO_USAGE_CHUNKS={USAGE_CHUNKS}",
        f"-DMEMO_USAGE_ENTRIES={USAGE_ENTRIES}",
        f"-DMEMO_OFF_MAPPING_HOST={kb.offset('address_space', 'host')}",
        f"-DMEMO_OFF_INODE_INO={kb.offset('inode', 'i_ino')}",
        f"-DMEMO_OFF_INODE_SB={kb.offset('inode', 'i_sb')}",
        f"-DMEMO_OFF_INODE_RDEV={kb.offset('inode', 'i_rdev')}",
        f"-DMEMO_OFF_INODE_SIZE={kb.offset('inode', 'i_size')}",
        f"-DMEMO_OFF_SB_DEV={kb.offset('super_block', 's_dev')}",
        f"-DMEMO_OFF_REAL_PARENT={kb.offset('task_struct', 'real_parent')}",
        f"-DMEMO_OFF_TGID={kb.offset('task_struct', 'tgid')}",
        f"-DMEMO_OFF_EXIT_CODE={kb.offset('task_struct', 'exit_code')}",
        f"-DMEMO_OFF_TASK_FILES={kb.offset('task_struct', 'files')}",
        f"-DMEMO_OFF_FILES_FDT={kb.offset('files_struct', 'fdt')}",
        f"-DMEMO_OFF_FDTABLE_MAX_FDS={kb.offset('fdtable', 'max_fds')}",
        f"-DMEMO_OFF_FDTABLE_FD={kb.offset('fdtable', 'fd')}",
        f"-DMEMO_OFF_FILE_INODE={kb.offset('file', 'f_inode')}",
        *swap_flags,
    ]
    if "group_dead" in kernelfs.tracepoint_format("sched", "sched_process_exit"):
        flags.append("-DMEMO_EXIT_HAS_GROUP_DEAD")
    return flags


_CONCERN = re.compile(r'^#include "(\w+\.c)"\s*$', re.M)


def program_text() -> str:
    """bpf/memo.c with its concern files inlined.

    bcc generates tracepoint argument structs only for functions in the main file, so the concern
    files are spliced in here; headers stay ordinary #includes found through -I.
    """
    main = (SOURCE_DIR / "memo.c").read_text()
    return _CONCERN.sub(lambda m: (SOURCE_DIR / m.group(1)).read_text(), main)


def _compile_and_attach(cfg: CollectorConfig, source: str, swap_flags: list[str]) -> Any:
    from bcc import BPF

    b = BPF(text=program_text().encode(), cflags=cflags(cfg, swap_flags))  # fentry attaches here
    try:
        for fn, tp in TRACEPOINTS.items():
            b.attach_tracepoint(tp=tp, fn_name=fn)
        for fn, tp in RAW_TRACEPOINTS.items():
            if fn == "memo_fault" and FAULTS_FROM_MEMCG in swap_flags:
                continue  # memo_memcg counts them
            b.attach_raw_tracepoint(tp=tp, fn_name=fn)
        for fn, tp in USAGE_TRACEPOINTS.items():
            if BPF.tracepoint_exists("filemap", tp):
                b.attach_raw_tracepoint(tp=tp, fn_name=fn)
            else:
                log.warning("launch profiles: tracepoint filemap:%s is missing on this kernel; "
                            "profiles will lack what it reports", tp)
        if source == "tracepoint":
            b.attach_raw_tracepoint(tp="count_memcg_events", fn_name="memo_memcg")
        elif source == "kprobe":
            b.attach_kprobe(event=_swap_func(), fn_name="memo_swap_kprobe")
    except Exception:
        b.cleanup()
        raise
    return b


def load(cfg: CollectorConfig, force_swap_source: str | None = None) -> Loaded:
    """Compile, attach and pin. Raises LoadError when eBPF is unusable here."""
    if os.geteuid() != 0:
        raise LoadError("eBPF needs root")
    lock = lock_pin_dir(cfg.bpf_pin_dir)
    try:
        kernelfs.ensure_tracefs()
        import bcc  # noqa: F401
    except Exception as exc:  # ImportError, mount failure
        os.close(lock)
        raise LoadError(f"bcc/tracefs unavailable: {exc}") from exc
    b, source = None, "none"
    try:
        for source, swap_flags in _swap_sources(force_swap_source, cfg.fault_source == "memcg"):
            try:
                b = _compile_and_attach(cfg, source, swap_flags)
                break
            except Exception as exc:
                if source == "none":
                    raise
                log.warning("swap source %s failed to load (%s); trying the next", source, exc)
    except Exception as exc:
        os.close(lock)
        raise LoadError(f"cannot load bpf/memo.c: {exc}") from exc
    if source == "none":
        log.warning("swap-ins: no source on this kernel (no memcg tracepoint, fentry or kprobe)")
    else:
        log.info("swap-ins and major faults from %s", {
            "tracepoint": "tracepoint memcg:count_memcg_events",
            "fentry": f"fentry on {_swap_func()}", "kprobe": f"kprobe on {_swap_func()}"}[source])
    faults = "memcg" if FAULTS_FROM_MEMCG in swap_flags else "page_fault_user"
    log.info("page faults counted on %s", {"memcg": "memcg:count_memcg_events PGFAULT",
                                           "page_fault_user": "exceptions:page_fault_user"}[faults])
    loaded = Loaded(bpf=b, swap_source=source, fault_source=faults, lock=lock)
    pin(loaded, cfg.bpf_pin_dir)
    try:
        trim.return_compile_memory()  # the compiler's memory is never needed again
    except Exception as exc:  # an optimisation: never a reason not to trace
        log.warning("could not return the compile step's memory: %s", exc)
    return loaded


def _obj_pin(fd: int, path: Path) -> None:
    from bcc.libbcc import lib

    fn = lib.bpf_obj_pin
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p]
    fn.restype = ctypes.c_int
    if fn(fd, str(path).encode()) != 0:
        raise OSError(ctypes.get_errno(), f"bpf_obj_pin {path} failed")


def pin(loaded: Loaded, pin_dir: Path) -> None:
    """Pin maps as <dir>/<map> and programs as <dir>/prog_<name> (a stale dir is replaced)."""
    kernelfs.ensure_bpffs()
    if pin_dir.exists():
        log.warning("removing stale pins in %s", pin_dir)
        shutil.rmtree(pin_dir)
    pin_dir.mkdir(parents=True)
    loaded.pin_dir = pin_dir
    b = loaded.bpf
    for name in PINNED_MAPS:
        path = pin_dir / name
        _obj_pin(b[name].map_fd, path)
        loaded.pins.append(path)
    for name, func in b.funcs.items():
        path = pin_dir / f"prog_{name.decode() if isinstance(name, bytes) else name}"
        _obj_pin(func.fd, path)
        loaded.pins.append(path)
    log.info("pinned %d maps and programs under %s", len(loaded.pins), pin_dir)


def unpin(loaded: Loaded) -> None:
    for path in loaded.pins:
        path.unlink(missing_ok=True)
    if loaded.pin_dir and loaded.pin_dir.exists():
        try:
            loaded.pin_dir.rmdir()
        except OSError:
            log.warning("pin dir %s is not empty; left in place", loaded.pin_dir)
    loaded.pins.clear()


def close(loaded: Loaded, keep_pins: bool) -> None:
    """Detach everything; remove the pins unless asked to keep them."""
    if not keep_pins:
        unpin(loaded)
    else:
        log.info("keeping pins under %s", loaded.pin_dir)
    loaded.bpf.cleanup()
    if loaded.lock is not None:
        os.close(loaded.lock)
        loaded.lock = None
