"""The master's one pid file: refused if live, replaced if stale, removed if ours."""

from __future__ import annotations

import logging
import os
from typing import Optional

from ..errors import StartError
from .handoff import predecessor_pid
from .platform import write_atomically

log = logging.getLogger("prefork_waitress")


def _read_pid(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip() or "0") or None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PidFile:
    """Writes this process's pid atomically and removes it only while it is still ours."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid: Optional[int] = None

    def create(self) -> None:
        """Write our pid; fail if the file names another live process."""
        old = _read_pid(self.path)
        if old is not None and old == predecessor_pid():
            self.pid = os.getpid()  # an upgrade: the file moves to this pid once every slot serves
            return
        if old is not None and old != os.getpid() and _is_alive(old):
            raise StartError(
                f"pid file {self.path} names process {old}, which is running; "
                "stop it first, or remove the file if that pid is not a prefork-waitress master"
            )
        if old is not None:
            log.info("replacing stale pid file %s (process %d is gone)", self.path, old)
        elif _has_content(self.path):
            log.warning("pid file %s does not hold a process id; replacing it", self.path)
        self.pid = os.getpid()
        try:
            write_atomically(self.path, f"{self.pid}\n")
        except OSError as exc:
            raise StartError(f"cannot write pid file {self.path}: {exc.strerror or exc}") from None

    def remove(self) -> None:
        """Remove the file if it still holds our pid (a successor may own it now)."""
        if self.pid is not None and _read_pid(self.path) == self.pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.pid = None
