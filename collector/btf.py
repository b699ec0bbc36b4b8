"""Facts about the running kernel read from its BTF (/sys/kernel/btf/vmlinux) at start.

Enum values (PSWPIN, PGMAJFAULT) and struct member offsets change between kernel builds, and the
headers bcc compiles against may be another version's, so MEMO never hard-codes them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
_TYPE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'")
_ENUM_MEMBER = re.compile(r"^\t'(\w+)' val=(-?\d+)")
_STRUCT_MEMBER = re.compile(r"^\t'(\w+)' type_id=\d+ bits_offset=(\d+)")


class BTFError(RuntimeError):
    """The kernel's BTF is missing or lacks what MEMO needs."""


@dataclass
class KernelBTF:
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    structs: dict[str, dict[str, int]] = field(default_factory=dict)  # member -> byte offset

    def enum_value(self, enum: str, name: str) -> int:
        try:
            return self.enums[enum][name]
        except KeyError:
            raise BTFError(f"enum {enum} has no {name} in {VMLINUX}") from None

    def offset(self, struct: str, member: str) -> int:
        try:
            return self.structs[struct][member]
        except KeyError:
            raise BTFError(f"struct {struct} has no member {member} in {VMLINUX}") from None


def parse(text: str, enums: set[str], structs: set[str]) -> KernelBTF:
    """Parse `bpftool btf dump` (raw format) for the named enums and structs only."""
    out = KernelBTF()
    current: dict[str, int] | None = None
    is_struct = False
    for line in text.splitlines():
        if line.startswith("["):
            current = None
            m = _TYPE.match(line)
            if not m:
                continue
            kind, name = m.group(2), m.group(3)
            if kind in ("ENUM", "ENUM64") and name in enums and name not in out.enums:
                current, is_struct = out.enums.setdefault(name, {}), False
            elif kind == "STRUCT" and name in structs and name not in out.structs:
                current, is_struct = out.structs.setdefault(name, {}), True
        elif current is not None:
            m = (_STRUCT_MEMBER if is_struct else _ENUM_MEMBER).match(line)
            if m:
                value = int(m.group(2))
                current[m.group(1)] = value // 8 if is_struct else value
    return out


@cache
def kernel() -> KernelBTF:
    """The running kernel's enums and structs MEMO's programs use, read once per process."""
    if not VMLINUX.exists():
        raise BTFError(f"{VMLINUX} is missing: this kernel was built without BTF")
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    try:
        text = subprocess.run([bpftool, "btf", "dump", "file", str(VMLINUX)], check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BTFError(f"cannot dump {VMLINUX} with bpftool: {exc}") from exc
    return parse(text, enums={"vm_event_item"},
                 structs={"task_struct", "mem_cgroup", "cgroup_subsys_state", "cgroup", "kernfs_node",
                          "address_space", "inode", "super_block", "files_struct", "fdtable", "file"})
