"""Crash-safe file writes: write a temporary file in the same folder, fsync, os.replace.

A reader (or a resumed run) sees either the old file or the complete new one, never a
torn write; the folder is fsynced so the rename itself survives a power cut.
"""
from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from typing import Any, Callable

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputWriteError(ValueError):
    """A file could not be written (disk full, file size limit, no permission); the old file is kept.

    ``path`` and ``reason`` let a caller for whom the file is optional (a cache) say it its own way.
    """

    def __init__(self, message: str, path: str = "", reason: str = ""):
        super().__init__(message)
        self.path, self.reason = path, reason


_FULL = {errno.ENOSPC: "the disk is full", errno.EFBIG: "it exceeds the file size limit (ulimit -f)",
         errno.EDQUOT: "the disk quota is exceeded"}


def _os_error(exc: BaseException) -> "OSError | None":
    # torch.save reports a failed write as RuntimeError("... unexpected pos ...") with the OSError as context
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def failure_reason(exc: BaseException) -> "str | None":
    """Why a write failed, in words ("the disk is full"), or None when ``exc`` is no I/O failure."""
    cause = _os_error(exc)
    if cause is None:
        return None
    return _FULL.get(cause.errno, cause.strerror or str(cause))


def write_failure(path: str, exc: BaseException) -> "OutputWriteError | None":
    """The one-line error for a failed write of ``path``, or None when ``exc`` is no I/O failure."""
    why = failure_reason(exc)
    if why is None:
        return None
    return OutputWriteError(f"cannot write {path}: {why}. No file written before was changed or lost; make room "
                            f"and run the same command again (a training run resumes)", path, why)


def check_writable(path: str) -> None:
    """Raises :class:`OutputWriteError` now if ``path`` could not be written later (a results file
    asked for up front must not fail after the work is done)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "it is a folder", path)
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror}; nothing was run") from None


def atomic_write(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    """Calls ``write(f)`` on a temporary file next to ``path`` and renames it into place."""
    try:
        _write_and_replace(path, write)
    except Exception as exc:
        failure = write_failure(path, exc)
        if failure is None:
            raise
        raise failure from None


def _write_and_replace(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    atomic_write_text(path, json.dumps(obj, **dump_kwargs))


def atomic_torch_save(obj: Any, path: str) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line with a single write(2) on an O_APPEND descriptor, then fsyncs.

    A crash can at worst leave a torn last line, which :func:`read_jsonl` skips; the next
    record then starts on a fresh line instead of being glued to the torn one.
    """
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # a torn line is skipped by read_jsonl
        raise write_failure(path, exc) from None


def read_jsonl(path: str) -> list[dict]:
    records = []
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn last line of a killed run
    return records
