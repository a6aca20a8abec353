"""The default signals, the same for the Python API, the CLI and the paste runner.

TERM and INT stop gracefully (a second INT: at once), QUIT stops at once, HUP reloads, TTIN/TTOU add
or remove one worker, USR1 reopens the output file, USR2 upgrades the master
(a new master program takes over, as in unicorn, gunicorn and puma; a
worker's own USR2 still writes its threads' tracebacks, and ``ctl
tracebacks`` asks every worker for them). So no common signal kills or suspends a master
without its cleanup (the default action of HUP, USR1 and USR2 is to
terminate, of TTIN/TTOU to stop the process). ``Master(handle_signals=False)``
installs none of them; ``add_signal_handler`` replaces any one.
"""

from __future__ import annotations

import logging
import os
import signal

from .._core.handle import MasterHandle
from .._core.lifecycle import State
from .._os.output import redirect_stdio
from ..errors import CommandError

log = logging.getLogger("prefork_waitress")

REOPEN_TIMEOUT = 5.0


def install_default_signals(master: MasterHandle) -> None:
    """Give the master its default signals, unless its settings opt out."""
    if not master.settings.handle_signals:
        return
    master.add_signal_handler(signal.SIGTERM, master.stop)
    master.add_signal_handler(signal.SIGINT, lambda: interrupt(master))
    master.add_signal_handler(signal.SIGQUIT, lambda: master.stop(graceful=False))
    master.add_signal_handler(signal.SIGHUP, master.reload)
    master.add_signal_handler(signal.SIGTTIN, lambda: scale_by(master, +1))
    master.add_signal_handler(signal.SIGTTOU, lambda: scale_by(master, -1))
    master.add_signal_handler(signal.SIGUSR1, lambda: reopen_output(master, own_stdio=False))
    master.add_signal_handler(signal.SIGUSR2, lambda: upgrade(master))


def upgrade(master: MasterHandle) -> None:
    """SIGUSR2: start a new master program on these sockets (the upgrader logs how it went)."""
    log.info("SIGUSR2: upgrading the master")
    try:
        master.upgrade()
    except RuntimeError as exc:
        log.error("SIGUSR2: %s", exc)


def interrupt(master: MasterHandle) -> None:
    """SIGINT (Ctrl-C): a graceful stop; a second one while stopping: at once."""
    if State(master.state) is State.STOPPING:
        log.warning("interrupted again: stopping at once")
        master.stop(graceful=False)
    else:
        master.stop()


def scale_by(master: MasterHandle, delta: int) -> None:
    """Add or remove one worker; never below one."""
    wanted = len(master.ports) + delta
    if wanted < 1:
        log.warning("not removing the last worker (SIGTTOU ignored)")
        return
    if State(master.state) is not State.RUNNING:
        log.warning("scale to %d ignored: the master is %s", wanted, master.state)
        return
    log.info("scaling to %d workers", wanted)
    try:
        master.scale(wanted)
    except (ValueError, RuntimeError) as exc:  # a bound, a port past 65535, no fds: one line, nothing changed
        log.error("%s; still %d workers", exc, len(master.ports))


def reopen_output(master: MasterHandle, own_stdio: bool) -> None:
    """Log rotation: reopen the output path and the access log in every worker (and this process's
    stdio if ``own_stdio``)."""
    output = master.settings.output
    path = output if isinstance(output, str) else None
    access_log = master.settings.access_log not in (None, "-")
    if path is None and not access_log:
        log.info("SIGUSR1: there is no output file or access log to reopen")
        return
    if own_stdio and path is not None:
        try:
            redirect_stdio(path)
        except OSError as exc:
            log.error("cannot reopen %s: %s", path, exc)
            return
        log.info("reopened %s", path)
    else:
        log.info("SIGUSR1: the workers reopen their output and access log")

    def check(replies: "dict[int, object]") -> None:
        failed = 0
        for slot, reply in replies.items():
            if isinstance(reply, CommandError):
                failed += 1
                log.warning("worker %d did not reopen its files: %s", slot, reply.message)
        if not failed:
            log.info("every worker reopened its files (%d)", len(replies))

    master.command_async("reopen", path, timeout=REOPEN_TIMEOUT, callback=check)


def dump_worker_tracebacks(master: MasterHandle) -> int:
    """``ctl tracebacks``: each worker writes every thread's traceback to its stderr (faulthandler,
    on the worker's SIGUSR2); how many were asked."""
    pids = [worker["pid"] for worker in master.status()["workers"] if worker["pid"]]
    log.info("asking %d workers for their tracebacks", len(pids))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            pass
    return len(pids)
