"""Shared test fixtures. Kernel-facing tests use one marker each and skip only with a printed reason
when this kernel or user truly cannot do what they test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def _bpf_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for eBPF"
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return f"bcc is not importable ({exc}); run `make setup`"
    from collector import kernelfs

    try:  # a minimal VM does not mount tracefs; the collector mounts it itself, and so do the tests
        kernelfs.ensure_tracefs()
    except Exception as exc:
        return f"no tracefs on this kernel ({exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    not_root = None if os.geteuid() == 0 else "needs root"
    no_bpf = _bpf_unavailable()
    for item in items:
        if "root" in item.keywords and not_root:
            item.add_marker(pytest.mark.skip(reason=not_root))
        if "bpf" in item.keywords and no_bpf:
            item.add_marker(pytest.mark.skip(reason=no_bpf))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (CI clones the repo with shared/ beside it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is missing (the project's public traces sit beside the checkout)")
    return SHARED_DATA
