"""Runs inside a test cluster's master process: a Master that reports every
hook as a JSON line on stdout and takes orders as JSON lines on stdin."""

import json
import os
import sys
import time

from prefork_waitress import Master
from prefork_waitress.integrations.control import jsonable_replies


def emit(event, **fields):
    """One JSON line; ``t`` is the master's monotonic clock, for tests that time events."""
    fields.setdefault("t", time.monotonic())
    sys.stdout.write(json.dumps({"event": event, **fields}, default=repr) + "\n")
    sys.stdout.flush()


# The suite's request path (tests/conftest.py): the command line reads this variable itself, a Master()
# does not (the environment is the programs' layer), so the test masters pass it on.
INLINE_TASKS = os.environ.get("PREFORK_WAITRESS_INLINE_TASKS")


class RecordingMaster(Master):
    """Emits hook calls; executes {"call": ..., "args": [...]} lines from stdin."""

    def __init__(self, app, **options):
        if INLINE_TASKS is not None:
            options.setdefault("inline_tasks", INLINE_TASKS)
        super().__init__(app, **options)

    def start(self):
        os.set_blocking(sys.stdin.fileno(), True)
        self.add_io_handler(sys.stdin, self._order)
        super().start()

    _pending = b""

    def _order(self, stdin):
        data = os.read(stdin.fileno(), 65536)
        if not data:
            self.remove_io_handler(stdin)
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            if line.strip():
                self._run_order(json.loads(line))

    def _run_order(self, order):
        call = order["call"]
        try:
            if call == "command":
                replies = self.command(*order["args"], **order.get("kwargs", {}))
                result = jsonable_replies(replies)
            else:
                result = getattr(self, call)(*order.get("args", []))
            emit("result", call=call, result=result, tag=order.get("tag"))
        except Exception as exc:
            emit("result", call=call, error=f"{type(exc).__name__}: {exc}", tag=order.get("tag"))

    def _snapshot(self):
        return [w.__dict__ for w in self.workers]

    def when_ready(self):
        emit("ready", ports=self.ports, workers=self._snapshot())

    def worker_started(self, info):
        emit("worker_started", info=info.__dict__)

    def worker_exited(self, info, exitcode):
        emit("worker_exited", info=info.__dict__, exitcode=exitcode)

    def ports_changed(self, ports):
        emit("ports_changed", ports=ports)

    def reloaded(self, ok):
        emit("reloaded", ok=ok, workers=self._snapshot())

    def stopping(self):
        emit("stopping")


class StarvingMaster(RecordingMaster):
    """A RecordingMaster whose fd limit a test can use up (starve) and give back (feed).

    starve() lowers the soft limit a little above the fds in use and fills the
    rest with /dev/null, so the master's next fd fails with EMFILE; the limit
    stays above what the loop polls (poll() refuses more fds than the limit).
    """

    _saved_limit = None
    _placeholders = ()

    def starve(self):
        import resource

        self._saved_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 16, self._saved_limit[1]))
        placeholders = []
        while True:
            try:
                placeholders.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        self._placeholders = placeholders
        return "starved"

    def feed(self):
        import resource

        for fd in self._placeholders:
            os.close(fd)
        self._placeholders = ()
        resource.setrlimit(resource.RLIMIT_NOFILE, self._saved_limit)
        return "fed"
