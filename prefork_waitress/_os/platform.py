"""Small OS-specific helpers: parent-death signal, CPU pinning, fd hygiene."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import tempfile
from typing import Any, Collection, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

log = logging.getLogger("prefork_waitress")

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PROCESS_NAME_MAX = 15  # bytes of a Linux task name (comm), without the NUL


def handled_signals() -> List[int]:
    """Signals that currently run a Python handler (inherited from the master)."""
    found = []
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                found.append(int(signum))
        except (OSError, ValueError):
            continue
    return found


def _load_libc() -> Optional[ctypes.CDLL]:
    """The C library, loaded once in the master so a forked worker need not look for it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)  # the process's own symbols include libc
    except OSError:
        return None


_LIBC = _load_libc()


def prctl(option: int, value: int) -> bool:
    """Linux ``prctl(option, value)``; False where unsupported or refused."""
    if _LIBC is None:
        return False
    try:
        return bool(_LIBC.prctl(option, value, 0, 0, 0) == 0)
    except AttributeError:
        return False


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` when the parent dies; False where unsupported."""
    return prctl(PR_SET_PDEATHSIG, signum)


def set_process_name(name: str) -> bool:
    """Name this process as ``ps -e``, ``top`` and ``pgrep`` show it (Linux ``comm``, 15 bytes).

    Threads started afterwards inherit the name; the command line (``ps -f``)
    is left as it is. False where unsupported.
    """
    if _LIBC is None:
        return False
    raw = name.encode("utf-8", "replace")[:PROCESS_NAME_MAX]
    try:
        return bool(_LIBC.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0)
    except AttributeError:
        return False


def set_command_line(text: str) -> bool:
    """Show ``text`` as this process's command line (``ps -f``, ``/proc/PID/cmdline``; Linux).

    Overwrites the original argv area in place (CPython works on its own copy
    of argv), cut to its size; only after checking that the area still holds
    exactly what ``/proc/self/cmdline`` shows. False when that cannot be done.
    """
    if _LIBC is None:
        return False
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48 and 49)
        with open("/proc/self/cmdline", "rb") as f:
            current = f.read()
    except (OSError, IndexError, ValueError):
        return False
    size = end - start
    if size < 2 or len(current) != size or ctypes.string_at(start, size) != current:
        return False
    raw = text.encode("utf-8", "replace")[: size - 1]
    ctypes.memmove(start, raw + b"\0" * (size - len(raw)), size)
    return True


@contextlib.contextmanager
def signals_blocked(signums: Iterable[int]) -> Iterator[None]:
    """Hold ``signums`` pending meanwhile (around a fork: the child unblocks them itself)."""
    wanted = set(signums)
    if not wanted or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock_signals(signums: Iterable[int]) -> None:
    """Let ``signums`` (blocked by :func:`signals_blocked` in the parent) be delivered."""
    wanted = set(signums)
    if wanted and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)


def receive_some(sock: socket.socket, size: int) -> Optional[bytes]:
    """What a non-blocking socket has, up to ``size`` bytes: None if nothing yet, b"" at its end
    (EOF or an error: either way the peer is gone)."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def move_to_lowest_fd(sock: socket.socket) -> socket.socket:
    """The same socket on the lowest free descriptor (the original is closed).

    A worker of a high slot inherits its socket on a high fd; waitress's
    select() loop cannot watch fds of 1024 and above, and every connection it
    accepts takes the lowest free fd, so moving the socket down after closing
    the master's fds keeps all of them low, however many slots there are.
    """
    low = sock.dup()
    if low.fileno() >= sock.fileno():
        low.close()
        return sock
    sock.close()
    return low


def close_quietly(obj: Any, keep: Collection[int] = ()) -> None:
    """Close an fd or an object with close(), unless its fd is in ``keep``."""
    try:
        fd = obj if isinstance(obj, int) else obj.fileno()
    except (OSError, ValueError, AttributeError):
        return
    if fd in keep or fd < 0:
        return
    try:
        if isinstance(obj, int):
            os.close(obj)
        else:
            obj.close()
    except Exception:
        pass


def cpus_for(slot_id: int, affinity: Union[bool, Tuple[int, ...]]) -> Optional[Tuple[int, ...]]:
    """The CPU set worker ``slot_id`` is pinned to, or None for no pinning."""
    if affinity is False or not hasattr(os, "sched_getaffinity"):
        return None
    if affinity is True:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return None
        return (available[slot_id % len(available)],)
    return (affinity[slot_id % len(affinity)],)


def pin_to_cpus(cpus: Optional[Sequence[int]]) -> None:
    """Pin this process (before it starts threads, so they inherit it)."""
    if not cpus:
        return
    if not hasattr(os, "sched_setaffinity"):
        log.info("cpu_affinity ignored: this platform has no sched_setaffinity")
        return
    try:
        os.sched_setaffinity(0, set(cpus))
    except OSError as exc:
        log.warning("cannot pin worker %d to CPUs %s: %s", os.getpid(), list(cpus), exc)


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def frontend_host(host: str) -> str:
    """The address a local frontend dials: a wildcard bind means loopback; IPv6 gets brackets."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host
