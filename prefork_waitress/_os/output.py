"""Pointing a process's stdout and stderr at the output (start, log rotation, workers)."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List

_reopeners: List[Callable[[], None]] = []  # other files of this process to reopen on rotation


def flush_stdio() -> None:
    """Flush sys.stdout and sys.stderr, ignoring streams that are gone."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def open_output(output: Any) -> int:
    """A new fd on ``output``: a path opened for appending (so rotation is left alone), or a file object's."""
    if isinstance(output, str):
        return os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return os.dup(output.fileno())


def redirect_stdio(output: Any) -> None:
    """Put ``output`` (a path or a file object) on fds 1 and 2."""
    flush_stdio()
    fd = open_output(output)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def on_reopen(callback: Callable[[], None]) -> None:
    """Have :func:`reopen_files` call ``callback`` (a worker's access log registers itself)."""
    _reopeners.append(callback)


def forget_reopeners() -> None:
    """A process forked from a worker: the files registered there are that worker's, not its own."""
    _reopeners.clear()


def reopen_files() -> None:
    """Log rotation: reopen every file registered with :func:`on_reopen` in this process."""
    for reopen in _reopeners:
        reopen()
