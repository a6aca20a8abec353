"""What a forked worker process does, from the fork to ``os._exit``."""

from __future__ import annotations

import faulthandler
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from .._os import platform as _platform
from .._os.limits import restore_fd_limit
from .._os.loading import resolve
from .._os.logformat import set_process_slot
from .._os.memory import MIB, RssLimit
from .._os.output import flush_stdio, redirect_stdio
from .._wire.messages import REFORK, BootFailed, Command, Draining, Modules, Ready, Recycle, Reply, Retire, Warm
from .._wire.spec import ChildSpec
from ..reloading import NewDataFiles, NewModules
from ..worker import Worker
from ._waitress import RequestFacts, RequestHooks
from ._waitress_server import DrainableServer
from .access_log import AccessLog
from .refork import Template

BEAT_EVERY = 1.0  # the command thread's heartbeat; the I/O loop beats on every turn of its loop

log = logging.getLogger("prefork_waitress.worker")

EXIT_OK = 0
EXIT_BOOT_FAILED = 3
EXIT_CRASHED = 4


class WorkerRequests(RequestHooks):
    """Counts requests, publishes the running request's start, calls on_limit(why) at
    max_requests or once the RSS passes max_rss, tells the master at each refork_after threshold."""

    def __init__(
        self,
        worker: Worker,
        max_requests: int,
        meter: Any,
        max_rss: int = 0,
        access_log: Optional[AccessLog] = None,
        refork_after: Tuple[int, ...] = (),
        inline: bool = False,
    ) -> None:
        """``inline``: requests run on the I/O thread, whose loop does not beat while one runs."""
        self.worker = worker
        self.max_requests = max_requests
        self.meter = meter
        self.rss_limit = RssLimit(max_rss) if max_rss else None
        self.access_log = access_log
        self.logs_requests = access_log is not None
        self.duration = 0.0
        self.on_limit: Callable[[str], None] = lambda why: None
        self.after_request: Callable[[], None] = lambda: None
        self.channel: Optional[Channel] = None
        self.warm_at = list(refork_after)  # the request counts still to report, in order
        self.next_warm = self.warm_at.pop(0) if self.warm_at else 0
        self.beat_io = inline and meter is not None

    def request_started(self, method: str, uri: str) -> bool:
        worker = self.worker
        worker.in_flight = 1
        if self.meter is not None:
            self.meter.started(method, uri)
        return False  # at max_requests the master stops this worker once a successor serves

    def request_finished(self) -> None:
        worker = self.worker
        worker.in_flight = 0
        worker.requests_served += 1
        if self.meter is not None:
            if self.beat_io:
                # Before the start is cleared: the master reads the start, then the beats, so it
                # never sees the I/O loop idle with only the beat from before this request.
                self.meter.beat_io()
            self.duration = self.meter.finished()
        self.after_request()
        if self.max_requests and worker.requests_served == self.max_requests:
            self.on_limit(f"served {worker.requests_served} requests")
        if worker.requests_served == self.next_warm:
            self._warm(worker.requests_served)
        if self.rss_limit is not None:
            rss = self.rss_limit.check()
            if rss is not None:
                self.on_limit(f"has an RSS of {rss / MIB:.0f} MiB, over max_rss={self.rss_limit.limit // MIB}")

    def _warm(self, served: int) -> None:
        """A refork threshold reached: the master may make this worker a template."""
        self.next_warm = self.warm_at.pop(0) if self.warm_at else 0
        if self.channel is not None:
            self.channel.send(Warm(served))

    def request_logged(self, facts: RequestFacts, duration: Optional[float]) -> None:
        if self.access_log is not None:
            self.access_log.write(facts, self.duration if duration is None else duration)

    def stopped_accepting(self) -> None:
        """Tell the master: new connections now go to the other process(es) on the socket."""
        if self.channel is not None:
            self.channel.send(Draining())


class Channel:
    """The worker's end of the master's Pipe; sends are serialised by a lock."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: Tuple[Any, ...]) -> bool:
        """Send one message of :mod:`.._wire.messages`; False if the master is gone."""
        try:
            with self.lock:
                self.conn.send(message)
            return True
        except (OSError, EOFError, ValueError):
            return False


# Signals a terminal sends to its whole foreground process group (Ctrl-C,
# Ctrl-\, hangup): the master gets them too and decides (a graceful stop sends
# this worker SIGTERM), so a worker ignores them instead of dropping its request.
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def _reset_inherited_state(spec: ChildSpec) -> None:
    """Drop the master's signal handling and every fd the slot does not own."""
    signal.set_wakeup_fd(-1)
    handled = _platform.handled_signals()
    for signum in handled:
        signal.signal(signum, signal.SIG_DFL)
    for signum in TERMINAL_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # The master blocked these around the fork: one sent meanwhile (a stop while
    # this worker boots) is delivered now, with the worker's own dispositions.
    _platform.unblock_signals(handled)
    own = {spec.sock.fileno(), spec.conn.fileno()}
    for obj in spec.inherited:
        _platform.close_quietly(obj, keep=own)
    spec.sock = _platform.move_to_lowest_fd(spec.sock)
    restore_fd_limit()  # the master raised its own; the app runs under the limit it was given
    set_process_slot(spec.slot_id)  # its log records say which slot (--log-format json)
    _platform.set_process_name(f"pw-slot-{spec.slot_id}")
    _platform.set_command_line(f"prefork-waitress worker: slot {spec.slot_id}, port {spec.port}")
    _platform.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != spec.master_pid:
        os._exit(EXIT_OK)  # the master died before we could ask to follow it


def _redirect_stdio(output: Any) -> None:
    """stdin from /dev/null; stdout and stderr to ``output`` if given."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if output is None:
        return
    redirect_stdio(output)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _enable_traceback_dump() -> None:
    """SIGUSR2 writes every thread's traceback to stderr, even while a request holds the GIL.

    The master sends it before killing a worker whose request ran past
    request_timeout; an operator can send it too (``kill -USR2 PID``).
    """
    try:
        faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True, chain=False)
    except (AttributeError, ValueError, OSError, RuntimeError):
        pass  # no usable stderr or no SIGUSR2: no dump


def _load_app(spec: ChildSpec) -> Any:
    return resolve(spec.app) if isinstance(spec.app, str) else spec.app


def _serve_commands(
    worker: Worker,
    channel: Channel,
    on_eof: Callable[[], None],
    on_retire: Callable[[], None],
    meter: Any = None,
    internal: Optional[Dict[str, Callable[..., Any]]] = None,
) -> None:
    """Command thread: run each command from the master and send its reply; beat at least every BEAT_EVERY s.

    ``internal``: commands of the library's own (refork), not the Worker's."""
    internal = internal or {}
    while True:
        try:
            if meter is not None:
                meter.beat_commands()
                if not channel.conn.poll(BEAT_EVERY):
                    continue
            message = channel.conn.recv()
        except (EOFError, OSError):
            log.warning("worker %d: the master is gone; stopping", worker.id)
            on_eof()
            return
        except Exception as exc:  # an unpicklable message: answer nothing, keep going
            log.error("worker %d: unreadable message from the master: %s", worker.id, exc)
            continue
        if isinstance(message, Retire):
            on_retire()
            continue
        if not _send_reply(channel, _run_command(worker, internal, message)):
            return


def _run_command(worker: Worker, internal: Dict[str, Callable[..., Any]], command: Command) -> Reply:
    """Run one command (the library's own, or the Worker's ``child_<name>``): its Reply, ok or the error."""
    try:
        run = internal.get(command.name)
        if run is not None:
            result = run(*command.args)
        else:
            result = worker.run_command(command.name, command.args, command.kwargs)
        return Reply(command.seq, True, result)
    except BaseException as exc:
        return Reply(command.seq, False, _describe_error(exc))


def _describe_error(exc: BaseException) -> Tuple[str, str, str]:
    return (type(exc).__name__, str(exc), traceback.format_exc())


def _send_reply(channel: Channel, reply: Reply) -> bool:
    try:
        pickle.dumps(reply)
    except Exception as exc:
        reply = Reply(reply.seq, False, ("PicklingError", f"the reply cannot be sent to the master: {exc}", ""))
    return channel.send(reply)


def _boot(spec: ChildSpec, channel: Channel) -> Tuple[Worker, DrainableServer, WorkerRequests]:
    """Load the app, run on_start, create the server: everything before 'ready'."""
    _platform.pin_to_cpus(spec.cpus)
    app = _load_app(spec)
    worker = spec.worker_class(spec.slot_id, spec.port, spec.generation, app)
    access_log = (
        AccessLog(spec.access_log, spec.slot_id, spec.access_log_format).activate() if spec.access_log else None
    )
    requests = WorkerRequests(
        worker, spec.max_requests, spec.meter, spec.max_rss, access_log, spec.refork_after, spec.inline_tasks
    )
    worker.on_start()
    server = DrainableServer(app, spec.sock, requests, dict(spec.waitress_options), inline=spec.inline_tasks)
    return worker, server, requests


def _report_boot_failure(channel: Channel, exc: BaseException) -> None:
    """Tell the master why (it logs the traceback, once per distinct error); log here if it is gone."""
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if not channel.send(BootFailed(message, traceback.format_exc())):
        log.error("worker failed to start: %s", message, exc_info=True)


def run(spec: ChildSpec) -> NoReturn:
    """The worker process: never returns, leaves through ``os._exit``."""
    code = EXIT_CRASHED
    try:
        _reset_inherited_state(spec)
        _redirect_stdio(spec.output)
        _enable_traceback_dump()
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        code = _run(spec)
    except BaseException:
        traceback.print_exc()
    finally:
        flush_stdio()
        os._exit(code)


def _run(spec: ChildSpec) -> int:
    channel = Channel(spec.conn)
    try:
        worker, server, requests = _boot(spec, channel)
    except BaseException as exc:
        _report_boot_failure(channel, exc)
        return EXIT_BOOT_FAILED
    requests.channel = channel
    stop = _install_stop(worker, server, spec)
    requests.on_limit = lambda why: _ask_to_recycle(channel, worker, stop, why)
    retire = lambda: stop(keep_accepting=True)  # noqa: E731
    template = Template(spec, worker.app, server, lambda: _own_files(requests), run)
    commands = threading.Thread(
        target=_serve_commands,
        args=(worker, channel, stop, retire, spec.meter, {REFORK: template.fork}),
        name="prefork-commands",
        daemon=True,
    )
    commands.start()
    channel.send(Ready(worker.pid, worker.started_at))
    if spec.report_modules:
        requests.after_request = _module_reporter(channel)
        requests.after_request()
    server.serve(on_turn=spec.meter.beat_io if spec.meter is not None else None)
    worker.on_stop()
    return EXIT_OK


def _own_files(requests: WorkerRequests) -> List[Any]:
    """What a worker forked from this one must close besides the sockets: the access log."""
    return [requests.access_log] if requests.access_log is not None else []


def _module_reporter(channel: Channel) -> Callable[[], None]:
    """Return a callable that sends the master what was imported since its last call.

    With the modules go the data files the framework wants watched, looked up
    again only when something was imported (the framework may just have loaded).
    """
    new_modules, new_data_files = NewModules(), NewDataFiles()

    def report() -> None:
        fresh = new_modules.since_last()
        if fresh:
            channel.send(Modules(fresh, new_data_files.since_last()))

    return report


def _install_stop(worker: Worker, server: DrainableServer, spec: ChildSpec) -> Callable[..., None]:
    """Wire every way of stopping (signal, command, EOF) to one drain."""

    def stop(keep_accepting: bool = False) -> None:
        if not stopping:
            stopping.append(True)
            _start_exit_deadline(spec.graceful_timeout)
        # A retiring slot has no successor on its socket: serve on until the port is quiet.
        server.request_stop(keep_accepting_for=spec.graceful_timeout / 2 if keep_accepting else 0.0)

    stopping: List[bool] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop())
    return stop


def _ask_to_recycle(channel: Channel, worker: Worker, stop: Callable[[], None], why: str) -> None:
    """max_requests or max_rss reached: the master forks a successor, and stops this worker once it serves.

    Until then this worker keeps serving, so the slot is never without one;
    the master recycles one slot at a time. Without a master, just stop.
    """
    if not channel.send(Recycle(worker.requests_served, why)):
        stop()


def _start_exit_deadline(seconds: float) -> None:
    """A worker that cannot drain in time leaves anyway (its master may be gone)."""

    def leave() -> None:
        time.sleep(seconds)
        log.error("worker %d did not stop within %.1f s; exiting", os.getpid(), seconds)
        flush_stdio()
        os._exit(EXIT_CRASHED)

    threading.Thread(target=leave, name="prefork-exit-deadline", daemon=True).start()
