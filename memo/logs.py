"""One log format for every MEMO service, so that `make up`'s log files read alike."""

from __future__ import annotations

import logging
import sys


def setup(service: str, level: str = "INFO") -> logging.Logger:
    """Configure the root logger for a service's process and return the service's logger."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {service}[%(process)d] %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # One line per HTTP request (httpx logs each at INFO) is noise at INFO: requests show at DEBUG.
    if logging.getLogger().level > logging.DEBUG:
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return logging.getLogger(service)
