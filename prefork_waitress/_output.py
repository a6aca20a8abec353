"""Pointing a process's stdout and stderr at the output file (start, log rotation)."""

from __future__ import annotations

import os
import sys


def redirect_stdio(path: str) -> None:
    """Open ``path`` for appending and put it on fds 1 and 2, so rotated logs are left alone."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
