"""The ``vheat`` command line (``python -m vheat``)."""
from .main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
