"""`memo-prefetcher`: the root agent that turns predictions into prepared memory (see daemon.py)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from memo import config as memo_config
from memo import helpers, logs

EXAMPLES = """\
examples:
  memo-prefetcher                                  # run as a daemon against the inference service
  memo-prefetcher --dry-run --once                 # print what one cycle would do, change nothing
  memo-prefetcher --app /usr/bin/python3.11 --profile prof.json --once
                                                   # prefetch one program's AppProfile JSON now
  memo-prefetcher --uid 1000 --psi-max 5           # one user; stop acting above 5 % memory stall (PSI some)
  memo-prefetcher --restore                        # put back cgroup values a killed run left changed
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memo-prefetcher",
        description="Warm the page cache, swap in and shield the cgroups of the programs MEMO predicts, "
                    "within a memory budget and never under memory pressure.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print what it would do; change nothing")
    p.add_argument("--once", action="store_true", help="run one cycle and exit")
    p.add_argument("--restore", action="store_true",
                   help="restore the cgroup values in the state file and exit")
    p.add_argument("--app", action="append", default=[], metavar="PATH",
                   help="act on this program as if predicted (repeatable; no service needed with --profile)")
    p.add_argument("--profile", action="append", default=[], type=Path, metavar="JSON",
                   help="an AppProfile JSON file to use instead of asking the service (repeatable)")
    p.add_argument("--uid", action="append", type=int, default=[],
                   help="users to ask predictions for (default: the service's, else owners of processes)")
    p.add_argument("-k", type=int, default=None, help="predictions per user (default inference.default_k)")
    p.add_argument("--psi-max", type=float, default=None, help="override prefetcher.psi_some_avg10_max")
    p.add_argument("--budget-share", type=float, default=None, help="override prefetcher.budget_share")
    p.add_argument("--min-probability", type=float, default=None, help="override prefetcher.min_probability")
    p.add_argument("--poll-interval", type=float, default=None, help="override prefetcher.poll_interval_s")
    p.add_argument("--socket", type=Path, default=None,
                   help="inference Unix socket (default <run_dir>/inference.sock)")
    p.add_argument("--log-level", default=None, help="override log_level")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = memo_config.load()
    overrides = {k: v for k, v in {
        "psi_some_avg10_max": args.psi_max, "budget_share": args.budget_share,
        "min_probability": args.min_probability, "poll_interval_s": args.poll_interval,
    }.items() if v is not None}
    if overrides:
        cfg.prefetcher = cfg.prefetcher.model_copy(update=overrides)
        cfg.prefetcher = type(cfg.prefetcher).model_validate(cfg.prefetcher.model_dump())
    helpers.private_files()
    logs.setup("memo-prefetcher", args.log_level or cfg.log_level)

    from memo.client import InferenceClient
    from prefetcher.daemon import Prefetcher, ServiceSource, Source, StaticSource

    if os.geteuid() != 0 and not args.dry_run:
        print("memo-prefetcher: needs root (CAP_SYS_NICE, CAP_SYS_ADMIN for cgroups); try --dry-run",
              file=sys.stderr)
        return 2
    socket = args.socket or cfg.paths.socket
    # The socket may appear later (the service starting after us): the loop retries each cycle.
    client = InferenceClient.unix(socket) if socket.exists() or not args.profile else None
    source: Source
    if args.app or args.profile:
        source = StaticSource(args.app, args.profile, client, uid=(args.uid or [0])[0])
    else:
        assert client is not None
        source = ServiceSource(client, args.uid, args.k or cfg.inference.default_k)
    prefetcher = Prefetcher(cfg, source, dry_run=args.dry_run)
    if args.restore:
        prefetcher.recover()
        return 0
    prefetcher.install_signals()
    try:
        return prefetcher.run(once=args.once)
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
