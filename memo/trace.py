"""`memo trace`: live program launches and exits, like execsnoop, from MEMO's own tracer.

It runs `memo-collector --stdout` (the same eBPF programs, its own pin directory so that it never
disturbs a running collector) and prints one line per exec and per exit of a traced process.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from typing import Any, TextIO

from memo.runtime import command

EXAMPLES = """\
examples:
  sudo memo trace                  # every exec and exit on this machine, until Ctrl-C
  sudo memo trace --uid 1000       # one user's programs
  sudo memo trace --duration 10 --no-exits
  sudo memo trace --json           # the collector's JSON lines (all event types), unchanged
"""
HEADER = f"{'TIME(s)':>9} {'EVENT':<5} {'UID':>6} {'PID':>7} {'PPID':>7} {'COMM':<16} DETAIL"


def shown(text: str) -> str:
    """Text from another process, safe on a terminal: control and other unprintable characters as
    escapes (an argv may carry ESC sequences that would drive the terminal), quoted where a shell would
    need it, like bcc's execsnoop."""
    safe = "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in text)
    return shlex.quote(safe)


class Printer:
    """Turns collector JSON lines into execsnoop-like lines; exits only of processes seen exec'ing."""

    def __init__(self, out: TextIO, uid: int | None, exits: bool) -> None:
        self.out = out
        self.uid = uid
        self.exits = exits
        self.t0: int | None = None
        self.live: dict[int, tuple[int, int, str]] = {}  # pid -> (exec ts_ns, uid, comm)

    def _t(self, ts_ns: int) -> str:
        if self.t0 is None:
            self.t0 = ts_ns
        return f"{(ts_ns - self.t0) / 1e9:9.3f}"

    def line(self, ev: dict[str, Any]) -> str | None:
        t = ev.get("type")
        if t == "lost":
            return f"{self._t(ev['ts_ns'])} LOST  {'':>39} {ev['count']} records dropped"
        if t == "exec":
            if self.uid is not None and ev["uid"] != self.uid:
                return None
            comm = shown(ev["comm"])[:16]
            self.live[ev["pid"]] = (ev["ts_ns"], ev["uid"], comm)
            args = " ".join(shown(a) for a in ev.get("argv") or [ev["filename"]])
            exe = shown(ev.get("exe") or ev["filename"])
            return (f"{self._t(ev['ts_ns'])} EXEC  {ev['uid']:>6} {ev['pid']:>7} {ev['ppid']:>7} "
                    f"{comm:<16} {exe}: {args}")
        if t == "exit" and self.exits and ev["pid"] in self.live:
            start, uid, comm = self.live.pop(ev["pid"])
            return (f"{self._t(ev['ts_ns'])} EXIT  {uid:>6} {ev['pid']:>7} {'':>7} {comm[:16]:<16} "
                    f"code {ev['exit_code']}, ran {(ev['ts_ns'] - start) / 1e6:.1f} ms, "
                    f"minflt {ev['minflt']}, majflt {ev['majflt']}, swapin {ev['swapin']}")
        return None


def cmd_trace(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("memo trace: eBPF tracing needs root: run `sudo memo trace`", file=sys.stderr)
        return 2
    pin_dir = f"/sys/fs/bpf/memo-trace-{os.getpid()}"
    env = {**os.environ, "MEMO_COLLECTOR__BPF_PIN_DIR": pin_dir, "MEMO_LOG_LEVEL": "WARNING",
           "PYTHONUNBUFFERED": "1"}
    argv = command("collector") + ["--stdout"]
    if args.duration:
        argv += ["--duration", str(args.duration)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True)
    printer = Printer(sys.stdout, args.uid, not args.no_exits)
    if not args.json:
        print("loading eBPF programs (compiling them takes a few seconds; Ctrl-C to stop) ...",
              file=sys.stderr, flush=True)
        print(HEADER, flush=True)
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            if args.json:
                sys.stdout.write(raw)
                sys.stdout.flush()
                continue
            try:
                text = printer.line(json.loads(raw))
            except (ValueError, KeyError):
                continue
            if text:
                print(text, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.isdir(pin_dir):  # only if the collector died before it could clean up
            shutil.rmtree(pin_dir, ignore_errors=True)
    return 0 if proc.returncode in (0, -signal.SIGTERM) else 1


def add_cli(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.description = "Live program launches (exec) and exits, traced with MEMO's eBPF programs."
    p.add_argument("--uid", type=int, default=None, help="only this user's processes")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--no-exits", action="store_true", help="print launches only")
    p.add_argument("--json", action="store_true", help="raw JSON lines of every event type")
    p.set_defaults(handler=cmd_trace)
