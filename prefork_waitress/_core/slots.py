"""Worker slots (the unit of state) and the processes that fill them."""

from __future__ import annotations

import dataclasses
import errno
import signal
import socket
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Dict, Optional, Union

from .._os.adoption import AdoptedProcess
from ..errors import StartError
from .loop import Timer
from .outbox import Outbox, Writers
from .states import SlotState, WorkerState


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker process: which slot and port, which pid and generation."""

    id: int
    port: int
    pid: Optional[int]
    generation: int
    started_at: Optional[float]
    restarts: int
    reforked_from: Optional[int] = None  # the pid of the template it was forked from (refork_after)
    refork_generation: int = 0  # 0: forked by the master; n: by a template of generation n - 1 (refork_after)
    state: str = "empty"  # the slot's SlotState value
    worker_state: Optional[str] = None  # its worker's WorkerState value (None: no worker)


class WorkerProcess:
    """One forked worker: its process, its end of the Pipe, its state (written by the pool only)."""

    def __init__(
        self,
        slot: "Slot",
        generation: int,
        process: Union[BaseProcess, AdoptedProcess],
        conn: Connection,
        loop: Writers,
        reforked_from: Optional[int] = None,
        refork_generation: int = 0,
    ) -> None:
        """``reforked_from``: the pid of the worker that forked it (else the master did), of
        ``refork_generation`` one more than its template's."""
        self.slot = slot
        self.generation = generation
        self.process = process
        self.conn = conn
        self.outbox = Outbox(conn, loop)  # commands go here, never straight to conn (it may block)
        self.pid: int = process.pid or 0
        self.sentinel: int = process.sentinel
        self.forked_at = time.monotonic()
        self.started_at: Optional[float] = None
        self.state = WorkerState.BOOTING
        self.ready_at: Optional[float] = None  # monotonic, when it reported ready
        self.boot_error: Optional[str] = None  # one line: "RuntimeError: database is down"
        self.boot_traceback: Optional[str] = None
        self.timers: "list[Timer]" = []
        self.meter: Any = None
        self.reforked_from = reforked_from
        self.refork_generation = refork_generation

    @property
    def ready(self) -> bool:
        """It reported ready (it may be leaving since: see ``state``)."""
        return self.ready_at is not None

    @property
    def stopping(self) -> bool:
        """It was asked to leave (retiring or stopping) or is gone."""
        return self.state in (WorkerState.RETIRING, WorkerState.STOPPING, WorkerState.EXITED)

    @property
    def keeps_accepting(self) -> bool:
        """Told to retire: it accepts until its port is quiet (no successor shares its socket)."""
        return self.state is WorkerState.RETIRING

    def boot_failure(self, exitcode: Optional[int]) -> "tuple[str, str]":
        """Why it never became ready: (one line, the traceback to log after it, or "")."""
        if self.boot_error:
            details = f"\n{self.boot_traceback.rstrip()}" if self.boot_traceback else ""
            return self.boot_error, details
        return f"it exited with {describe_exit(exitcode)} before it was ready", ""

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.slot.id,
            port=self.slot.port,
            pid=self.pid,
            generation=self.generation,
            started_at=self.started_at,
            restarts=self.slot.restarts,
            reforked_from=self.reforked_from,
            refork_generation=self.refork_generation,
            state=self.slot.state.value,
            worker_state=self.state.value,
        )

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()

    def __repr__(self) -> str:
        return f"<worker {self.slot.id} pid={self.pid} gen={self.generation} {self.state.value}>"


class Slot:
    """A port and its listening socket; its process is replaced, the slot stays (state: the pool's)."""

    def __init__(self, id: int, sock: socket.socket) -> None:
        self.id = id
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.current: Optional[WorkerProcess] = None
        self.generations = 0
        self.restarts = 0
        self.boot_failures = 0
        self.early_crashes = 0  # deaths soon after ready, in a row (crash-after-ready backoff)
        self.state = SlotState.EMPTY
        self.passed = False  # its socket came from outside (socket activation): its queue outlives this master
        self.respawn_timer: Optional[Timer] = None  # the pending respawn while BACKING_OFF
        self.fork_failed = False  # its last fork failed (out of fds, memory, processes): respawn_timer retries it

    @property
    def retiring(self) -> bool:
        """Out of the pool: retiring, or retired and closed."""
        return self.state in (SlotState.RETIRING, SlotState.CLOSED)

    def __repr__(self) -> str:
        return f"<slot {self.id} port={self.port} {self.state.value}>"

    def next_generation(self) -> int:
        self.generations += 1
        return self.generations

    def info(self) -> WorkerInfo:
        if self.current is not None:
            return self.current.info()
        return WorkerInfo(self.id, self.port, None, self.generations, None, self.restarts, state=self.state.value)


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """Bind and listen on host:port, with an error that names the address."""
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartError(f"cannot resolve host {host!r}: {exc}") from None
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartError(
                f"cannot listen on {host}:{port}: address already in use "
                "(another server is running there; pick another base_port)"
            ) from None
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def log_fields(worker: "WorkerProcess", event: str, **more: Any) -> Dict[str, Any]:
    """The ``extra=`` of a log line about ``worker`` (JSON logs): the event, its slot, pid, generation, port."""
    slot = worker.slot
    fields = {"event": event, "slot": slot.id, "worker_pid": worker.pid, "generation": worker.generation}
    return dict(fields, port=slot.port, **more)


def exit_fields(exitcode: Optional[int]) -> Dict[str, Any]:
    """A worker's exit for JSON logs: ``exitcode`` as multiprocessing gives it, and the signal's name."""
    name = None
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
    return {"exitcode": exitcode, "signal": name}


def describe_exit(exitcode: Optional[int]) -> str:
    """'exit code 3' or 'signal SIGKILL' for a log line."""
    if exitcode is None:
        return "an unknown status"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"
