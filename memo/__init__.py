"""MEMO's shared package: the wire contract, configuration and the `memo` command line."""

__version__ = "0.1.0"
