"""Launch segmentation on a real process tree (recorded with memo-collector) and on the rules."""

from __future__ import annotations

import pytest

from inference.segment import Kind, Rules, Segmenter, identify, segment
from memo.contract import EVENT_ADAPTER, ExecEvent
from tests.inference.events import exec_ev, exit_ev, fork_ev
from tests.inference.proc_trees import EXPECTED, descendants, load_fixture, record


def ev(**kw: object) -> ExecEvent:
    return ExecEvent.model_validate({"ts_ns": 1, "pid": 2, "ppid": 1, "uid": 0, "cgroup_id": 0, "comm": "x",
                                     **kw})


def test_recorded_shell_session_is_one_launch_per_command() -> None:
    """bash -i runs `bash ./job.sh` (sed, grep, cat, tr, head, a subshell, sh -c uname), the same
    script through its #! line, a python script twice (python3 x.py and #!/usr/bin/env python3) that runs
    helpers, ls, and `env LC_ALL=C sort`: 35 execs, six launches."""
    events = load_fixture()
    execs = [e for e in events if e.type == "exec"]
    assert len(execs) > 25
    assert [launch.app for launch in segment(events)] == EXPECTED


@pytest.mark.root
@pytest.mark.bpf
def test_live_recording_segments_the_same() -> None:
    """The same session traced now by the collector (root, eBPF) segments into the same launches."""
    events = [EVENT_ADAPTER.validate_python(e) for e in record()]
    assert [launch.app for launch in segment(events)] == EXPECTED


def test_descendants_keeps_only_the_tree() -> None:
    evs = [fork_ev(5, 1), exec_ev(5, 1, "/x"), fork_ev(6, 5), fork_ev(7, 2), exit_ev(6)]
    assert [e["pid"] for e in descendants(evs, 5)] == [5, 5, 6, 6]


@pytest.mark.parametrize(("exe", "argv", "kind", "app"), [
    ("/usr/bin/vim", ["vim", "x"], Kind.PROGRAM, "/usr/bin/vim"),
    ("/usr/bin/python3.11", ["python3", "-u", "/opt/t/x.py", "-v"], Kind.PROGRAM, "/opt/t/x.py"),
    ("/usr/bin/python3.11", ["python3", "-m", "http.server"], Kind.PROGRAM,
     "/usr/bin/python3.11 -m http.server"),
    ("/usr/bin/python3.11", ["python3"], Kind.PROGRAM, "/usr/bin/python3.11"),
    ("/usr/bin/python3.11", ["python3", "-c", "print(1)"], Kind.PROGRAM, "/usr/bin/python3.11"),
    ("/usr/lib/jvm/bin/java", ["java", "-Xmx1g", "-cp", "a.jar", "-jar", "app.jar"], Kind.PROGRAM, "app.jar"),
    ("/usr/lib/jvm/bin/java", ["java", "-cp", "lib/*", "org.x.Main"], Kind.PROGRAM, "org.x.Main"),
    ("/usr/bin/node", ["node", "--require", "ts-node", "srv.js"], Kind.PROGRAM, "srv.js"),
    ("/usr/bin/perl", ["perl", "-w", "./a/../tool.pl"], Kind.PROGRAM, "tool.pl"),
    ("/usr/bin/bash", ["bash", "-o", "pipefail", "run.sh"], Kind.PROGRAM, "run.sh"),
    ("/usr/bin/bash", ["-bash"], Kind.LAUNCHER, "/usr/bin/bash"),
    ("/usr/bin/zsh", ["zsh", "-l"], Kind.LAUNCHER, "/usr/bin/zsh"),
    ("/usr/bin/dash", ["sh", "-c", "ls"], Kind.TRANSPARENT, "/usr/bin/dash"),
    ("/usr/bin/bash", ["bash", "-ec", "ls"], Kind.TRANSPARENT, "/usr/bin/bash"),
    ("/usr/bin/env", ["env", "A=1", "x"], Kind.TRANSPARENT, "/usr/bin/env"),
    ("/usr/bin/sudo", ["sudo", "apt"], Kind.TRANSPARENT, "/usr/bin/sudo"),
    ("/usr/bin/vim (deleted)", ["vim"], Kind.PROGRAM, "/usr/bin/vim"),
])
def test_identity(exe: str, argv: list[str], kind: Kind, app: str) -> None:
    got = identify(ev(filename=exe, exe=exe, argv=argv))
    assert (got.kind, got.app) == (kind, app)


def test_identity_without_argv() -> None:
    """A process gone before the collector read it: a #! script keeps its name; a shell is a program."""
    assert identify(ev(filename="./job.sh", exe="", argv=[])).app == "job.sh"
    got = identify(ev(filename="/usr/bin/bash", exe="", argv=[]))
    assert (got.kind, got.app) == (Kind.PROGRAM, "/usr/bin/bash")


def _apps(events: list[dict], rules: Rules | None = None) -> list[str]:
    return [launch.app for launch in segment([EVENT_ADAPTER.validate_python(e) for e in events], rules=rules)]


def test_helpers_of_a_program_are_not_launches() -> None:
    """An editor that runs `sh -c make` which runs cc: one launch, the editor."""
    evs = [exec_ev(10, 1, "/usr/bin/bash", ["-bash"]), fork_ev(11, 10), exec_ev(11, 10, "/usr/bin/vim"),
           fork_ev(12, 11), exec_ev(12, 11, "/bin/sh", ["sh", "-c", "make"]), fork_ev(13, 12),
           exec_ev(13, 12, "/usr/bin/make"), fork_ev(14, 13), exec_ev(14, 13, "/usr/bin/cc"),
           exit_ev(14), exit_ev(13), exit_ev(12), exit_ev(11),
           fork_ev(15, 10), exec_ev(15, 10, "/usr/bin/git", ["git", "status"])]
    assert _apps(evs) == ["/usr/bin/vim", "/usr/bin/git"]


def test_desktop_sh_c_and_wrappers_pass_the_launcher_context_on() -> None:
    """systemd (unknown parent) -> sh -c 'nice firefox': firefox is the launch; its helpers are not."""
    evs = [fork_ev(20, 1), exec_ev(20, 1, "/bin/sh", ["sh", "-c", "nice firefox"]), fork_ev(21, 20),
           exec_ev(21, 20, "/usr/bin/nice", ["nice", "firefox"]), exec_ev(21, 20, "/usr/lib/firefox/firefox"),
           fork_ev(22, 21), exec_ev(22, 21, "/usr/lib/firefox/firefox", ["firefox", "-contentproc"])]
    assert _apps(evs) == ["/usr/lib/firefox/firefox"]


def test_terminal_shell_inside_a_launch_starts_new_launches() -> None:
    """A terminal emulator is a launch; the shell it runs is a prompt whose commands are launches."""
    evs = [fork_ev(30, 1), exec_ev(30, 1, "/usr/bin/xterm"), fork_ev(31, 30),
           exec_ev(31, 30, "/usr/bin/bash", ["bash"]), fork_ev(32, 31), exec_ev(32, 31, "/usr/bin/htop")]
    assert _apps(evs) == ["/usr/bin/xterm", "/usr/bin/htop"]


def test_ignore_and_allow() -> None:
    evs = [exec_ev(40, 1, "/usr/bin/bash", ["-bash"]), fork_ev(41, 40), exec_ev(41, 40, "/usr/bin/ls"),
           fork_ev(42, 40), exec_ev(42, 40, "/usr/bin/vim"), fork_ev(43, 42), exec_ev(43, 42, "/usr/bin/gdb")]
    assert _apps(evs) == ["/usr/bin/ls", "/usr/bin/vim"]
    assert _apps(evs, Rules(ignore=["*/ls"], allow=["/usr/bin/gd?"])) == ["/usr/bin/vim", "/usr/bin/gdb"]


def test_rollback_restores_the_process_table() -> None:
    seg = Segmenter("s")
    seg.fork(5, 1)
    seg.exec(EVENT_ADAPTER.validate_python(exec_ev(5, 1, "/usr/bin/top")), 1, 0.0)
    seg.commit()
    before = (dict(seg.procs), dict(seg.recent))
    seg.fork(6, 5)
    seg.exit(5)
    seg.exec(EVENT_ADAPTER.validate_python(exec_ev(7, 1, "/usr/bin/vi")), 2, 0.0)
    seg.rollback()
    assert (seg.procs, seg.recent) == before
    state = seg.state()
    other = Segmenter("s")
    other.load(state)
    assert (other.procs, other.recent) == before
