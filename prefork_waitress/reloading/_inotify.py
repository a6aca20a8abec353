"""Minimal Linux inotify binding through ctypes: one non-blocking fd, no thread."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from typing import Any, NamedTuple

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000

# Linux defines IN_NONBLOCK/IN_CLOEXEC as O_NONBLOCK/O_CLOEXEC (they vary by arch).
IN_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
IN_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len
_READ_SIZE = 64 * 1024

_libc: Any | None = None
_libc_loaded = False


class Event(NamedTuple):
    """One inotify event: the watch descriptor, mask and file name (may be "")."""

    wd: int
    mask: int
    cookie: int
    name: str


def _load_libc() -> Any | None:
    """Return libc with the inotify functions typed, or None when unavailable."""
    global _libc, _libc_loaded
    if _libc_loaded:
        return _libc
    _libc_loaded = True
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1, add, rm = (libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch)
    except (OSError, AttributeError):
        return None
    init1.argtypes, init1.restype = [ctypes.c_int], ctypes.c_int
    add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add.restype = ctypes.c_int
    rm.argtypes, rm.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _libc = libc
    return _libc


def available() -> bool:
    """Tell whether this platform's libc offers inotify (Linux only)."""
    return _load_libc() is not None


def _os_error(what: str, path: str | None = None) -> OSError:
    """Build the OSError for the errno a failed libc call left behind."""
    code = ctypes.get_errno() or errno.EIO
    message = f"{what}: {os.strerror(code)}"
    return OSError(code, message) if path is None else OSError(code, message, path)


def parse_events(data: bytes) -> list[Event]:
    """Split a buffer read from an inotify fd into events."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        raw = data[start : start + length].rstrip(b"\0")
        events.append(Event(wd, mask, cookie, os.fsdecode(raw)))
        offset = start + length
    return events


class Inotify:
    """An inotify instance (IN_NONBLOCK | IN_CLOEXEC) with add/remove/read."""

    def __init__(self) -> None:
        libc = _load_libc()
        if libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available here")
        self._libc = libc
        fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            raise _os_error("inotify_init1")
        self._fd = fd

    def fileno(self) -> int:
        """Return the inotify fd: readable when events are queued."""
        if self._fd < 0:
            raise ValueError("inotify instance is closed")
        return self._fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` for ``mask`` events and return its watch descriptor."""
        wd = int(self._libc.inotify_add_watch(self.fileno(), os.fsencode(path), mask))
        if wd < 0:
            raise _os_error("inotify_add_watch", path)
        return wd

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; a watch the kernel already dropped is ignored."""
        self._libc.inotify_rm_watch(self.fileno(), wd)

    def read_events(self) -> list[Event]:
        """Drain every queued event without blocking."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fileno(), _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return events
            if not data:
                return events
            events.extend(parse_events(data))

    def close(self) -> None:
        """Close the fd (which drops every watch); idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
