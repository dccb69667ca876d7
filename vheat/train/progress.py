"""Where progress goes: tqdm bars on a terminal, plain log lines everywhere else.

A bar redraws itself with carriage returns; in a pipe, a CI log or a ``nohup`` file every frame
stays. ``train.progress`` (or ``--progress``): ``auto`` (the default) draws bars only when stderr
is a terminal, ``on`` always, ``off`` never. Without bars the trainer logs one line per
``train.log_every`` steps and one per epoch.
"""
from __future__ import annotations

import sys

from . import distributed as du


def bars_wanted(setting: str) -> bool:
    """``train.progress`` (auto | on | off) resolved for this process's stderr."""
    if setting == "auto":
        return sys.stderr.isatty()
    return setting == "on"


def show_bars(cfg: dict) -> bool:
    """Bars for this run: rank 0 only, per ``train.progress``."""
    return du.is_main() and bars_wanted(cfg["train"]["progress"])
