"""Running a Master as a program (CLI, PasteDeploy): logging, signals, log rotation, exit codes.

The library itself never configures logging or installs these signals; the
runners do, so an application embedding ``Master`` keeps control of both.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Optional, TextIO

from .._os.loading import AppImportError
from .._os.output import redirect_stdio
from ..errors import BootError, CommandError, StartError
from ..master import Master

log = logging.getLogger("prefork_waitress")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
REOPEN_TIMEOUT = 5.0


def configure_logging(level: str, stream: Optional[TextIO] = None) -> None:
    """Send log records at ``level`` and above to ``stream`` (stderr, which may be the output file)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def install_signals(master: Master) -> None:
    """HUP: rolling reload; TTIN/TTOU: one worker more/less; USR1: reopen the output file."""
    master.add_signal_handler(signal.SIGHUP, master.reload)
    master.add_signal_handler(signal.SIGTTIN, lambda: scale_by(master, +1))
    master.add_signal_handler(signal.SIGTTOU, lambda: scale_by(master, -1))
    master.add_signal_handler(signal.SIGUSR1, lambda: reopen_output(master))


def scale_by(master: Master, delta: int) -> None:
    """Add or remove one worker; never below one."""
    wanted = len(master.ports) + delta
    if wanted < 1:
        log.warning("not removing the last worker (SIGTTOU ignored)")
        return
    log.info("scaling to %d workers", wanted)
    master.scale(wanted)


def reopen_output(master: Master) -> None:
    """Log rotation: reopen the output path in the master, then it and the access log in every worker."""
    output = master.settings.output
    path = output if isinstance(output, str) else None
    access_log = master.settings.access_log not in (None, "-")
    if path is None and not access_log:
        log.info("SIGUSR1: there is no output file or access log to reopen")
        return
    if path is not None:
        try:
            redirect_stdio(path)
        except OSError as exc:
            log.error("cannot reopen %s: %s", path, exc)
            return
        log.info("reopened %s", path)
    for slot, reply in master.command("reopen", path, timeout=REOPEN_TIMEOUT).items():
        if isinstance(reply, CommandError):
            log.warning("worker %d did not reopen its files: %s", slot, reply.message)


def serve(master: Master) -> int:
    """Run ``master`` until it stops; the exit code, with any failure as one line on stderr."""
    output = master.settings.output
    terminal = os.fdopen(os.dup(2), "w") if isinstance(output, str) else None
    try:
        if isinstance(output, str):
            try:
                redirect_stdio(output)
            except OSError as exc:
                return fail(f"cannot open output file {output}: {exc.strerror or exc}", terminal)
        install_signals(master)
        master.start()
    except (StartError, BootError, AppImportError) as exc:
        return fail(str(exc), terminal)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if terminal is not None:
            terminal.close()
    return EXIT_OK


def fail(message: str, terminal: Optional[TextIO] = None) -> int:
    """Print ``message`` as the program's error (also on the terminal if stderr is the log file)."""
    line = f"prefork-waitress: error: {message}\n"
    for stream in (sys.stderr, terminal):
        if stream is not None:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass
    return EXIT_FAILED
