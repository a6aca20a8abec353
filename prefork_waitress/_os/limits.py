"""Limits the master runs into: the fd limit (raised to the hard limit at start, a clear error when
hit), a preload that never ends (a deadline).

The master is single-threaded, so an import in it can only be bounded by a
signal: :func:`time_limit` arms ``SIGALRM`` for the import's duration and
:func:`stop_on_sigterm` turns a SIGTERM that arrives before the event loop
exists into an exception, so ``start()``'s cleanup (pid file, sockets) runs.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import signal
import threading
from types import FrameType
from typing import Any, Iterator, Optional

OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


class TimeLimitExceeded(Exception):
    """The bounded work (a preloaded import) took longer than its limit."""


class StopRequested(BaseException):
    """SIGTERM arrived before the master's loop could take it: stop, cleaning up on the way out.

    A BaseException, so the import machinery and the app's own ``except
    Exception`` clauses do not swallow it.
    """


# The soft RLIMIT_NOFILE the process had before raise_fd_limit() (None: not raised).
_original_soft_fd_limit: Optional[int] = None


def raise_fd_limit() -> Optional[int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (as Go's runtime does); return the new soft limit.

    The master holds a socket and a Pipe per worker plus its clients' connections:
    a low default soft limit (1024) should not be what stops it when the hard
    limit allows more. None if nothing changed (already at the hard limit, or refused).
    """
    global _original_soft_fd_limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _kernel_fd_ceiling()
    if target is None or (soft != resource.RLIM_INFINITY and soft >= target):
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    if _original_soft_fd_limit is None:
        _original_soft_fd_limit = soft
    return target


def restore_fd_limit() -> None:
    """In a worker: put back the soft limit the master started with (the app runs under the user's limit)."""
    if _original_soft_fd_limit is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_original_soft_fd_limit, hard))
    except (ValueError, OSError):
        pass  # the hard limit was lowered below it meanwhile: keep what there is


def _kernel_fd_ceiling() -> Optional[int]:
    """An unlimited hard limit still stops at fs.nr_open (Linux); None where it cannot be read."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def fd_limit_text() -> str:
    """The current ``RLIMIT_NOFILE`` as ``soft/hard``, for a log line."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "/".join("unlimited" if n == resource.RLIM_INFINITY else str(n) for n in (soft, hard))


def is_out_of_fds(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in OUT_OF_FDS


def out_of_fds_message(doing: str, exc: OSError) -> str:
    """One line: what failed, the limit hit, and what to raise."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if exc.errno == errno.ENFILE:
        return f"{doing}: the system's file table is full (ENFILE); raise fs.file-max or close other programs"
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    return (
        f"{doing}: out of file descriptors (the limit is {soft}, hard limit {hard_text}); "
        "raise it with `ulimit -n` (LimitNOFILE= under systemd) or run fewer workers"
    )


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: Optional[float], what: str) -> Iterator[None]:
    """Raise TimeLimitExceeded in the block if it runs longer than ``seconds`` (None: no limit)."""
    if seconds is None or not _in_main_thread():
        yield
        return

    def expired(signum: int, frame: Optional[FrameType]) -> None:
        raise TimeLimitExceeded(f"{what} took longer than boot_timeout ({seconds:g} s)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """In the block, SIGTERM raises StopRequested (the default would kill the process, leaving files)."""
    if not _in_main_thread():
        yield
        return

    def requested(signum: int, frame: Optional[FrameType]) -> Any:
        raise StopRequested()

    previous = signal.signal(signal.SIGTERM, requested)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
