"""Handing a running master's listening sockets to a new master program (``upgrade``).

The old master forks, and the child execs the same command line anew (a new
interpreter: the release's own virtualenv and code, through a ``current``
symlink resolved again), with every listening socket on fds 3, 4, ... as
systemd's socket activation passes them (``LISTEN_FDS``, ``LISTEN_PID`` set
to the child's own pid after the fork, ``LISTEN_FDNAMES``) and one more fd,
a pipe back to the old master, named in :data:`ENV`. The new master says on
that pipe when every slot serves, or why it could not (the tail of what it
wrote to stderr, kept by :class:`_Capture` until then).
"""

from __future__ import annotations

import atexit
import collections
import fcntl
import json
import os
import signal
import socket
import sys
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

ENV = "PREFORK_WAITRESS_UPGRADE"  # "<old master pid>:<report fd>" in the new master's environment
TAIL_LINES = 30
MAX_REPORT = 16384


def _launch_dir() -> str:
    """The directory the program was started from, as the shell spelled it (a symlink kept)."""
    cwd = os.getcwd()
    given = os.environ.get("PWD")
    try:
        if given and os.path.isabs(given) and os.path.samefile(given, cwd):
            return given
    except OSError:
        pass
    return cwd


LAUNCH_DIR = _launch_dir()  # captured at import, before --chdir moves the process


def command_line() -> List[str]:
    """The program to exec for a new master: this one's command line, resolved anew.

    ``python -m package``: the same interpreter path and module; an executable
    script (a console script, or the release's own launcher): the script
    itself, so its ``#!`` line picks the virtualenv again; else the
    interpreter with ``sys.argv``.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        original = getattr(sys, "orig_argv", None)  # Python 3.10+: with the interpreter's own options
        if original and "-m" in original:
            return [sys.executable, *original[1:]]
        module = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", module, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if script and os.path.isfile(script) and os.access(script, os.X_OK):
        return [os.path.join(LAUNCH_DIR, script), *sys.argv[1:]]
    return [sys.executable, *sys.argv]


def spawn(argv: Sequence[str], sockets: Sequence[Tuple[str, socket.socket]], report_fd: int) -> int:
    """Fork and exec ``argv`` with ``sockets`` on fds 3.. and ``report_fd`` after them; the child's pid.

    The child is a direct child of this (single-threaded) master, so the master
    reaps it if it fails; it has no parent-death signal, so it outlives the
    master once it has taken over.
    """
    env = _activation_env(sockets)
    sources = [sock.fileno() for _, sock in sockets] + [report_fd]
    # Signals wait until the child has its default handlers back: one caught by this process's Python
    # handler in the child would be lost at the exec (a SIGTERM forwarded at once must stop it).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid
    report = report_fd
    try:  # pragma: no cover - runs in the child, which execs
        signal.set_wakeup_fd(-1)  # the old master's wakeup socket is not this process's
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # a pending SIGTERM or SIGINT ends it here
        # Above every target first (close-on-exec), then down onto 3..: no source is overwritten early.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3 + len(sources)) for fd in sources]
        for fd in high:
            os.set_inheritable(fd, False)
        report = high[-1]
        for target, fd in enumerate(high, start=3):
            os.dup2(fd, target, inheritable=True)
        env["LISTEN_PID"] = str(os.getpid())
        os.chdir(LAUNCH_DIR)
        os.execve(argv[0], list(argv), env)  # every other fd of the master is close-on-exec (PEP 446)
    except BaseException as exc:
        try:
            os.write(report, _line({"error": f"cannot run {' '.join(argv)}: {exc}"}))
        finally:
            os._exit(127)
    raise AssertionError("unreachable")


def _activation_env(sockets: Sequence[Tuple[str, socket.socket]]) -> Dict[str, str]:
    """This environment, with socket activation's variables for ``sockets`` on fds 3.. and the report fd after."""
    env = dict(os.environ)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    count = len(sockets)
    env.update(
        LISTEN_FDS=str(count),
        LISTEN_FDNAMES=":".join(name for name, _ in sockets),
        PWD=LAUNCH_DIR,
        **{ENV: f"{os.getpid()}:{3 + count}"},
    )
    return env


def _line(message: Dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode("utf-8")


class _Capture:
    """This process's stderr, written through, its last lines kept until the upgrade is decided."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lines: Deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.partial = ""
        self.active = True

    def write(self, text: str) -> int:
        if self.active:
            head, *rest = (self.partial + text).split("\n")
            if rest:
                self.lines.extend([head, *rest[:-1]])
                self.partial = rest[-1]
            else:
                self.partial = head
        return int(self.stream.write(text))

    def tail(self) -> str:
        return "\n".join([*self.lines, self.partial]).strip()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class Predecessor:
    """In a new master started by an upgrade: the old master's pid and the pipe to tell it."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.report = os.fdopen(fd, "wb", buffering=0)
        self.decided = False
        self.capture = _Capture(sys.stderr)
        sys.stderr = self.capture
        atexit.register(self._exiting)

    def ready(self, ports: List[int]) -> None:
        """Every slot serves: the old master may drain and exit."""
        self._send({"ready": os.getpid(), "ports": ports})

    def _exiting(self) -> None:
        if not self.decided:
            self._send({"error": self.capture.tail()[-MAX_REPORT:] or "the new master exited"})

    def _send(self, message: Dict[str, Any]) -> None:
        self.decided = True
        self.capture.active = False
        if sys.stderr is self.capture:
            sys.stderr = self.capture.stream  # handlers made meanwhile keep writing through it
        try:
            self.report.write(_line(message))
        except OSError:
            pass  # the old master is gone (killed): this one serves on alone
        try:
            self.report.close()
        except OSError:
            pass


def _from_environment() -> Optional[Predecessor]:
    value = os.environ.pop(ENV, None)
    if not value:
        return None
    try:
        pid, fd = (int(part) for part in value.split(":"))
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return None
    return Predecessor(pid, fd)


PREDECESSOR: Optional[Predecessor] = _from_environment()  # set in a new master before anything else runs
_handed_over = False


def predecessor_pid() -> Optional[int]:
    """The old master's pid while this new master has not taken over yet (None otherwise)."""
    return PREDECESSOR.pid if PREDECESSOR is not None and not PREDECESSOR.decided else None


def hand_over() -> None:
    """This (old) master's successor serves: its paths (pid file, control socket) are the successor's now."""
    global _handed_over
    _handed_over = True


def owns_paths() -> bool:
    """False in an old master that handed over, and in a new one not (yet) serving: leave the files alone."""
    return not _handed_over and predecessor_pid() is None


def sockets_shared() -> bool:
    """Another master accepts on this one's sockets (an upgrade under way, or handed over): a stop
    lets go of its queues at once, without draining them or waiting out ``shutdown_delay``."""
    return not owns_paths()
