"""FileWatcher: a selectable fd that reports changed files, for a single-threaded loop."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Union, final

from . import _inotify
from ._backends import Backend, InotifyBackend, PollingBackend

StrPath = Union[str, "os.PathLike[str]"]

log = logging.getLogger("prefork_waitress.reloading")

# inotify errors that only mean "the caller's path is wrong", not "use polling".
_PATH_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM)


@final
class ChangeBatch:
    """The one debouncer of file changes: a batch is settled once no change came for
    ``quiet`` seconds, and at most ``max_delay`` seconds after its first change.

    Blocking callers (``FileWatcher.changed_files``) wait for :attr:`deadline`;
    the master sets a loop timer for it instead.
    """

    def __init__(self, quiet: float, max_delay: float) -> None:
        self.quiet = quiet
        self.max_delay = max_delay
        self.paths: set[str] = set()
        self.deadline: float | None = None
        self._started = 0.0

    def add(self, paths: Iterable[str], now: float | None = None) -> float | None:
        """Add changed paths; returns when the batch settles (None while it is empty)."""
        paths = set(paths)
        if paths:
            now = time.monotonic() if now is None else now
            if not self.paths:
                self._started = now
            self.paths |= paths
            self.deadline = min(now + self.quiet, self._started + self.max_delay)
        return self.deadline

    def take(self) -> set[str]:
        """The settled batch; the next change starts a new one."""
        paths, self.paths, self.deadline = self.paths, set(), None
        return paths


class FileWatcher:
    """Watch files for changes without any thread.

    On Linux the directories of the files are watched with inotify (so saves
    that write a temporary file and rename it over the original are seen) and
    ``fileno()`` is the inotify fd.  Elsewhere, when inotify is unavailable or
    with ``use_polling=True``, files are compared by stat() (mtime, ctime, size,
    inode) and ``fileno()`` is the read end of a pipe that ``poll()`` makes
    readable.

    Integration with an event loop (the master's): register ``fileno()`` as
    readable -> call ``changed_files()``; and whenever ``next_poll_deadline()``
    (a ``time.monotonic()`` value) is not None, call ``poll()`` at that time and,
    if it returns True, ``changed_files()``.  In polling mode the deadline is
    every ``poll_interval`` seconds; with inotify it is None except while a
    watched directory was deleted and is being re-watched.

    Debounce: ``changed_files()`` returns at once with an empty set when nothing
    is pending.  Otherwise it keeps collecting until no further change arrives
    for ``debounce`` seconds, and never longer than ``max_delay`` seconds in
    all, so one editor save touching several files is one batch.  The caller
    thus blocks for ``debounce`` (0.05 s) per batch, at worst ``max_delay``
    (0.5 s); ``debounce=0`` never blocks.
    """

    def __init__(
        self,
        paths: Iterable[StrPath] = (),
        *,
        debounce: float = 0.05,
        max_delay: float = 0.5,
        use_polling: bool = False,
        poll_interval: float = 0.25,
    ) -> None:
        if debounce < 0 or max_delay < 0 or poll_interval <= 0:
            raise ValueError("debounce, max_delay must be >= 0, poll_interval > 0")
        self.debounce = debounce
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self._paths: set[str] = set()
        wanted = [os.path.abspath(os.fspath(p)) for p in paths]
        self._backend = self._open_backend(wanted, use_polling)
        self._paths.update(wanted)

    def _open_backend(self, paths: list[str], use_polling: bool) -> Backend:
        """Start inotify over ``paths`` if possible, else the polling backend."""
        if not use_polling and _inotify.available():
            try:
                return self._filled(InotifyBackend(self.poll_interval), paths)
            except OSError as exc:
                if exc.errno in _PATH_ERRNOS:
                    raise
                log.warning("inotify unusable (%s): polling files instead", exc)
        return self._filled(PollingBackend(self.poll_interval), paths)

    @staticmethod
    def _filled(backend: Backend, paths: list[str]) -> Backend:
        """Add ``paths`` to a new backend, closing it if that fails."""
        try:
            for path in paths:
                backend.add(path)
        except BaseException:
            backend.close()
            raise
        return backend

    @property
    def polling(self) -> bool:
        """True when changes are found by stat() polling rather than inotify."""
        return isinstance(self._backend, PollingBackend)

    @property
    def paths(self) -> frozenset[str]:
        """The absolute paths being watched."""
        return frozenset(self._paths)

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    _closed = False

    def fileno(self) -> int:
        """Return an fd that becomes readable when a watched file changed."""
        self._check_open()
        return self._backend.fileno()

    def add(self, path: StrPath) -> None:
        """Watch one more file; it may not exist yet, but its directory must."""
        self._check_open()
        absolute = os.path.abspath(os.fspath(path))
        if absolute not in self._paths:
            self._backend.add(absolute)
            self._paths.add(absolute)

    def update(self, paths: Iterable[StrPath]) -> None:
        """Watch every path of ``paths`` (already watched ones are kept)."""
        for path in paths:
            self.add(path)

    def changed_files(self) -> set[str]:
        """Return the watched paths changed since the last call (debounced, see class)."""
        self._check_open()
        batch = ChangeBatch(self.debounce, self.max_delay)
        deadline = batch.add(self._backend.collect())
        if deadline is None or self.debounce <= 0:
            return batch.take()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return batch.take()
            self._backend.wait(remaining)
            deadline = batch.add(self._backend.collect()) or deadline

    def poll(self) -> bool:
        """Do the timer's work (a stat sweep when polling); True if changes wait."""
        self._check_open()
        return self._backend.poll()

    def next_poll_deadline(self) -> float | None:
        """Return the time.monotonic() when poll() is due, or None if never."""
        self._check_open()
        return self._backend.next_poll_deadline()

    def close(self) -> None:
        """Release the fd(s); idempotent."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def _check_open(self) -> None:
        """Raise ValueError when the watcher was closed."""
        if self._closed:
            raise ValueError("FileWatcher is closed")

    def __enter__(self) -> FileWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "polling" if self.polling else "inotify"
        return f"<FileWatcher {mode} {len(self._paths)} files>"
