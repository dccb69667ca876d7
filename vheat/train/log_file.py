"""``<output>/log.txt``: a copy of rank 0's log lines that steps aside, with one warning, when it cannot be
written.

The file repeats what stdout shows, so a full disk or a file size limit must neither stop the run nor
print logging's "--- Logging error ---" traceback for every line. The first failed write warns once on
stderr and detaches the file (a torn last line may stay in it); stdout keeps every line. When the disk
is really full, the next checkpoint write ends the run with its own one-line error.
"""
from __future__ import annotations

import logging
import sys

from ..io import failure_reason


class LogFile(logging.FileHandler):
    def __init__(self, path: str):
        super().__init__(path, encoding="utf-8")
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:  # a closed FileHandler would reopen its file on the next record
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        why = failure_reason(sys.exc_info()[1])
        if why is None:  # not an I/O failure (a bad format string): logging's own report
            super().handleError(record)
            return
        self.failed = True
        try:
            self.close()
        except OSError:  # the buffered line fails again; the file is closed all the same
            pass
        print(f"vheat: warning: cannot write {self.baseFilename}: {why}; the run goes on and logs to stdout only",
              file=sys.stderr, flush=True)
