"""One training run per output folder at a time.

Two runs writing one folder overwrite each other's checkpoints, interleave their metrics and may
resume from each other's live files. The first run holds an exclusive ``flock`` on
``<output>/.vheat-train.lock`` for its whole life; the kernel releases it when the process ends,
however it ends (exit, exception, kill -9), so a crash never leaves the folder locked. A second
run is refused at once with one line naming the holder's pid and host.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from typing import Iterator

from .config_rules import ConfigError

LOCK_FILE = ".vheat-train.lock"


class OutputBusyError(ConfigError):
    """Another run holds the output folder."""


def _open_locked(path: str) -> int:
    """A descriptor of ``path`` holding its exclusive lock; raises OutputBusyError if another process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "a process that is still starting"
            os.close(fd)
            folder = os.path.dirname(path)
            raise OutputBusyError(f"output folder {folder} is in use by another training run ({holder}); wait for "
                                  f"it to finish or write to another --output") from None
        # The holder unlinks the file on release: if that happened between our open and flock, we
        # locked a file nobody else will open; lock the current one instead.
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def output_lock(folder: str) -> Iterator[None]:
    """Holds ``folder``'s run lock for the body (creates the folder if needed)."""
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, LOCK_FILE)
        fd = _open_locked(path)
    except OSError as exc:
        raise ConfigError(f"output {folder} cannot be used: {exc.strerror} ({exc.filename or folder})") from None
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n".encode(), 0)
        yield
    finally:
        os.unlink(path)  # still locked here: a run opening it now retries on a fresh file
        os.close(fd)
