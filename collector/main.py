"""memo-collector: trace launches, faults, page-cache fills and swap-ins; send them to inference.

This module only wires the pieces: a source (collector.sources), a sink (collector.sinks), signals.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from memo import config as memo_config
from memo import helpers, logs, notify

if TYPE_CHECKING:
    from collector.sinks import ServiceSink
    from collector.sources import Source

EXAMPLES = """\
examples:
  sudo memo-collector --stdout                  # print every event as one JSON object per line
  sudo memo-collector --stdout --duration 10    # ... for 10 seconds, then exit
  sudo memo-collector                           # stream to the inference service's Unix socket
  sudo memo-collector --keep-pins               # leave /sys/fs/bpf/memo/* pinned after exit
  sudo bpftool map dump pinned /sys/fs/bpf/memo/counts   # per-process fault counts, while it runs
"""
log = logging.getLogger("memo-collector")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memo-collector",
        description="Trace program launches, page faults, page-cache fills and swap-ins with eBPF "
        "(proc connector fallback) and stream them to MEMO's inference service.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stdout", action="store_true", help="print events as JSON lines instead of sending")
    p.add_argument("--duration", type=float, metavar="S", help="exit after S seconds")
    p.add_argument("--keep-pins", action="store_true", help="keep pinned programs and maps on exit")
    p.add_argument("--source-id", help="identity of this stream (default: config, else hostname)")
    p.add_argument("--no-bpf", action="store_true", help="use the proc connector even if eBPF works")
    p.add_argument("--swap-source", choices=["tracepoint", "fentry", "kprobe"],
                   help="force one swap-in source (default: the first that works, in this order)")
    return p


def source_id(configured: str) -> str:
    raw = configured or socket.gethostname() or "memo"
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", raw)[:128]


def _open_source(args: argparse.Namespace, cfg: memo_config.Config) -> Source:
    from collector import loader, sources

    if args.no_bpf:
        log.warning("--no-bpf: FALLING BACK to the proc connector: exec/fork/exit only.")
    else:
        try:
            src = sources.BPFSource(cfg.collector, args.swap_source)
            log.info("tracing with eBPF (programs and maps pinned under %s)", cfg.collector.bpf_pin_dir)
            return src
        except loader.LoadError as exc:
            log.warning("eBPF unavailable (%s). FALLING BACK to the proc connector: exec/fork/exit only, "
                        "no faults, page-cache or swap-in records.", exc)
    return sources.ProcConnectorSource()


def _record_downtime(src: Source, sink: ServiceSink) -> None:
    """Programs started since the previous run stopped (and still running) become exec records."""
    from collector import rescan

    assert sink.last_run_ns is not None
    missed = rescan.missed_execs(sink.last_run_ns, time.monotonic_ns(), skip=frozenset({os.getpid()}))
    if not missed:
        return
    enricher = getattr(src, "enricher", None)
    sink.emit([enricher.exec(ev) for ev in missed] if enricher is not None else missed)
    log.info("%d programs started while the collector was down (%.0f s): recorded from /proc", len(missed),
             (time.monotonic_ns() - sink.last_run_ns) / 1e9)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = memo_config.load()
    if args.keep_pins:
        cfg.collector.keep_pins = True
    helpers.private_files()
    logs.setup("memo-collector", cfg.log_level)
    from collector import sinks

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        src = _open_source(args, cfg)
        src.start(stop)
    except Exception as exc:
        log.error("no event source works here: %s", exc)
        return 1
    try:
        sink = sinks.StdoutSink() if args.stdout else sinks.ServiceSink(
            cfg, source_id(args.source_id or cfg.collector.source_id))
    except Exception as exc:
        log.error("cannot set up the output: %s", exc)
        src.close()
        return 1
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    if isinstance(sink, sinks.ServiceSink) and sink.last_run_ns is not None:
        _record_downtime(src, sink)
    log.info("ready")
    notify.ready()
    started = time.monotonic()
    try:
        src.run(sink.emit, stop, sink.tick)
    finally:
        try:
            sink.close()
        finally:
            src.close()
        log.info("stopped after %.1f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
