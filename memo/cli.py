"""The `memo` command line: one entry point, one subcommand per job, each with an examples block.

Subcommands import their implementation lazily so that `memo --help` stays fast and a missing
optional dependency only affects the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence

from memo import __version__
from memo import config as memo_config

EXAMPLES = """\
examples:
  sudo make up                                         # start MEMO (or: sudo memo up); stop: make down
  memo status                                          # is each service healthy, and what did it achieve
  memo predict                                         # your most likely next programs
  memo profile /usr/bin/vim.basic                      # what a program reads at start
  memo explain /usr/bin/git                            # why it ranks where it does
  sudo memo trace                                      # live launches, like execsnoop
  memo eval --input ../shared/data/sea-dev.csv         # replay a trace, print accuracy per model
  memo eval --input trace.csv --json --plot out.png    # machine-readable result and a bar chart
  memo config                                          # the configuration in force, as JSON
  memo config --toml > /etc/memo/memo.toml             # a documented config file to edit
"""

# name -> (module:function that adds the subparser's arguments and returns its handler, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("inference.evaluate:add_cli", "replay a user,ts,app CSV online and score every predictor"),
    "up": ("memo.updown:add_up_cli", "start collector, inference and prefetcher, supervised"),
    "down": ("memo.updown:add_down_cli", "stop MEMO's services cleanly"),
    "status": ("memo.status:add_cli", "health of each service, events/s, lost, accuracy, prefetch hit rate"),
    "predict": ("memo.queries:add_predict_cli", "a user's most likely next programs"),
    "profile": ("memo.queries:add_profile_cli", "the file ranges a program reads at start"),
    "explain": ("memo.queries:add_explain_cli", "why a program ranks where it does, per model"),
    "trace": ("memo.trace:add_cli", "live program launches and exits (like execsnoop)"),
}


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = memo_config.load()
    print(memo_config.render_toml(cfg) if args.toml else json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memo",
        description="MEMO, a predictive memory manager for Linux.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"memo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cfg = sub.add_parser("config", help="print the configuration in force")
    cfg.add_argument("--toml", action="store_true", help="as a commented TOML file (deploy/memo.toml)")
    cfg.set_defaults(handler=_cmd_config)
    for name, (target, help_text) in SUBCOMMANDS.items():
        module_name, func_name = target.split(":")
        try:
            add_cli: Callable[[argparse.ArgumentParser], None] = getattr(
                importlib.import_module(module_name), func_name
            )
        except ImportError as exc:
            missing = sub.add_parser(name, help=f"{help_text} (unavailable: {exc})")
            missing.set_defaults(handler=lambda _a, exc=exc: _unavailable(exc))
            continue
        sp = sub.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_cli(sp)
    return parser


def _unavailable(exc: Exception) -> int:
    print(f"memo: this command is unavailable: {exc}. Run `make setup` to install MEMO's dependencies.",
          file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from memo.api import ServiceDown

    try:
        return int(args.handler(args) or 0)
    except ServiceDown as exc:
        print(f"memo {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
