"""The control socket: a UNIX stream socket (mode 0600) speaking JSON lines, never pickle.

Each request is one line ``{"action": "status"|"reload"|"scale"|"stop"|"command", ...}``
(plus what :meth:`ControlServer.add_action` adds, e.g. ``"metrics"``) and gets one reply
line ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
:class:`ControlServer` serves it inside the master's event loop without ever
blocking on a client; :func:`request` is the client ``prefork-waitress ctl`` uses.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from typing import Any, Callable, Dict, List, Optional

from .._core.handle import MasterHandle
from .._core.lifecycle import State
from .._os.activation import claim_inherited
from .._os.handoff import owns_paths, predecessor_pid
from ..errors import StartError
from ._connection import Connection, ConnectionServer
from .control_client import ControlError, decode_request, encode, jsonable_replies, request

__all__ = ["ControlError", "ControlServer", "request", "jsonable_replies"]

log = logging.getLogger("prefork_waitress")

MAX_LINE = 64 * 1024
MAX_CLIENTS = 16
BACKLOG = 64  # a burst of connections waits in the kernel while the loop is busy
IDLE_TIMEOUT = 60.0
HEAD_TIMEOUT = 5.0  # seconds a new connection has to send its first complete request line
SEND_TIMEOUT = 10.0
MAX_COMMAND_TIMEOUT = 60.0
STATS_TIMEOUT = 1.0
MAX_LINES_PER_TURN = 16  # lines of one client handled per loop turn, so no client holds the loop
PENDING = object()  # a handler's result when the reply comes later (reload)
Reply = Callable[[Optional[str], Any], None]  # a deferred action's answer: (error or None, result)


class _Client(Connection):
    """One accepted connection and whether a reply is outstanding (a request line is its head)."""

    def __init__(self, server: ConnectionServer, sock: socket.socket) -> None:
        super().__init__(server, sock)
        self.waiting = False  # a reload reply is outstanding; later lines wait
        self.keep_open = False  # asked to stop: kept open until the master is gone (EOF = stopped)
        self.continuing = False  # the rest of its lines are scheduled for the next loop turn
        self.idle_timer: Any = None

    @property
    def idle(self) -> bool:
        """Between requests (or before its first): nothing to answer, nothing to send, no line waiting."""
        busy = self.waiting or self.keep_open or self.continuing or self.close_when_sent or self.outbuf
        return not busy and b"\n" not in self.inbuf


class _ReloadWaiter:
    """A client waiting for the end of a reload that began after it asked."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.begun = False


class ControlServer(ConnectionServer):
    """Master listener serving the control socket in the master's loop."""

    label = "control socket"
    max_connections = accepts_per_turn = MAX_CLIENTS
    max_buffer = MAX_LINE
    head_timeout = HEAD_TIMEOUT
    send_timeout = SEND_TIMEOUT
    refusal = encode({"ok": False, "error": f"too many control connections (max {MAX_CLIENTS})"})
    eviction = encode({"ok": False, "error": f"closed: {MAX_CLIENTS} control connections are open and a new one came"})

    def __init__(self, master: MasterHandle, path: str) -> None:
        super().__init__(master)
        self.path = path
        self.reload_waiters: List[_ReloadWaiter] = []
        self._inode: Optional[int] = None
        self._deferred = False
        self.actions: Dict[str, Callable[[_Client, Dict[str, Any]], Any]] = {
            "status": self._do_status,
            "reload": self._do_reload,
            "scale": self._do_scale,
            "stop": self._do_stop,
            "command": self._do_command,
        }

    def add_action(self, name: str, handler: Callable[[Dict[str, Any]], Any]) -> None:
        """Serve action ``name``: ``handler(request)`` returns the JSON-able result (or raises
        ValueError/TypeError/LookupError/RuntimeError for an error reply)."""
        self.actions[name] = lambda client, message: handler(message)

    def add_deferred_action(self, name: str, handler: Callable[[Dict[str, Any], Reply], None]) -> None:
        """Serve action ``name`` whose reply comes later: ``handler(request, reply)`` calls
        ``reply(None, result)`` or ``reply(error, None)`` once, from the loop (or raises, as above)."""

        def action(client: _Client, message: Dict[str, Any]) -> Any:
            client.waiting = True

            def reply(error: Optional[str], result: Any) -> None:
                self._answer(client, {"ok": True, "result": result} if error is None else {"ok": False, "error": error})

            handler(message, reply)
            return PENDING

        self.actions[name] = action

    # listener points ------------------------------------------------------
    def starting(self) -> None:
        """Listen as soon as the master has bound its ports, before any worker exists."""
        sock = _inherited(self.path)  # an upgrade: the old master's socket, same file, same queue
        if sock is None:
            sock = self._bind()
        self.listen_on(sock)
        self._inode = os.stat(self.path).st_ino
        self._deferred = predecessor_pid() is not None  # an upgrade's new master: the old one answers for now
        if not self._deferred:
            self.start_accepting()
            log.info("control socket listening on %s", self.path)

    def when_ready(self) -> None:
        """A new master (upgrade) answers on the old master's socket once it has taken over."""
        if self._deferred and self.sock is not None:
            self._deferred = False
            self.start_accepting()
            log.info("control socket %s: answering from now on (taken over from the old master)", self.path)

    def _bind(self) -> socket.socket:
        self._refuse_live_or_remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)  # the file is born 0600: no window where others may connect
        try:
            sock.bind(self.path)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise StartError(f"cannot create control socket {self.path}: {exc.strerror or exc}") from None
        finally:
            os.umask(previous)
        return sock

    def upgraded(self, ok: bool) -> None:
        """A new master took over the (shared) socket: new connections are its own from now on."""
        if ok:
            self.let_go()

    def reloading(self) -> None:
        for waiter in self.reload_waiters:
            waiter.begun = True

    def reloaded(self, ok: bool) -> None:
        done = [w for w in self.reload_waiters if w.begun]
        self.reload_waiters = [w for w in self.reload_waiters if not w.begun]
        for waiter in done:
            if ok:
                self._answer(waiter.client, {"ok": True, "result": {"reloaded": True, "ports": self.master.ports}})
            else:
                why = self.master.counters.last_reload_error or "see the master's log"
                self._answer(waiter.client, {"ok": False, "error": f"the reload failed: {why}"})

    def stopping(self) -> None:
        waiters, self.reload_waiters = self.reload_waiters, []
        for waiter in waiters:
            self._answer(waiter.client, {"ok": False, "error": "the master is stopping; the reload was abandoned"})

    def stopped(self) -> None:
        """Close every connection (a waiting ``ctl stop`` sees EOF) and remove the socket file."""
        self.close_connections()
        if self.sock is not None:
            self.let_go()
            try:  # not after an upgrade handed it over, nor in a new master that never took over
                if owns_paths() and os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            except OSError:
                pass

    def _refuse_live_or_remove_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise StartError(f"control socket path {self.path} exists and is not a socket; not replacing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(self.path)
            except (ConnectionRefusedError, FileNotFoundError):
                log.info("removing stale control socket %s", self.path)
                os.unlink(self.path)
                return
            except OSError:
                pass
        raise StartError(f"control socket {self.path} is in use by a running master; stop it first")

    # connections ----------------------------------------------------------
    def connection(self, sock: socket.socket) -> Connection:
        return _Client(self, sock)

    def opened(self, conn: Connection) -> None:
        self._arm_idle(_client(conn))

    def victim(self) -> Optional[Connection]:
        """Full: the oldest idle client, one that never sent a request first; None if all are busy."""
        idle = [client for client in self.connections if _client(client).idle]
        never = [client for client in idle if not client.headed]
        return (never or idle)[0] if idle else None

    def head_timed_out(self, conn: Connection) -> None:
        if _client(conn).idle:
            conn.close(encode({"ok": False, "error": f"no request line within {HEAD_TIMEOUT:g} s"}))

    def closed(self, conn: Connection) -> None:
        self.reload_waiters = [w for w in self.reload_waiters if w.client is not conn]

    def received(self, conn: Connection) -> None:
        client = _client(conn)
        self._arm_idle(client)
        if client.waiting and client.overflowing:
            self._fail(client, f"more than {MAX_LINE} bytes sent while a reply is pending")
            return
        if not client.continuing:  # else the next turn goes on with its lines
            self._process(client)

    def _process(self, client: _Client) -> None:
        """Handle up to MAX_LINES_PER_TURN complete lines, in order; the rest on a later turn."""
        client.continuing = False
        handled = 0
        while not (client.waiting or client.closed or client.close_when_sent):
            line, newline, rest = client.inbuf.partition(b"\n")
            if len(line) > MAX_LINE:
                self._fail(client, f"request line longer than {MAX_LINE} bytes")
                return
            if not newline:
                break
            if handled == MAX_LINES_PER_TURN:
                client.continuing = True
                self.master.call_later(0, lambda: self._process(client))
                break
            client.inbuf = rest
            if line.strip():
                client.headed = True
                handled += 1
                self._handle(client, line)
        self._pause_or_resume(client)

    def _pause_or_resume(self, client: _Client) -> None:
        """Stop reading a client whose unhandled lines pile up; read it again once they are handled."""
        if client.overflowing and client.continuing:
            client.pause()
        else:
            client.resume()

    def _handle(self, client: _Client, line: bytes) -> None:
        try:
            message = decode_request(line)
        except (ValueError, RecursionError) as exc:
            self._fail(client, f"malformed request (not JSON): {exc}")
            return
        if not isinstance(message, dict) or not isinstance(message.get("action"), str):
            self._fail(client, 'malformed request: expected a JSON object with a string "action"')
            return
        action = self.actions.get(message["action"])
        if action is None:
            known = ", ".join(sorted(self.actions))
            self._answer(client, {"ok": False, "error": f"unknown action {message['action']!r}; known: {known}"})
            return
        try:
            result = action(client, message)
        except (ValueError, TypeError, LookupError, RuntimeError) as exc:
            self._answer(client, {"ok": False, "error": str(exc)})
            return
        except Exception as exc:
            log.exception("control socket: action %r failed", message["action"])
            self._answer(client, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        if result is not PENDING:
            self._answer(client, {"ok": True, "result": result})

    # actions --------------------------------------------------------------
    def _do_status(self, client: _Client, message: Dict[str, Any]) -> Any:
        status = self.master.status()
        if State(self.master.state) is not State.RUNNING or all(w["pid"] is None for w in status["workers"]):
            return _with_stats(status, {})
        self._reply_later(client, "stats", [], None, STATS_TIMEOUT, lambda stats: _with_stats(status, stats))
        return PENDING

    def _do_reload(self, client: _Client, message: Dict[str, Any]) -> Any:
        if State(self.master.state).ending:
            raise RuntimeError(f"cannot reload: the master is {self.master.state}")
        client.waiting = True
        self.reload_waiters.append(_ReloadWaiter(client))
        self.master.reload()
        return PENDING

    def _do_scale(self, client: _Client, message: Dict[str, Any]) -> Any:
        self.master.scale(message.get("workers"))  # type: ignore[arg-type]  # scale() validates it
        return {"workers": len(self.master.ports), "ports": self.master.ports}

    def _do_stop(self, client: _Client, message: Dict[str, Any]) -> Any:
        graceful = message.get("graceful", True)
        if not isinstance(graceful, bool):
            raise TypeError('"graceful" must be true or false')
        client.keep_open = True
        self.master.call_later(0, lambda: self.master.stop(graceful=graceful))
        return {"stopping": True, "graceful": graceful}

    def _do_command(self, client: _Client, message: Dict[str, Any]) -> Any:
        name, args = message.get("name"), message.get("args", [])
        worker, timeout = message.get("worker"), message.get("timeout", 5.0)
        if not isinstance(name, str) or not name:
            raise TypeError('"name" must be the command name, a string')
        if not isinstance(args, list):
            raise TypeError('"args" must be a JSON array')
        if worker is not None and (isinstance(worker, bool) or not isinstance(worker, int)):
            raise TypeError('"worker" must be a slot id or null')
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_COMMAND_TIMEOUT:
            raise ValueError(f'"timeout" must be a number of seconds in (0, {MAX_COMMAND_TIMEOUT:g}]')
        self._reply_later(client, name, args, worker, float(timeout), jsonable_replies)
        return PENDING

    def _reply_later(
        self,
        client: _Client,
        name: str,
        args: List[Any],
        worker: Optional[int],
        timeout: float,
        result: Callable[[Dict[int, Any]], Any],
    ) -> None:
        """Send a worker command without blocking the loop; answer the client when the replies are in."""
        client.waiting = True

        def answer(replies: Dict[int, Any]) -> None:
            self._answer(client, {"ok": True, "result": result(replies)})

        self.master.command_async(name, *args, worker=worker, timeout=timeout, callback=answer)

    # replies and closing --------------------------------------------------
    def _answer(self, client: _Client, reply: Dict[str, Any]) -> None:
        was_waiting, client.waiting = client.waiting, False
        client.send(encode(reply))
        if was_waiting and client.inbuf and not client.closed and not client.continuing:
            client.continuing = True  # lines that came while a reload was pending; later, so
            self.master.call_later(0, lambda: self._process(client))  # no action runs inside a hook

    def _fail(self, client: _Client, error: str) -> None:
        """Malformed input: reply with the error, then close the connection."""
        client.finish(encode({"ok": False, "error": error}))

    def _arm_idle(self, client: _Client) -> None:
        if client.idle_timer is not None:
            client.idle_timer.cancel()
        client.idle_timer = client.call_later(IDLE_TIMEOUT, lambda: self._idle(client))

    def _idle(self, client: _Client) -> None:
        if client.waiting or client.keep_open:
            self._arm_idle(client)
        else:
            client.close()


def _client(conn: Connection) -> _Client:
    assert isinstance(conn, _Client)
    return conn


def _inherited(path: str) -> Optional[socket.socket]:
    """The control socket an old master passed to this new one, if it is at ``path``."""
    sock = claim_inherited("control")
    if sock is not None and sock.getsockname() != path:
        sock.close()  # the new release names another path: bind that one
        return None
    return sock


def _with_stats(status: Dict[str, Any], stats: Dict[int, Any]) -> Dict[str, Any]:
    """The status with each worker's served/in-flight/RSS from its stats reply (None if unknown)."""
    for worker in status["workers"]:
        reply = stats.get(worker["id"])
        if not (isinstance(reply, dict) and reply.get("pid") == worker["pid"]):
            reply = {}
        for key in ("requests_served", "in_flight", "rss"):
            worker[key] = reply.get(key)
    return status
