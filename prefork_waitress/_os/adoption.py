"""Linux pieces that let the master keep a process a worker forked: subreaper, pidfd, fd passing.

A reforked worker is forked by another worker (the template), through an
intermediate process that exits at once. While the master is a child
subreaper (``PR_SET_CHILD_SUBREAPER``) the orphan is re-parented to the
master, not to init, so the master reaps it and learns its exit status; a
pidfd (``pidfd_open``) is the sentinel ``multiprocessing.connection.wait``
waits on. File descriptors reach the template as ``SCM_RIGHTS`` on its Pipe.
"""

from __future__ import annotations

import os
import select
import socket
import sys
from typing import Any, List, Optional

from .platform import prctl

PR_SET_CHILD_SUBREAPER = 36
FD_CARRIER = b"F"  # the one byte the SCM_RIGHTS data rides on


def why_no_refork() -> Optional[str]:
    """None where reforking works here, else what is missing (a sentence for an error message)."""
    if not sys.platform.startswith("linux"):
        return f"it needs Linux (child subreapers, pidfds), and this is {sys.platform}"
    missing = [name for name in ("pidfd_open", "memfd_create", "waitstatus_to_exitcode") if not hasattr(os, name)]
    if missing:
        return f"this Python has no os.{', os.'.join(missing)} (Python 3.9+ on Linux 5.3+ has them)"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as exc:
        return f"pidfd_open fails here ({exc.strerror or exc}); it needs Linux 5.3 or later"
    return None


def set_child_subreaper(on: bool) -> bool:
    """Make orphaned descendants this process's children (on) or init's (off); False where unsupported."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


class AdoptedProcess:
    """A child that another process forked: the ``BaseProcess`` subset the pool uses (pid, sentinel,
    join, exitcode, close), over a pidfd and ``waitpid``."""

    def __init__(self, pid: int) -> None:
        """Raises OSError (ESRCH) if ``pid`` is already gone and reaped."""
        self.pid = pid
        self.sentinel: int = os.pidfd_open(pid)
        self.exitcode: Optional[int] = None

    def join(self) -> None:
        """Reap it (it has exited: the pidfd was readable); exitcode None if it was not our child."""
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return
        self.exitcode = os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


class PidfdProcess:
    """A ``multiprocessing`` child whose exit is watched through a pidfd, not through its sentinel pipe.

    The worker holds the write end of that pipe, and so does every process a
    template forks from it: with reforking, the pipe would stay open after the
    worker exits (and the master would never reap it) while a reforked worker lives.
    """

    def __init__(self, process: Any) -> None:
        """Raises OSError if the pidfd cannot be opened (the caller still owns ``process``)."""
        self.process = process
        self.pid: int = process.pid
        self.sentinel: int = os.pidfd_open(process.pid)

    @property
    def exitcode(self) -> Optional[int]:
        code: Optional[int] = self.process.exitcode
        return code

    def join(self) -> None:
        self.process.join()

    def close(self) -> None:
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1
        self.process.close()


def send_fds(sock: socket.socket, fds: List[int], flags: int = 0) -> int:
    """Send ``fds`` as one byte with SCM_RIGHTS; returns the bytes sent (0: would block)."""
    try:
        return socket.send_fds(sock, [FD_CARRIER], fds, flags)
    except (BlockingIOError, InterruptedError):
        return 0


def receive_fds(fd: int, count: int, timeout: float = 5.0) -> List[int]:
    """Read the byte :func:`send_fds` sent on ``fd`` and the ``count`` fds it carries (OSError if not)."""
    if not select.select([fd], [], [], timeout)[0]:
        raise OSError(f"the master's {count} file descriptors did not arrive within {timeout:g} s")
    sock = socket.socket(fileno=fd)
    try:
        data, fds, _, _ = socket.recv_fds(sock, 1, count)
    finally:
        sock.detach()
    if data != FD_CARRIER or len(fds) != count:
        for received in fds:
            os.close(received)
        raise OSError(f"expected {count} file descriptors from the master, got {len(fds)}")
    return list(fds)
