"""Launch segmentation on a real process tree (recorded with memo-collector) and on the rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.ingest import Ingestor
from inference.segment import Kind, Rules, Segmenter, identify, segment
from inference.store import Store
from memo.contract import EVENT_ADAPTER, ExecEvent
from tests.inference.events import batch, exec_ev, exit_ev, fork_ev, page_ev
from tests.inference.proc_trees import (
    CHAINS_EXPECTED,
    CHAINS_FIXTURE,
    EXPECTED,
    descendants,
    load_fixture,
    record,
    record_chains,
)


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


def test_recorded_exec_chains_are_the_program_they_end_in() -> None:
    """Programs started through setpriv, runuser + nice, env + nice, ionice, taskset, sh -c 'exec',
    setarch (on no wrapper list) and a launcher script ending in exec: each launch is the program the
    chain ends in, owned by the uid after the last exec."""
    got = [(launch.app, launch.uid) for launch in segment(load_fixture(CHAINS_FIXTURE))]
    assert got == CHAINS_EXPECTED


@pytest.mark.root
@pytest.mark.bpf
def test_live_exec_chains_segment_the_same() -> None:
    events = [EVENT_ADAPTER.validate_python(e) for e in record_chains()]
    assert [(launch.app, launch.uid) for launch in segment(events)] == CHAINS_EXPECTED


def test_extra_wrappers_from_the_config() -> None:
    evs = [exec_ev(50, 1, "/usr/bin/bash", ["-bash"]), fork_ev(51, 50),
           exec_ev(51, 50, "/opt/bin/mywrap", ["mywrap", "vim"]), fork_ev(52, 51),
           exec_ev(52, 51, "/usr/bin/vim")]
    assert _apps(evs) == ["/opt/bin/mywrap"]
    assert _apps(evs, Rules(wrappers=["mywrap"])) == ["/usr/bin/vim"]


def test_exec_chain_split_across_batches_updates_the_stored_launch(tmp_path: Path) -> None:
    """The wrapper's exec in one batch, the program's in the next: the stored launch becomes the
    program (uid after the last exec), and the ingest result says so for the models."""
    store = Store(tmp_path / "db.sqlite3")
    ing = Ingestor(store, Rules(), window_s=10.0)
    wrapper = exec_ev(61, 60, "/usr/bin/setarch", ["setarch", "x86_64", "vim"], uid=0)
    first = ing.ingest(batch("s", 1, [exec_ev(60, 1, "/usr/bin/bash", ["-bash"], uid=0), fork_ev(61, 60, 0),
                                      wrapper]))
    assert [launch.app for launch in first.launches] == ["/usr/bin/setarch"]
    second = ing.ingest(batch("s", 2, [exec_ev(61, 60, "/usr/bin/vim", uid=1000)]))
    assert second.launches == []
    assert [(r.id, r.app, r.uid) for r in second.relabeled] == [(first.launches[0].id, "/usr/bin/vim", 1000)]
    assert store.query("SELECT app, uid FROM launches") == [("/usr/bin/vim", 1000)]


def test_a_chain_read_late_is_owned_by_the_uid_after_its_last_exec() -> None:
    """Recorded in bench/replay (setpriv --reuid=999 ... python sympy.py from a root shell): the
    collector read the setpriv exec's exe and argv after it had become python, so both execs look like
    the script. The launch is the script's, owned by uid 999, not root's; the same holds for a first exec
    on no wrapper list (matched by the pid exec'ing again with another uid)."""
    py, script = "/usr/bin/python3.11", "/var/tmp/apps/replay_sympy.py"
    for first in ("/usr/bin/setpriv", "/usr/bin/mystery"):
        late = {**exec_ev(81, 80, py, [py, script], uid=0), "filename": first, "comm": first[-7:]}
        evs = [exec_ev(80, 1, "/usr/bin/bash", ["bash", "--norc"], uid=0), fork_ev(81, 80, 0), late,
               exec_ev(81, 80, py, [py, script], uid=999)]
        got = segment([EVENT_ADAPTER.validate_python(e) for e in evs])
        assert [(launch.app, launch.uid) for launch in got] == [(script, 999)], first


def test_pages_sent_after_a_helper_exited_belong_to_its_launch(tmp_path: Path) -> None:
    """The collector sends a launch's page records once its window is over; a compiler's helpers
    (cc1, as) are gone by then, and their pages still count for the launch."""
    store = Store(tmp_path / "db.sqlite3")
    ing = Ingestor(store, Rules(), window_s=10.0)
    evs = [exec_ev(70, 1, "/usr/bin/bash", ["-bash"]), fork_ev(71, 70), exec_ev(71, 70, "/usr/bin/gcc"),
           fork_ev(72, 71), exec_ev(72, 71, "/usr/lib/gcc/cc1")]
    page = page_ev(72, "/usr/lib/gcc/cc1", 0, 8)  # used while cc1 ran, sent after it exited
    ing.ingest(batch("s", 1, evs + [exit_ev(72), exit_ev(71)]))
    ing.ingest(batch("s", 2, [page]))
    (launch, rows, _), = store.profiled_launches("/usr/bin/gcc", 5)
    assert rows == 1 and store.launch_pages(launch) == [("/usr/lib/gcc/cc1", 0, 8)]


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
    ("/usr/lib/jvm/bin/java", ["java", "-Xmx1g", "-cp", "a.jar", "-jar", "app.jar"], Kind.PROGRAM,
     "/w/app.jar"),
    ("/usr/lib/jvm/bin/java", ["java", "-cp", "lib/*", "org.x.Main"], Kind.PROGRAM,
     "/usr/lib/jvm/bin/java org.x.Main"),
    ("/usr/bin/node", ["node", "--require", "ts-node", "srv.js"], Kind.PROGRAM, "/w/srv.js"),
    ("/usr/bin/perl", ["perl", "-w", "./a/../tool.pl"], Kind.PROGRAM, "/w/tool.pl"),
    ("/usr/bin/bash", ["bash", "-o", "pipefail", "run.sh"], Kind.PROGRAM, "/w/run.sh"),
    ("/usr/bin/bash", ["-bash"], Kind.LAUNCHER, "/usr/bin/bash"),
    ("/usr/bin/zsh", ["zsh", "-l"], Kind.LAUNCHER, "/usr/bin/zsh"),
    ("/usr/bin/dash", ["sh", "-c", "ls"], Kind.TRANSPARENT, "/usr/bin/dash"),
    ("/usr/bin/bash", ["bash", "-ec", "ls"], Kind.TRANSPARENT, "/usr/bin/bash"),
    ("/usr/bin/env", ["env", "A=1", "x"], Kind.TRANSPARENT, "/usr/bin/env"),
    ("/usr/bin/sudo", ["sudo", "apt"], Kind.TRANSPARENT, "/usr/bin/sudo"),
    ("/usr/bin/vim (deleted)", ["vim"], Kind.PROGRAM, "/usr/bin/vim"),
])
def test_identity(exe: str, argv: list[str], kind: Kind, app: str) -> None:
    got = identify(ev(filename=exe, exe=exe, argv=argv, cwd="/w"))  # relative names resolve there
    assert (got.kind, got.app) == (kind, app)


def test_identity_without_argv() -> None:
    """A process gone before the collector read it: a #! script keeps its name; a shell is a program."""
    assert identify(ev(filename="./job.sh", exe="", argv=[], cwd="/home/u")).app == "/home/u/job.sh"
    assert identify(ev(filename="./job.sh", exe="/usr/bin/bash", argv=[])).app == "/usr/bin/bash", \
        "never a relative app name: without a cwd, the interpreter"


def test_a_script_named_relative_is_named_absolute() -> None:
    """`python3 ./tool.py` run in /srv/x is /srv/x/tool.py, as the same script run by its full path."""
    got = identify(ev(filename="/usr/bin/python3", exe="/usr/bin/python3.11", argv=["python3", "./tool.py"],
                      cwd="/srv/x"))
    assert (got.kind, got.app) == (Kind.PROGRAM, "/srv/x/tool.py")
    gone = identify(ev(filename="/usr/bin/python3", exe="/usr/bin/python3.11", argv=["python3", "tool.py"]))
    assert gone.app == "/usr/bin/python3.11"
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
    before = (dict(seg.procs), dict(seg.recent), dict(seg.exited))
    seg.fork(6, 5)
    seg.exit(5, 10)
    seg.exec(EVENT_ADAPTER.validate_python(exec_ev(7, 1, "/usr/bin/vi")), 2, 0.0)
    seg.rollback()
    assert (seg.procs, seg.recent, seg.exited) == before
    seg.exit(5, 10)
    seg.commit()
    state = seg.state()
    other = Segmenter("s")
    other.load(state)
    assert (other.procs, other.recent, other.exited) == (seg.procs, seg.recent, seg.exited)
    assert other.exited == {5: (1, 10)}


def test_memo_own_processes_and_what_they_start_are_never_launches() -> None:
    """vLLM's engine, spawned by the inference service (`python -c ...`), and a service the supervisor
    restarts are MEMO at work: no launch, while the user's programs still are."""
    seg = Segmenter("s", own=frozenset({80, 81}))  # the inference service and its supervisor
    engine = EVENT_ADAPTER.validate_python(exec_ev(82, 80, "/usr/bin/python3.11", ["python3", "-c", "spawn"]))
    restarted = EVENT_ADAPTER.validate_python(exec_ev(83, 81, "/opt/memo/.venv/bin/memo-collector"))
    seg.fork(82, 80)
    seg.fork(83, 81)
    assert seg.exec(engine, 1, 0.0) is None and seg.exec(restarted, 2, 0.0) is None
    user = EVENT_ADAPTER.validate_python(exec_ev(91, 90, "/usr/bin/vim"))
    assert seg.exec(user, 3, 0.0) is not None
    seg.commit()
    assert all(ctx != -1 for _, ctx in seg.state()["procs"]), "MEMO's pids are not kept across restarts"


def test_a_launcher_script_that_execs_its_program_is_learnt_as_that_program(tmp_path: Path) -> None:
    """Debian's /usr/bin/chromium is a shell script that execs the browser after some set-up, often in a
    later batch: the models learn the browser, never the script."""
    from inference.metrics import Metrics
    from inference.models import Models

    store = Store(tmp_path / "db.sqlite3")
    ing = Ingestor(store, Rules(), window_s=10.0)
    models = Models(store, ["mfu", "mru"], Metrics(), lambda app: 0)
    models.start()
    try:
        script = exec_ev(101, 100, "/usr/bin/chromium", ["/bin/sh", "/usr/bin/chromium"], uid=1000)
        script["exe"] = "/usr/bin/dash"
        first = ing.ingest(batch("s", 1, [exec_ev(100, 1, "/usr/bin/bash", ["-bash"]), fork_ev(101, 100),
                                          script]))
        models.submit(first.launches)
        second = ing.ingest(batch("s", 2, [exec_ev(101, 100, "/usr/lib/chromium/chromium")]))
        models.relabel(second.relabeled)
        models.drain()
        assert [p.app for p in models.predictions(1000, 5).predictions][:1] == ["/usr/lib/chromium/chromium"]
        assert "/usr/bin/chromium" not in [p.app for p in models.predictions(1000, 5).predictions]
    finally:
        models.stop()
