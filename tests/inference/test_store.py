"""The store's files on the real filesystem: its folder is narrowed to MEMO alone, except a shared one."""

from __future__ import annotations

import stat
from pathlib import Path

from inference.store import Store


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_database_in_a_shared_folder_leaves_the_folder_as_it_is(tmp_path: Path) -> None:
    """A database put straight into /tmp once turned /tmp into 0700 for every user on the machine."""
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir()
    shared.chmod(0o1777)
    own.mkdir()
    own.chmod(0o755)
    for folder in (shared, own):
        Store(folder / "inference.sqlite3").close()
        assert _mode(folder / "inference.sqlite3") == 0o600
    assert _mode(shared) == 0o1777
    assert _mode(own) == 0o700
