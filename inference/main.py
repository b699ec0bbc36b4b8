"""`memo-inference`: the inference service (unprivileged). Configuration from memo.config (TOML + env)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
import sys
from collections.abc import Sequence

from memo import config as memo_config
from memo import helpers, logs

EXAMPLES = """\
examples:
  memo-inference                                        # unix socket + http://127.0.0.1:8077
  MEMO_INFERENCE__PORT=0 MEMO_PATHS__RUN_DIR=/tmp/r MEMO_PATHS__DATA_DIR=/tmp/d memo-inference
  curl --unix-socket /run/memo/inference.sock http://x/v1/sources
  curl 'http://127.0.0.1:8077/v1/predictions?uid=1000&k=5'
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memo-inference", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack to the log
    config = memo_config.load()
    helpers.private_files()
    logs.setup("memo-inference", config.log_level)
    from inference.server import serve  # FastAPI and the predictors load after --help

    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
