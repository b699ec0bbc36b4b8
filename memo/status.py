"""`memo status`: is each service up, and is MEMO doing any good?

Processes from the supervisor's state file (`memo up`), else found in /proc (systemd); the rest over
HTTP: /healthz (health, model accuracy so far, lost records), /v1/sources sampled twice (events/s),
/v1/feedback (prefetch hit rate and waste). Exit status 0 only when all three are healthy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from memo import config as memo_config
from memo.api import Api, ServiceDown
from memo.contract import FeedbackSummary, Health, SourceStats, rate
from memo.runtime import SERVICES, RunDir, find_processes, is_alive

EXAMPLES = """\
examples:
  memo status                      # a table: each service, events/s, lost, accuracy, hit rate, waste
  memo status --json               # the same as one JSON object (exit status 1 if a service is down)
  memo status --interval 5         # measure events/s over 5 s instead of 1
"""


def _processes(run: RunDir) -> dict[str, dict[str, Any]]:
    state = run.state()
    sup_alive = bool(state) and is_alive(state.get("pid"), "supervisor") and not state.get("stopping")
    out: dict[str, dict[str, Any]] = {}
    for name in SERVICES:
        if sup_alive:
            s = state["services"].get(name, {})  # type: ignore[index]
            pid = s.get("pid")
            alive = is_alive(pid, name)
            out[name] = {"pid": pid, "state": s.get("state", "?") if alive or s.get("state") == "backoff"
                         else "dead", "restarts": s.get("restarts", 0), "supervised": True,
                         "exits": s.get("exits", []), "log": s.get("log", str(run.log_file(name)))}
        else:
            pids = find_processes(name)
            out[name] = {"pid": pids[0] if pids else None, "state": "running" if pids else "not running",
                         "restarts": None, "supervised": False}
    return out


def _last_line(path: str) -> str:
    """The log's last line (empty when it cannot be read: the logs are root's)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def reason(name: str, p: dict[str, Any], detail: dict[str, Any], error: str) -> str:
    """Why a service is not healthy, and what to do next; for a healthy one, what needs a look."""
    state, log = p["state"], p.get("log") or ""
    if state == "not running":
        return "not running: start MEMO with `sudo make up` (or `sudo memo up`)"
    if state == "backoff":
        last = (p.get("exits") or [{}])[-1]
        line = _last_line(log)
        return (f"exited with code {last.get('rc', '?')} after {last.get('ran_s', '?')} s; the supervisor "
                f"restarts it after a pause{f'. Last log line: {line}' if line else ''} (log: {log})")
    if state == "dead":
        return (f"its process is gone; the supervisor restarts it, else `sudo make down && sudo make up` "
                f"(log: {log})")
    if state == "starting":
        return "starting: waiting for it to say it is ready"
    if name != "inference":
        return ""
    if p.get("health") == "unreachable":
        return f"its API does not answer: {error}" if error else "its API does not answer"
    notes = []
    if p.get("health") == "degraded":
        notes.append(f"degraded: {detail.get('reason', 'see its log')}; `sudo make down && sudo make up` "
                     "restarts it")
    if detail.get("database_recovered"):
        notes.append("started with an empty store: the database was unreadable: "
                     f"{detail['database_recovered']}")
    if detail.get("quarantined"):
        notes.append(f"{detail['quarantined']} stored launches were skipped by the models (see the log)")
    return "; ".join(notes)


def _sum_feedback(rows: list[FeedbackSummary]) -> dict[str, Any]:
    pre = sum(r.bytes_prefetched for r in rows)
    used = sum(r.bytes_used for r in rows)
    wasted = sum(r.bytes_wasted for r in rows)
    return {"actions": sum(r.actions for r in rows), "bytes_prefetched": pre, "bytes_used": used,
            "bytes_wasted": wasted, "hit_rate": rate(used, pre) if pre else None,
            "waste_rate": rate(wasted, pre) if pre else None}


def collect(cfg: memo_config.Config, interval_s: float = 1.0) -> dict[str, Any]:
    """Everything `memo status` shows, as one dict (tests read it through --json)."""
    run = RunDir(cfg.paths.run_dir)
    procs = _processes(run)
    report: dict[str, Any] = {"run_dir": str(run.root), "services": procs, "errors": []}
    api = Api(cfg)
    health: Health | None = None
    before: list[SourceStats] = []
    after: list[SourceStats] = []
    feedback: list[FeedbackSummary] = []
    dt = 1.0
    try:
        health = api.health()
        before = api.sources()
        t0 = time.monotonic()
        time.sleep(interval_s)
        after = api.sources()
        dt = time.monotonic() - t0
        try:
            feedback = api.feedback()
        except ServiceDown:  # every user's programs: root and group memo only
            report["feedback_hidden"] = True
    except ServiceDown as exc:
        report["errors"].append(str(exc))
        health, before, after, dt, feedback = None, [], [], 1.0, []
    finally:
        api.close()
    detail = health.detail if health else {}
    procs["inference"]["health"] = health.status if health else "unreachable"
    procs["inference"]["uptime_s"] = health.uptime_s if health else None
    events_before = sum(s.events for s in before)
    events = sum(s.events for s in after)
    report.update({
        "api": api.via, "port": run.port(),
        "events": events, "events_per_s": round((events - events_before) / dt, 1) if health else None,
        "sources": [s.model_dump() for s in after], "lost": detail.get("lost"),
        "launches": detail.get("launches"),
        "users": detail.get("users"), "models": detail.get("models"),
        "accuracy": {k: detail[k] for k in ("top1", "top5") if k in detail},
        "prefetch": _sum_feedback(feedback),
    })
    for name, p in procs.items():
        up = p["state"] == "running" and (p["pid"] is not None)
        if name == "inference":
            up = up and p.get("health") == "ok"
        p["healthy"] = up
        p["reason"] = reason(name, p, detail, report["errors"][0] if report["errors"] else "")
    report["healthy"] = all(p["healthy"] for p in procs.values())
    return report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def render(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    t = Table(title=f"MEMO ({r['run_dir']})", title_justify="left")
    for col in ("service", "healthy", "state", "pid", "restarts", "detail"):
        t.add_column(col)
    p = r["prefetch"]
    details = {
        "inference": f"{r.get('launches') or 0} launches, {r.get('users') or 0} users; accuracy so far top-1 "
                     f"{_pct(r['accuracy'].get('top1'))}, top-5 {_pct(r['accuracy'].get('top5'))}",
        "collector": f"{r['events_per_s'] if r['events_per_s'] is not None else '-'} events/s, "
                     f"{r['events']} stored, lost records: {r['lost'] if r['lost'] is not None else '-'}",
        "prefetcher": f"{_mib(p['bytes_prefetched'])} prefetched; hit rate {_pct(p['hit_rate'])}, "
                      f"waste {_pct(p['waste_rate'])}",
    }
    for name, s in r["services"].items():
        ok = "[green]yes[/]" if s["healthy"] else "[red]no[/]"
        t.add_row(name, ok, s["state"], str(s["pid"] or "-"),
                  "-" if s["restarts"] is None else str(s["restarts"]), details[name])
    console.print(t)
    for name, s in r["services"].items():
        if s.get("reason"):
            console.print(f"[{'yellow' if s['healthy'] else 'red'}]{name}: {escape(s['reason'])}[/]",
                          highlight=False)
    if r.get("api"):
        tcp = f"  (TCP: http://127.0.0.1:{r['port']})" if r.get("port") else ""
        console.print(f"API: {r['api']}{tcp}")
    for e in r["errors"]:
        console.print(f"[red]{e}[/]")
    if r.get("feedback_hidden"):
        console.print("prefetch figures are every user's: run as root (or in group memo) to see them")


def cmd_status(args: argparse.Namespace) -> int:
    report = collect(memo_config.load(), args.interval)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        render(report)
    return 0 if report["healthy"] else 1


def add_cli(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.description = "Health of collector, inference and prefetcher, and what MEMO achieved so far."
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="events/s sampling time (default 1)")
    p.set_defaults(handler=cmd_status)
