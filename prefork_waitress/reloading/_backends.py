"""The two change sources behind FileWatcher: inotify on directories, and stat polling."""

from __future__ import annotations

import errno
import os
import select
import time
from typing import Protocol

from . import _inotify
from ._inotify import Inotify

# Events that mean "the file at this name is now different".  IN_MODIFY is left
# out on purpose: it fires on every write(), before the file is complete, while
# IN_CLOSE_WRITE fires once when the writer is done.
FILE_EVENTS = (
    _inotify.IN_CLOSE_WRITE
    | _inotify.IN_MOVED_TO
    | _inotify.IN_MOVED_FROM
    | _inotify.IN_CREATE
    | _inotify.IN_DELETE
    | _inotify.IN_ATTRIB
)
# Events about the watched directory itself: its watch is gone or stale.
DIR_GONE = _inotify.IN_DELETE_SELF | _inotify.IN_MOVE_SELF | _inotify.IN_IGNORED
WATCH_MASK = FILE_EVENTS | _inotify.IN_DELETE_SELF | _inotify.IN_MOVE_SELF | _inotify.IN_ONLYDIR

Signature = tuple[int, int, int, int]


class Backend(Protocol):
    """What FileWatcher needs from a change source."""

    def fileno(self) -> int:
        """Return the fd that becomes readable on change."""

    def add(self, path: str) -> None:
        """Start watching an absolute path."""

    def collect(self) -> set[str]:
        """Return the paths changed since the last collect(), without blocking."""

    def wait(self, timeout: float) -> None:
        """Block at most ``timeout`` seconds for more changes."""

    def poll(self) -> bool:
        """Do the periodic work; True when changes wait for collect()."""

    def next_poll_deadline(self) -> float | None:
        """Return the time.monotonic() when poll() is due, or None."""

    def close(self) -> None:
        """Release the fds."""


def require_directory(path: str) -> str:
    """Return the directory of ``path``; raise FileNotFoundError if it is missing."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "directory of watched file does not exist", directory)
    return directory


def stat_signature(path: str) -> Signature | None:
    """Return what polling compares for ``path`` (None when it does not exist)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class InotifyBackend:
    """Watch the directories of the files, keep events about the watched names."""

    def __init__(self, poll_interval: float) -> None:
        self._inotify = Inotify()
        self._poll_interval = poll_interval
        self._dir_wd: dict[str, int] = {}
        self._wd_dirs: dict[int, set[str]] = {}
        # directory -> file name in it -> watched paths reported for that name
        self._names: dict[str, dict[str, set[str]]] = {}
        self._lost: set[str] = set()  # directories whose watch the kernel dropped
        self._pending: set[str] = set()  # found by poll(), returned by collect()
        self._next_retry = time.monotonic() + poll_interval

    def fileno(self) -> int:
        """Return the inotify fd."""
        return self._inotify.fileno()

    def add(self, path: str) -> None:
        """Watch ``path`` through its directory (and its symlink target's, if any)."""
        self._add_name(require_directory(path), path, path)
        real = os.path.realpath(path)
        if real != path and os.path.isdir(os.path.dirname(real)):
            try:
                self._add_name(os.path.dirname(real), real, path)
            except OSError:
                pass  # the link itself is watched; the target is a bonus

    def _add_name(self, directory: str, target: str, reported: str) -> None:
        """Map ``target``'s name in ``directory`` to ``reported``, watching the dir."""
        if directory not in self._dir_wd and directory not in self._lost:
            self._watch_dir(directory)
        names = self._names.setdefault(directory, {})
        names.setdefault(os.path.basename(target), set()).add(reported)

    def _watch_dir(self, directory: str) -> None:
        """Add the inotify watch for one directory."""
        wd = self._inotify.add_watch(directory, WATCH_MASK)
        self._dir_wd[directory] = wd
        self._wd_dirs.setdefault(wd, set()).add(directory)

    def _paths_in(self, directory: str) -> set[str]:
        """Return every watched path reported for names in ``directory``."""
        return set().union(*self._names.get(directory, {}).values())

    def _all_paths(self) -> set[str]:
        """Return every watched path (after a queue overflow, all may have changed)."""
        return set().union(*(self._paths_in(d) for d in self._names))

    def _lose(self, directory: str) -> None:
        """Forget a directory's watch (deleted or moved); poll() retries it."""
        wd = self._dir_wd.pop(directory, None)
        self._lost.add(directory)
        if wd is None:
            return
        dirs = self._wd_dirs.get(wd, set())
        dirs.discard(directory)
        if not dirs:
            self._wd_dirs.pop(wd, None)
            self._inotify.rm_watch(wd)

    def collect(self) -> set[str]:
        """Drain queued events and return the watched paths they concern."""
        changed: set[str] = set()
        for event in self._inotify.read_events():
            if event.mask & _inotify.IN_Q_OVERFLOW:
                changed |= self._all_paths()
                continue
            for directory in list(self._wd_dirs.get(event.wd, ())):
                if event.mask & DIR_GONE and not event.name:
                    changed |= self._paths_in(directory)
                    self._lose(directory)
                elif event.mask & FILE_EVENTS:
                    changed |= self._names[directory].get(event.name, set())
        changed |= self._pending | self._retry_lost()
        self._pending = set()
        return changed

    def _retry_lost(self) -> set[str]:
        """Re-watch lost directories that exist again; their files count as changed."""
        changed: set[str] = set()
        for directory in sorted(self._lost):
            if not os.path.isdir(directory):
                continue
            try:
                self._watch_dir(directory)
            except OSError:
                continue
            self._lost.discard(directory)
            changed |= self._paths_in(directory)
        return changed

    def wait(self, timeout: float) -> None:
        """Block until the fd is readable or ``timeout`` seconds passed."""
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        poller.poll(max(0.0, timeout) * 1000.0)

    def poll(self) -> bool:
        """Timer work, only needed to re-watch deleted directories; True if changes wait."""
        self._next_retry = time.monotonic() + self._poll_interval
        self._pending |= self._retry_lost()
        return bool(self._pending)

    def next_poll_deadline(self) -> float | None:
        """Return when poll() should run: only while a directory watch is lost."""
        return self._next_retry if self._lost else None

    def close(self) -> None:
        """Close the inotify fd."""
        self._inotify.close()


class PollingBackend:
    """Compare stat() results on each sweep; a pipe makes changes selectable."""

    def __init__(self, poll_interval: float) -> None:
        self._poll_interval = poll_interval
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._signatures: dict[str, Signature | None] = {}
        self._pending: set[str] = set()
        self._signalled = False
        self._next_poll = time.monotonic() + poll_interval

    def fileno(self) -> int:
        """Return the pipe's read end: readable once poll() found a change."""
        if self._read_fd < 0:
            raise ValueError("watcher is closed")
        return self._read_fd

    def add(self, path: str) -> None:
        """Record the current state of ``path`` as the baseline."""
        require_directory(path)
        if path not in self._signatures:
            self._signatures[path] = stat_signature(path)

    def _sweep(self) -> set[str]:
        """Stat every path; return those whose signature changed since the last sweep."""
        changed = set()
        for path, old in self._signatures.items():
            new = stat_signature(path)
            if new != old:
                self._signatures[path] = new
                changed.add(path)
        self._next_poll = time.monotonic() + self._poll_interval
        return changed

    def poll(self) -> bool:
        """Sweep now; on change make the fd readable; True if changes wait."""
        self._pending |= self._sweep()
        if self._pending and not self._signalled:
            try:
                os.write(self._write_fd, b"\0")
                self._signalled = True
            except BlockingIOError:
                pass
        return bool(self._pending)

    def collect(self) -> set[str]:
        """Drain the pipe and return pending changes plus a fresh sweep's."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._signalled = False
        changed = self._pending | self._sweep()
        self._pending = set()
        return changed

    def wait(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds: the next collect() sweeps again."""
        time.sleep(max(0.0, timeout))

    def next_poll_deadline(self) -> float | None:
        """Return the time.monotonic() value when the next sweep is due."""
        return self._next_poll

    def close(self) -> None:
        """Close both ends of the pipe; idempotent."""
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1
