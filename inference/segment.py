"""Launch segmentation: which execs are program starts a user would recognise (README "What a launch is").

An exec tracer sees every execve: a shell script that runs sed, grep and cat is five execs but one
program to its user. The segmenter follows each source's process tree (fork/exec/exit) and gives
every live pid a *context*: the launch it belongs to, or none (a "launcher" context: init, a login or
terminal shell, an unknown parent). An exec in a launcher context starts a launch; an exec in a launch
context is a helper of that launch. Identity is the resolved executable; interpreters are named by
their script. Wrappers (env, nice, sudo, setpriv, ``sh -c``; ``WRAPPERS`` plus the configured
``inference.wrappers``) and ignored apps are transparent: they pass their parent's context on. An exec
chain through a wrapper not on that list is caught too: when the pid that started a launch execs again
within the launch window, the launch becomes the program the chain ends in, owned by the uid after that
exec (a *relabel*). The state is plain dicts so that it can be snapshotted, and every change in a batch
is journalled so that a batch the store rejects leaves no trace here either.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from memo.contract import ExecEvent

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "tcsh", "csh", "ash", "rbash"})
WRAPPERS = frozenset({
    # run a program with other attributes, in the same pid or a child
    "env", "nice", "ionice", "nohup", "timeout", "stdbuf", "taskset", "chrt", "setsid", "time", "unbuffer",
    "flock", "chpst", "prlimit", "numactl", "cgexec", "systemd-run", "systemd-inhibit",
    # change user
    "sudo", "doas", "su", "runuser", "setpriv", "pkexec", "capsh",
    # sandboxes and containers of desktop apps
    "bwrap", "flatpak", "flatpak-spawn", "snap", "firejail", "unshare", "nsenter", "chroot",
    # desktop launchers
    "xdg-open", "gtk-launch", "gio", "kioclient", "kioclient5", "dex", "exo-open",
})
"""Programs that pass the launch on to the program they run (basenames); ``inference.wrappers`` adds more."""
_INTERP = re.compile(r"^(python|pypy|perl|ruby|php|lua|luajit|tclsh|wish|node|nodejs|java|rscript|deno|bun)"
                     r"[\d.]*$", re.IGNORECASE)
_DELETED = " (deleted)"

# Options that consume the next argv item, per interpreter family.
_VALUE_OPTS: dict[str, frozenset[str]] = {
    "shell": frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}),
    "python": frozenset({"-W", "-X", "--check-hash-based-pycs"}),
    "perl": frozenset({"-I", "-M", "-m"}),
    "ruby": frozenset({"-I", "-r", "-C", "-E"}),
    "node": frozenset({"-r", "--require", "--import", "--loader", "-C", "--conditions", "--input-type"}),
    "java": frozenset({"-cp", "-classpath", "--class-path", "-p", "--module-path", "--add-modules",
                       "--add-opens", "--add-exports", "--upgrade-module-path", "--limit-modules"}),
}
_EVAL_OPTS: dict[str, frozenset[str]] = {
    "python": frozenset({"-c"}),
    "perl": frozenset({"-e", "-E"}),
    "ruby": frozenset({"-e"}),
    "node": frozenset({"-e", "--eval", "-p", "--print"}),
}


class Kind(Enum):
    PROGRAM = "program"  # a program in its own right: a launch if its context is a launcher
    LAUNCHER = "launcher"  # an interactive shell: what it runs are launches
    TRANSPARENT = "transparent"  # a wrapper or ignored app: keeps its parent's context


@dataclass(frozen=True, slots=True)
class Identity:
    kind: Kind
    app: str


@dataclass(frozen=True, slots=True)
class NewLaunch:
    """A launch the segmenter found; ``id`` is allocated here so the store can key pages by it."""

    id: int
    source_id: str
    uid: int
    app: str
    pid: int
    ts_ns: int
    wall_ts: float
    exe: str


def _family(base: str) -> str:
    b = base.lower()
    for fam in ("python", "pypy", "perl", "ruby", "node", "java"):
        if b.startswith(fam):
            return "python" if fam == "pypy" else fam
    return "deno" if b.startswith(("deno", "bun")) else "generic"


def _operand(argv: Sequence[str], family: str) -> tuple[str, str | None]:
    """('script', name) | ('eval', None) | ('module', name) | ('class', name) (a Java main class) |
    ('none', None) from an interpreter's argv."""
    values = _VALUE_OPTS.get(family, frozenset())
    evals = _EVAL_OPTS.get(family, frozenset())
    args = list(argv[1:])
    i = 0
    if family == "deno" and args and args[0] in ("run", "x"):
        i = 1
    while i < len(args):
        a = args[i]
        if a == "--":
            return ("script", args[i + 1]) if i + 1 < len(args) else ("none", None)
        if family == "shell" and a.startswith("-") and not a.startswith("--") and ("c" in a or "s" in a[1:]):
            return "eval", None
        if family == "java" and a == "-jar":
            return ("script", args[i + 1]) if i + 1 < len(args) else ("none", None)
        if (family == "python" and a == "-m") or (family == "java" and a in ("-m", "--module")):
            return ("module", args[i + 1]) if i + 1 < len(args) else ("none", None)
        if family == "python" and a.startswith("-m") and len(a) > 2:
            return "module", a[2:]
        if a in evals:
            return "eval", None
        if a in values:
            i += 2
            continue
        if a.startswith("-") or (family == "shell" and a.startswith("+")):
            i += 1
            continue
        return ("class", a) if family == "java" else ("script", a)
    return "none", None


def _absolute(name: str, cwd: str) -> str:
    """A script's name as an app: absolute (against the exec's cwd when given relative); "" when it is
    relative and the cwd is unknown, so that no app is ever stored under a relative name."""
    if name.startswith("/"):
        return posixpath.normpath(name)
    return posixpath.normpath(posixpath.join(cwd, name)) if cwd else ""


def identify(ev: ExecEvent, wrappers: frozenset[str] = WRAPPERS) -> Identity:
    """What program an exec started, and what kind of thing it is."""
    fname = ev.filename or "?"
    exe = ev.exe.removesuffix(_DELETED) if ev.exe else (_absolute(fname, ev.cwd) or posixpath.normpath(fname))
    base = posixpath.basename(exe)
    argv = ev.argv or [ev.filename]
    if base in wrappers or posixpath.basename(fname) in wrappers:
        # by the name exec'd too: the collector reads exe and argv from /proc after the event, and a
        # wrapper that execs at once (setpriv, env) has by then become its program
        return Identity(Kind.TRANSPARENT, exe)
    shell = base in SHELLS
    if not shell and not _INTERP.match(base):
        return Identity(Kind.PROGRAM, exe)
    family = "shell" if shell else _family(base)
    what, name = _operand(argv, family)
    if not ev.argv:
        # The process was gone before the collector read its argv: a script run by its #! line still
        # shows as its filename; otherwise a short-lived shell or interpreter ran *something*, not a
        # prompt (an interactive shell lives long enough to be read), so it counts as a program.
        if ev.filename and posixpath.basename(ev.filename) != base:
            return Identity(Kind.PROGRAM, _absolute(ev.filename, ev.cwd) or exe)
        return Identity(Kind.PROGRAM, exe)
    if what == "script" and name:
        return Identity(Kind.PROGRAM, _absolute(name, ev.cwd) or exe)
    if what == "module" and name:
        return Identity(Kind.PROGRAM, f"{exe} -m {name}")
    if what == "class" and name:
        return Identity(Kind.PROGRAM, f"{exe} {name}")
    if shell:
        # `sh -c CMD` runs a command for whoever called it; a bare shell is a user's prompt.
        return Identity(Kind.TRANSPARENT if what == "eval" else Kind.LAUNCHER, exe)
    return Identity(Kind.PROGRAM, exe)  # a REPL or an -e one-liner: the interpreter itself


@dataclass
class Rules:
    """Configured overrides: ``ignore`` apps never start launches, ``allow`` apps always do, ``wrappers``
    (basenames) are transparent like the built-in WRAPPERS."""

    ignore: Sequence[str] = ()
    allow: Sequence[str] = ()
    wrappers: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.all_wrappers = WRAPPERS | frozenset(self.wrappers)

    def ignored(self, app: str) -> bool:
        return any(fnmatch.fnmatchcase(app, p) for p in self.ignore)

    def allowed(self, app: str) -> bool:
        return any(fnmatch.fnmatchcase(app, p) for p in self.allow)


@dataclass(frozen=True, slots=True)
class Relabel:
    """An earlier launch turned out to be an exec chain: it is ``app`` of ``uid`` (exe ``exe``)."""

    id: int
    uid: int
    app: str
    exe: str


_MISSING = object()
OWN = -1
"""The context of MEMO's own processes (the inference service, the supervisor) and all they start, such
as vLLM's engine: never launches, so MEMO neither predicts nor prefetches itself."""


@dataclass
class Segmenter:
    """One source's process tree and the launches in it (pids are per source: one pid namespace)."""

    source_id: str
    rules: Rules = field(default_factory=Rules)
    window_ns: int = 10_000_000_000
    own: frozenset[int] = frozenset()  # pids of MEMO's own processes on this source's machine
    # pid -> launch id, None for a launcher context, or OWN. A pid absent here is unknown: a launcher too.
    procs: dict[int, int | None] = field(default_factory=dict)
    # launch id -> (start ts_ns, app, pid that started it, its uid), kept while page-cache records may
    # still be attributed to it.
    recent: dict[int, tuple[int, str, int, int]] = field(default_factory=dict)
    # pid -> (launch id, exit ts_ns) of processes of a launch that have exited: the collector sends a
    # launch's page records when its window is over, often after short-lived helpers are gone.
    exited: dict[int, tuple[int, int]] = field(default_factory=dict)
    _undo: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for pid in self.own:
            self.procs[pid] = OWN

    # ---------------------------------------------------------------- journal

    def _write(self, table: str, key: int, value: Any) -> None:
        """Set (or, with _MISSING, delete) table[key], remembering the old value for rollback."""
        t = getattr(self, table)
        self._undo.setdefault((table, key), t.get(key, _MISSING))
        if value is _MISSING:
            t.pop(key, None)
        else:
            t[key] = value

    def _set(self, pid: int, ctx: int | None) -> None:
        self._write("procs", pid, ctx)

    def commit(self) -> None:
        self._undo.clear()
        if len(self.recent) > 4096:
            newest = max(v[0] for v in self.recent.values())
            self.recent = {k: v for k, v in self.recent.items() if newest - v[0] <= self.window_ns}
        if len(self.exited) > 4096:
            newest = max(ts for _, ts in self.exited.values())
            self.exited = {k: v for k, v in self.exited.items() if newest - v[1] <= self.window_ns}

    def rollback(self) -> None:
        for (table, key), old in self._undo.items():
            t = getattr(self, table)
            if old is _MISSING:
                t.pop(key, None)
            else:
                t[key] = old
        self._undo.clear()

    # ---------------------------------------------------------------- events

    def fork(self, pid: int, ppid: int) -> None:
        """A child shares its parent's context until it execs."""
        self._set(pid, self.procs.get(ppid))

    def exit(self, pid: int, ts_ns: int = 0) -> None:
        lid = self.procs.get(pid)
        if lid is not None and lid in self.recent:
            self._write("exited", pid, (lid, ts_ns))
        if pid in self.procs:
            self._write("procs", pid, _MISSING)

    def exec(self, ev: ExecEvent, launch_id: int, now: float) -> NewLaunch | Relabel | None:
        """Classify an exec; returns a launch (with ``launch_id``) if it starts one, or a Relabel if
        it continues the exec chain that started a launch."""
        ctx = self.procs[ev.pid] if ev.pid in self.procs else self.procs.get(ev.ppid)
        if ctx == OWN:
            self._set(ev.pid, OWN)
            return None
        ident = identify(ev, self.rules.all_wrappers)
        kind = ident.kind
        chain = self.recent.get(ctx) if ctx is not None else None
        if (chain is not None and chain[2] == ev.pid and 0 <= ev.ts_ns - chain[0] <= self.window_ns
                and kind is Kind.PROGRAM and not self.rules.ignored(ident.app)
                and (ident.app != chain[1] or ev.uid != chain[3])):
            # the pid that started launch ctx exec'd again: the launch is where the chain ends, and its
            # user the one after that exec (also when the collector read the first exec's argv and exe
            # only after the second exec, so both look like the same app: setpriv/su then the program)
            self._write("recent", ctx, (chain[0], ident.app, ev.pid, ev.uid))
            return Relabel(ctx, ev.uid, ident.app, ev.exe or ev.filename)
        if kind is Kind.PROGRAM and self.rules.allowed(ident.app):
            ctx = None  # always a launch, even inside another one
        elif kind is Kind.PROGRAM and (self.rules.ignored(ident.app) or not ident.app.startswith("/")):
            kind = Kind.TRANSPARENT  # ignored, or a relative name nothing could resolve: never an app
        if kind is Kind.LAUNCHER:
            self._set(ev.pid, None)
            return None
        if kind is Kind.TRANSPARENT or ctx is not None:
            self._set(ev.pid, ctx)  # a helper of the running launch, or a wrapper passing context on
            return None
        self._set(ev.pid, launch_id)
        self._write("recent", launch_id, (ev.ts_ns, ident.app, ev.pid, ev.uid))
        return NewLaunch(launch_id, self.source_id, ev.uid, ident.app, ev.pid, ev.ts_ns,
                         ev.wall_ts if ev.wall_ts > 0 else now, ev.exe or ev.filename)

    def launch_of(self, pid: int, ts_ns: int) -> int | None:
        """The launch whose start window covers a page-cache record of ``pid`` at ``ts_ns`` (the pid
        may have exited since: its record is no older than its exit)."""
        gone = self.exited.get(pid)
        lid = gone[0] if gone is not None and ts_ns <= gone[1] else self.procs.get(pid)
        if lid is None:
            return None
        start = self.recent.get(lid)
        if start is None or not 0 <= ts_ns - start[0] <= self.window_ns:
            return None
        return lid

    # ---------------------------------------------------------------- persistence

    def state(self) -> dict[str, Any]:
        return {"procs": [[p, c] for p, c in self.procs.items() if c != OWN],  # pids die with MEMO
                "recent": [[k, ts, app, pid, uid] for k, (ts, app, pid, uid) in self.recent.items()],
                "exited": [[p, lid, ts] for p, (lid, ts) in self.exited.items()]}

    def load(self, state: dict[str, Any]) -> None:
        self.procs = {int(p): c for p, c in state.get("procs", []) if c != OWN}
        self.procs.update({pid: OWN for pid in self.own})
        # entries written before the root pid was kept have 3 fields: no chain is followed for them;
        # before its uid was, 4: the chain's next exec relabels it with its own uid
        self.recent = {int(r[0]): (int(r[1]), str(r[2]), int(r[3]) if len(r) > 3 else -1,
                                   int(r[4]) if len(r) > 4 else -1)
                       for r in state.get("recent", [])}
        self.exited = {int(p): (int(lid), int(ts)) for p, lid, ts in state.get("exited", [])}


def segment(events: Iterable[Any], source_id: str = "test", rules: Rules | None = None) -> list[NewLaunch]:
    """Launches in a sequence of contract events (for tests and offline use)."""
    seg = Segmenter(source_id, rules or Rules())
    out: list[NewLaunch] = []
    for ev in events:
        if ev.type == "fork":
            seg.fork(ev.pid, ev.ppid)
        elif ev.type == "exit":
            seg.exit(ev.pid, ev.ts_ns)
        elif ev.type == "exec":
            launch = seg.exec(ev, len(out) + 1, 0.0)
            if isinstance(launch, Relabel):
                i = launch.id - 1
                out[i] = replace(out[i], uid=launch.uid, app=launch.app, exe=launch.exe)
            elif launch:
                out.append(launch)
    seg.commit()
    return out
