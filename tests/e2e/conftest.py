"""One MEMO deployment for the whole e2e module (starting it costs seconds; the tests run in order:
up, use, kill, down)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Memo, ScriptedUser


@pytest.fixture(scope="module")
def memo() -> Iterator[Memo]:
    root = Path(tempfile.mkdtemp(prefix="memo-e2e-"))
    root.chmod(0o755)  # as /run and /var/lib are: inference (the memo user) reaches its folder
    m = Memo(root)
    try:
        yield m
    finally:
        m.force_cleanup()


@pytest.fixture(scope="module")
def user() -> Iterator[ScriptedUser]:
    u = ScriptedUser()
    try:
        yield u
    finally:
        u.cleanup()
