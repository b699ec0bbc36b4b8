"""The C records in bpf/memo.h and the contract's Python models agree: same field names, compatible
kinds. Read through bcc's own reflection of the compiled structs, as the collector reads them."""

from __future__ import annotations

import ctypes

import pytest
from pydantic import BaseModel

from collector import loader, records
from memo.config import CollectorConfig
from memo.contract import ExecEvent, ExitEvent, FaultsEvent, ForkEvent, PageCacheEvent, SwapinEvent

pytestmark = [pytest.mark.root, pytest.mark.bpf]
RING_MODEL: dict[str, type[BaseModel]] = {
    "exec_events": ExecEvent, "fork_events": ForkEvent, "exit_events": ExitEvent,
    "page_events": PageCacheEvent, "swap_events": SwapinEvent,
}
# Filled in user space by the collector, not by the kernel.
COLLECTOR_FIELDS = {"type", "exe", "argv", "cgroup_path", "cwd", "wall_ts", "path"}
SIGNED = (ctypes.c_int8, ctypes.c_int16, ctypes.c_int32, ctypes.c_int64)


@pytest.fixture(scope="module")
def compiled():  # noqa: ANN201
    from bcc import BPF

    source, flags = next(loader._swap_sources(None, faults_from_memcg=True))
    b = BPF(text=loader.program_text().encode(), cflags=loader.cflags(CollectorConfig(), flags))
    yield b
    b.cleanup()


def _c_fields(table) -> dict[str, type]:  # noqa: ANN001
    from bcc.table import _get_event_class

    return {n: t for n, t in _get_event_class(table)._fields_ if not n.startswith("pad")}


def _non_negative(model: type[BaseModel], name: str) -> bool:
    return any(getattr(m, "ge", None) is not None and m.ge >= 0 for m in model.model_fields[name].metadata)


@pytest.mark.parametrize("ring", sorted(RING_MODEL))
def test_record_matches_contract(compiled, ring: str) -> None:
    model = RING_MODEL[ring]
    c_fields = _c_fields(compiled[ring.encode()])
    py_fields = set(model.model_fields) - COLLECTOR_FIELDS
    assert set(c_fields) == py_fields, f"{ring}: C {sorted(c_fields)} vs Python {sorted(py_fields)}"
    for name, ctype in c_fields.items():
        annotation = model.model_fields[name].annotation
        if issubclass(ctype, ctypes.Array):
            assert annotation is str, f"{ring}.{name}: char array must be str"
        else:
            assert annotation is int, f"{ring}.{name}: integer must be int"
            assert _non_negative(model, name) != (ctype in SIGNED), f"{ring}.{name}: signedness vs ge"
    assert ring in records.CONVERTERS


def test_counters_match_faults_and_exit(compiled) -> None:
    """faults and exit records are built from struct memo_counts (faults = minor + major)."""
    counts = {n for n, _ in compiled[b"counts"].Leaf._fields_}
    assert counts == {"faults", "majflt", "swapin"}
    assert {"minflt", "majflt"} <= set(FaultsEvent.model_fields)
    assert {"minflt", "majflt", "swapin"} <= set(ExitEvent.model_fields)


def test_usage_map_layout_matches_the_bulk_reader(compiled) -> None:
    """The sweep unpacks the `usage` map's raw structs with records.USAGE_KEY / USAGE_VALUE."""
    table = compiled[b"usage"]
    for struct_fmt, ctype, names in ((records.USAGE_KEY, table.Key, ["ino", "chunk", "pid", "dev"]),
                                     (records.USAGE_VALUE, table.Leaf, ["first_ns", "bits"])):
        assert [n for n, _ in ctype._fields_] == names
        assert struct_fmt.size == ctypes.sizeof(ctype)
        probe = ctype(*range(1, len(names) + 1))
        assert struct_fmt.unpack(bytes(probe)) == tuple(range(1, len(names) + 1))
