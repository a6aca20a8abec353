"""Running a Master as a program (CLI, PasteDeploy): logging, signals, log rotation, exit codes.

The library itself never configures logging; the runners do, so an
application embedding ``Master`` keeps control of it. The signals are the
master's own defaults (``integrations.signals``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Optional, TextIO

from .._os import platform as _platform
from .._os.loading import AppImportError, app_traceback, probe, root_cause
from .._os.logformat import JsonFormatter
from .._os.output import redirect_stdio
from ..errors import BootError, StartError
from ..integrations.signals import reopen_output
from ..master import Master, handle_of

log = logging.getLogger("prefork_waitress")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def log_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``--log-format``: text lines, or one JSON object per line."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT)


def configure_logging(level: str, stream: Optional[TextIO] = None, log_format: str = "text") -> None:
    """Send log records at ``level`` and above to ``stream`` (stderr, which may be the output file).

    The workers inherit this handler at fork: their records come out the same way."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(log_formatter(log_format))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


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
        if isinstance(output, str) and master.settings.handle_signals:
            # this program sent its own stdio to the file too: reopen it here as well
            master.add_signal_handler(signal.SIGUSR1, lambda: reopen_output(handle_of(master), own_stdio=True))
        _platform.set_process_name("pw-master")  # workers name themselves pw-slot-N
        master.start()
    except (StartError, BootError, AppImportError) as exc:
        cause = root_cause(exc)
        if cause is not exc and not isinstance(cause, AppImportError):  # --preload: the app raised here
            for stream in (sys.stderr, terminal):
                _write(stream, app_traceback(cause) + "\n")
        return fail(str(exc), terminal)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if terminal is not None:
            terminal.close()
    return EXIT_OK


def check_config(app: str, master: Master) -> int:
    """--check-config: the options are valid (``master`` exists); load the app in a child process
    as a worker would (a factory is called), report, bind nothing; 0 if it loads, else 1."""
    settings = master.settings
    problem = probe(app, timeout=settings.boot_timeout, load=True)
    if problem is not None:
        *details, error = problem.splitlines()
        sys.stderr.write("".join(line + "\n" for line in details))
        return fail(error)
    ports = (
        f"ports {settings.base_port}-{settings.base_port + settings.workers - 1}" if settings.base_port else "OS ports"
    )
    sys.stdout.write(
        f"prefork-waitress: config ok: {app} loads; {settings.workers} workers on {settings.host}, {ports}"
        f"{', preload' if settings.preload else ''} (nothing was bound)\n"
    )
    return EXIT_OK


def fail(message: str, terminal: Optional[TextIO] = None) -> int:
    """Print ``message`` as the program's error (also on the terminal if stderr is the log file)."""
    for stream in (sys.stderr, terminal):
        _write(stream, f"prefork-waitress: error: {message}\n")
    return EXIT_FAILED


def _write(stream: Optional[TextIO], text: str) -> None:
    if stream is not None:
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass
