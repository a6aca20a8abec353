"""Master upgrade: a new master program takes over this one's sockets, then this one drains and exits.

Old side (:meth:`Upgrader.request`, from ``Master.upgrade()``, SIGUSR2 or
``ctl upgrade``): fork and exec this program's command line anew with every
listening socket passed (``_os.handoff``), then wait for the new master to say
that every slot serves. Both generations accept from the same kernel queues
meanwhile, so no connection is refused. On "ready" this master hands its paths
over and stops gracefully; if the new master exits first, or is not serving
within the deadline, this one keeps serving and the caller gets the new
master's last words.

New side (a master started that way): it defers the pid file until every slot
serves, then writes it, tells systemd ``MAINPID=`` and ``READY=1``, and tells
the old master.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._core.handle import MasterHandle
from .._core.lifecycle import State
from .._core.slots import describe_exit
from .._os import handoff
from .._os.activation import forget_inherited
from .._os.platform import write_atomically
from .systemd import notify

__all__ = ["Upgrader", "UpgradeCallback"]

log = logging.getLogger("prefork_waitress")

# callback(error, result): error is None once the new master serves (result: its pid and ports)
UpgradeCallback = Callable[[Optional[str], Optional[Dict[str, Any]]], None]
REAP_POLL = 0.05
EXIT_POLL = 0.2  # how often a booting new master is checked for having exited (its pipe may outlive it)


class _Successor:
    """The new master this one started: its pid, the pipe it reports on, who waits for the outcome."""

    def __init__(self, pid: int, reader: Any, callbacks: List[UpgradeCallback]) -> None:
        self.pid = pid
        self.reader = reader
        self.callbacks = callbacks
        self.buffer = b""
        self.error: Optional[str] = None
        self.decided = False
        self.took_over = False
        self.reaped = False
        self.deadline: Any = None


class Upgrader:
    """Master listener: upgrades this master (old side) or completes an upgrade (new side)."""

    def __init__(self, master: MasterHandle, extra_sockets: Callable[[], List[Tuple[str, socket.socket]]]) -> None:
        self.master = master
        self.extra_sockets = extra_sockets  # the non-slot sockets to pass on (control, metrics)
        self.successor: Optional[_Successor] = None

    # old side -----------------------------------------------------------------
    def request(self, callback: Optional[UpgradeCallback] = None) -> None:
        """Start a new master program; ``callback(error, result)`` runs in the loop once it is decided.

        Raises RuntimeError if this master is not running (or the last new master is still exiting);
        asked again while one is under way, the caller joins it.
        """
        if State(self.master.state) is not State.RUNNING:
            raise RuntimeError(f"cannot upgrade: the master is {self.master.state}")
        current = self.successor
        if current is not None and not current.decided:
            if callback is not None:
                current.callbacks.append(callback)  # the same upgrade answers both
            return
        if current is not None and current.decided and not current.reaped:
            raise RuntimeError(f"cannot upgrade: the last new master (pid {current.pid}) has not exited yet")
        argv = handoff.command_line()
        sockets = [(f"slot{i}", sock) for i, sock in enumerate(self.master.listening_sockets())]
        sockets += [(handoff_name, sock) for handoff_name, sock in self.extra_sockets()]
        read_fd, write_fd = os.pipe()
        try:
            pid = handoff.spawn(argv, sockets, write_fd)
        except OSError as exc:
            os.close(read_fd)
            raise RuntimeError(f"cannot start a new master: {exc}") from None
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        reader = os.fdopen(read_fd, "rb", buffering=0)
        self.successor = successor = _Successor(pid, reader, [callback] if callback is not None else [])
        self.master.add_io_handler(reader, lambda _r: self._readable(successor))
        limit = 2 * self.master.settings.boot_timeout + 10.0  # its own app probe, then its workers' boot
        successor.deadline = self.master.call_later(limit, lambda: self._too_slow(successor, limit))
        log.info("upgrade: started a new master (pid %d) on %d sockets: %s", pid, len(sockets), " ".join(argv))
        self._watch_exit(successor)

    def _readable(self, successor: _Successor) -> None:
        """Read what the new master reported; at EOF stop reading (its exit is seen by _watch_exit)."""
        while not successor.reader.closed:
            try:
                data = os.read(successor.reader.fileno(), 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            successor.buffer += data
            *lines, successor.buffer = successor.buffer.split(b"\n")
            for line in lines:
                self._message(successor, line)
            if not data:
                self._close_reader(successor)

    def _message(self, successor: _Successor, line: bytes) -> None:
        try:
            message = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if "error" in message:
            successor.error = str(message["error"])
        elif "ready" in message and not successor.decided and not successor.reaped:
            self._took_over(successor, list(message.get("ports") or []))

    def _took_over(self, successor: _Successor, ports: List[int]) -> None:
        log.info(
            "upgrade: the new master (pid %d) serves every slot (ports %s); this master (pid %d) drains and exits",
            successor.pid,
            ports,
            os.getpid(),
        )
        handoff.hand_over()
        successor.took_over = True
        self._decide(successor, None, {"pid": successor.pid, "old_pid": os.getpid(), "ports": ports})
        self._close_reader(successor)
        self.master.stop(graceful=True)

    def _too_slow(self, successor: _Successor, limit: float) -> None:
        if successor.decided:
            return
        log.error("upgrade: the new master (pid %d) is not serving after %g s; stopping it", successor.pid, limit)
        self._terminate(successor)
        self._decide(successor, f"the new master (pid {successor.pid}) was not serving after {limit:g} s", None)

    def _watch_exit(self, successor: _Successor) -> None:
        """Until it has taken over: reap it once it exits (a child it forked may hold its pipe open
        longer), then report with its exit status and last words."""
        if successor.took_over:
            return
        status = self._reap(successor)
        if not successor.reaped:
            self.master.call_later(EXIT_POLL, lambda: self._watch_exit(successor))
            return
        self._readable(successor)  # its last words were written before it exited
        self._close_reader(successor)
        why = f"the new master (pid {successor.pid}) exited with {describe_exit(status)} before serving"
        self._decide(successor, f"{why}: {successor.error}" if successor.error else why, None)

    def _decide(self, successor: _Successor, error: Optional[str], result: Optional[Dict[str, Any]]) -> None:
        if successor.decided:
            return
        successor.decided = True
        if successor.deadline is not None:
            successor.deadline.cancel()
        if error is not None:
            going_on = "stops too" if State(self.master.state).ending else "keeps serving"
            log.error("upgrade failed: %s; this master (pid %d) %s", error, os.getpid(), going_on)
        self.master.emit("upgraded", error is None)  # first: the control socket stops accepting before ctl hears
        callbacks, successor.callbacks = successor.callbacks, []
        for callback in callbacks:
            callback(error, result)

    def _close_reader(self, successor: _Successor) -> None:
        if not successor.reader.closed:
            self.master.remove_io_handler(successor.reader)
            successor.reader.close()

    def _reap(self, successor: _Successor) -> Optional[int]:
        """Its exit code (negative: a signal) if it has exited, reaping it; None while it runs."""
        if successor.reaped:
            return None
        try:
            pid, status = os.waitpid(successor.pid, os.WNOHANG)
        except ChildProcessError:
            successor.reaped = True
            return None
        if pid == 0:
            return None
        successor.reaped = True
        return os.waitstatus_to_exitcode(status)

    def _terminate(self, successor: _Successor) -> None:
        """SIGTERM now (it stops gracefully), SIGKILL if it is still there after graceful_timeout."""
        _kill(successor.pid, signal.SIGTERM)

        def kill() -> None:
            if not successor.reaped and self._reap(successor) is None and not successor.reaped:
                log.warning("upgrade: the new master (pid %d) did not stop; killing it", successor.pid)
                _kill(successor.pid, signal.SIGKILL)

        self.master.call_later(self.master.settings.graceful_timeout + 5.0, kill)

    # listener points --------------------------------------------------------
    def starting(self) -> None:
        """New side: the pipe to the old master is no worker's; unclaimed passed sockets are closed."""
        predecessor = handoff.PREDECESSOR
        forget_inherited()
        if predecessor is not None and not predecessor.decided:
            self.master.own(predecessor.report)
            log.info("upgrade: new master (pid %d) starting on the sockets of master %d", os.getpid(), predecessor.pid)

    def when_ready(self) -> None:
        """New side: every slot serves; take the pid file and the service over, then tell the old master."""
        predecessor = handoff.PREDECESSOR
        if predecessor is None or predecessor.decided:
            return
        pidfile = self.master.settings.pidfile
        if pidfile:
            try:
                write_atomically(pidfile, f"{os.getpid()}\n")
            except OSError as exc:
                log.error("upgrade: cannot write the pid file %s: %s", pidfile, exc)
        if os.environ.get("NOTIFY_SOCKET"):
            notify(f"MAINPID={os.getpid()}\nREADY=1\nSTATUS=upgraded: serving on ports {self.master.ports}")
        predecessor.ready(self.master.ports)
        log.info("upgrade: this new master (pid %d) took over from master %d", os.getpid(), predecessor.pid)

    def stopping(self) -> None:
        """Old side, stopping while a new master boots: it stops too (SIGTERM, Ctrl-C mid-upgrade)."""
        successor = self.successor
        if successor is not None and not successor.decided:
            log.info("upgrade: this master is stopping; stopping the new master (pid %d) too", successor.pid)
            _kill(successor.pid, signal.SIGTERM)
            self._decide(successor, "the master is stopping; the upgrade was abandoned", None)

    def stopped(self) -> None:
        """Old side: a new master that did not take over is waited for (then killed), never left behind."""
        successor = self.successor
        if successor is None:
            return
        self._close_reader(successor)
        if successor.took_over:
            return  # it serves: it outlives this master
        deadline = time.monotonic() + self.master.settings.graceful_timeout + 5.0
        while self._reap(successor) is None and not successor.reaped:
            if time.monotonic() > deadline:
                log.warning("upgrade: the new master (pid %d) did not stop; killing it", successor.pid)
                _kill(successor.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(REAP_POLL)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
