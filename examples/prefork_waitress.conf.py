"""An example config file: prefork-waitress --config examples/prefork_waitress.conf.py examples.hello:app

Plain Python, run once by the command line before anything starts. Every
module-level name is an option (the names of ``Master(...)``, the command
line's with underscores, or waitress's); functions named like the master's
hooks become hooks; a name starting with ``_`` is yours. The command line
and the PREFORK_WAITRESS_* variables override what is set here.
"""

import logging
import multiprocessing

from prefork_waitress import Worker

workers = min(8, 2 * multiprocessing.cpu_count())
bind = "127.0.0.1:8080"
graceful_timeout = 30
max_requests = 10_000
max_requests_jitter = 500
channel_timeout = 60  # a waitress option, passed to every worker
# control_socket = "/run/myapp/ctl.sock"
# reload = True
# reload_extra_file = ["templates/base.html", "settings.toml"]

_log = logging.getLogger("myapp")


class AppWorker(Worker):
    """Runs in each worker process (``worker_class`` may also be "package.module:Class")."""

    def on_start(self) -> None:
        _log.info("worker %d serving on port %d", self.id, self.port)


worker_class = AppWorker


def when_ready(master):
    """A master hook: its first argument is the master (it runs as a method of a Master subclass)."""
    _log.info("all %d workers serve on %s", len(master.ports), master.ports)


def worker_exited(master, info, exitcode):
    if exitcode:
        _log.warning("worker of slot %d exited with %s", info.id, exitcode)
