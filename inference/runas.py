"""Inference started as root (`memo up`, a manual `sudo memo-inference`) binds its sockets and writes
its port file as root, then becomes ``inference.run_as`` (the memo user) for good, before it opens the
store or imports a model: a flaw in the code that parses every user's events then runs with no
privilege, as it does under systemd (User=memo).

What the user owns: <data_dir>/inference/ (0700: the database, the models' state, HOME for the
libraries' caches). <data_dir> itself stays root's, 0711, so memo can pass through to its own folder but
cannot list or touch the collector's spool or the prefetcher's state beside it. A database left by an
older MEMO at <data_dir>/inference.sqlite3 moves into the new folder once.

When the user does not exist, or cannot reach its folder or the code (a data dir under a private
parent), inference stays root and says why (the log and /healthz's ``runs_as_root``).
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from memo import helpers

log = logging.getLogger(__name__)

LEGACY_SUFFIXES = ("", "-wal", "-shm")
"""The database files an older MEMO kept directly in <data_dir>."""


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int


def target(name: str) -> Identity | None:
    """The user to become, or None when there is none to become (not root, none named, none such)."""
    if os.geteuid() != 0 or not name:
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return Identity(name, pw.pw_uid, pw.pw_gid) if pw.pw_uid != 0 else None


def migrate(data_dir: Path, own_dir: Path, db_name: str) -> None:
    """Move an older MEMO's database from <data_dir> into <data_dir>/inference (once: never over a
    database already there)."""
    old = data_dir / db_name
    if (own_dir / db_name).exists() or not old.is_file() or old.is_symlink():
        return
    for suffix in LEGACY_SUFFIXES:
        src = data_dir / (db_name + suffix)
        if src.is_file() and not src.is_symlink():
            os.replace(src, own_dir / src.name)
    log.info("moved the database %s into %s", old, own_dir)


def prepare(data_dir: Path, own_dir: Path, who: Identity) -> None:
    """As root: <data_dir> root's and passable (0711), <data_dir>/inference and what is in it the
    user's. Links are never followed (lchown); a file with a second hard link is left as it is, so a
    link planted to a root file cannot be handed over."""
    data_dir.mkdir(parents=True, exist_ok=True)
    st = data_dir.lstat()
    if st.st_uid == 0 and stat.S_ISDIR(st.st_mode):
        os.chmod(data_dir, 0o711)
    own_dir.mkdir(mode=0o700, exist_ok=True)
    for top, dirs, files in os.walk(own_dir):
        for name in (*dirs, *files):
            _hand_over(Path(top) / name, who)
    _hand_over(own_dir, who)
    os.chmod(own_dir, 0o700, follow_symlinks=False)


def _hand_over(path: Path, who: Identity) -> None:
    st = path.lstat()
    if st.st_uid == who.uid:
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        log.warning("%s has %d hard links: not handed to %s", path, st.st_nlink, who.name)
        return
    os.chown(path, who.uid, who.gid, follow_symlinks=False)


def can_work_as(who: Identity, paths: list[Path]) -> str:
    """"" if ``who`` can use each of ``paths`` (the first read-write, the others read), else why not.
    Asked of the kernel itself, in a forked child that drops to ``who``: modes, ACLs and every parent
    folder count as they will after the switch."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python cleanup, only the answer
        try:
            os.close(r)
            _become(who)
            bad = [str(p) for i, p in enumerate(paths)
                   if not os.access(p, (os.R_OK | os.W_OK | os.X_OK) if i == 0 else os.R_OK)]
            os.write(w, ", ".join(bad).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        bad = f.read().decode()
    os.waitpid(pid, 0)
    return f"user {who.name} cannot reach {bad}" if bad else ""


def _become(who: Identity) -> None:
    os.initgroups(who.name, who.gid)
    os.setresgid(who.gid, who.gid, who.gid)
    os.setresuid(who.uid, who.uid, who.uid)


def drop(who: Identity, home: Path) -> None:
    """Become ``who`` for good; HOME is its own folder (vLLM, torch and others write caches there).
    The kernel forgets the parent-death signal on a change of user: set it again (the supervisor's
    children must die with it), and exit if the parent went meanwhile."""
    parent, sig = os.getppid(), helpers.parent_death_signal()
    _become(who)
    os.environ.update(HOME=str(home), USER=who.name, LOGNAME=who.name)
    if sig and not helpers.bind_to_parent(parent, sig):
        log.error("the parent process (pid %d) went while inference started: exiting", parent)
        sys.exit(1)
    log.info("running as user %s (uid %d) from here on", who.name, who.uid)
