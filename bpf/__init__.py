"""MEMO's eBPF programs (C, loaded by the collector with bcc). This package only locates them."""

from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
