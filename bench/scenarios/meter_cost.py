"""The per-request bookkeeping alone, timed in one process: the meter and the access log line.

    python -m bench meter_cost [--number 200000] [--repeat 7] [--reference-path /work/main]

With ``--reference-path``, the meter of that checkout (e.g. main, before the
running request's method and path went into the page) is timed in the same
run, next to this one's: the cost of ``ctl top``'s current-request field.

Best of ``--repeat`` timeit runs, minus an empty call, in microseconds per
request: what a worker's request thread adds for each request besides
waitress and the app (`python -m bench cpu_per_request` measures the whole worker).
"""

import importlib.util
import mmap
import os
import struct
import sys
import tempfile
import time
import timeit

from prefork_waitress._child._waitress import RequestFacts
from prefork_waitress._child.access_log import AccessLog, _Clock, format_line
from prefork_waitress._wire.meter import RequestMeter

NAME = "meter_cost"
HELP = "the per-request bookkeeping alone (meter, access log line), µs per request, best of N timeit runs"
SMOKE = {"number": 2000, "repeat": 2}


def add_arguments(p):
    p.add_argument("--number", type=int, default=200_000, help="calls per timeit run (default %(default)s)")
    p.add_argument("--repeat", type=int, default=7, help="timeit runs, the best counts (default %(default)s)")
    p.add_argument("--reference-path", default=None, help="another checkout whose meter is timed in the same run")

_START = struct.Struct("d")


class OldClock:
    """request_timeout's clock before the meter: two pack_into per request."""

    def __init__(self):
        self._map = mmap.mmap(-1, mmap.PAGESIZE)

    def started(self):
        _START.pack_into(self._map, 0, time.monotonic())

    def finished(self):
        _START.pack_into(self._map, 0, 0.0)


def reference_meter(checkout):
    """The RequestMeter class of another checkout (meter.py imports only the standard library)."""
    path = os.path.join(checkout, "prefork_waitress", "_wire", "meter.py")
    if not os.path.exists(path):  # a checkout from before the wire layer (issue 19)
        path = os.path.join(checkout, "prefork_waitress", "_child", "meter.py")
    spec = importlib.util.spec_from_file_location("reference_meter", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_meter"] = module  # dataclasses looks the module up
    spec.loader.exec_module(module)
    return module.RequestMeter


def started(meter, method, path):
    """A started() call for this checkout's meter (method and path) or an older one (no arguments)."""
    try:
        meter.started(method, path)
    except TypeError:
        return meter.started
    return lambda: meter.started(method, path)


def run(args):
    """One row per piece of bookkeeping: µs per request, the empty call subtracted."""

    def best(f):
        return min(timeit.repeat(f, number=args.number, repeat=args.repeat)) / args.number * 1e6

    old, meter = OldClock(), RequestMeter()
    facts = RequestFacts("127.0.0.1", None, "GET", "/", "HTTP/1.1", "200", 12, None, "wrk/4.1.0")
    clock = _Clock()
    directory = tempfile.mkdtemp(prefix="bench-meter-")
    log = AccessLog(os.path.join(directory, "access.log"), 0)
    empty = best(lambda: (None, None))
    rows = [
        ("old request_timeout clock (2 x pack_into)", best(lambda: (old.started(), old.finished())) - empty),
        ("meter: clock + duration histogram", best(lambda: (meter.started(), meter.finished())) - empty),
    ]
    long_path = "/" + "segment/" * 40 + "?query=1"
    meters = [("this checkout", meter)]
    if args.reference_path:
        meters.append((f"reference {args.reference_path}", reference_meter(args.reference_path)()))
    for name, each in meters:
        for label, path in (("GET /", "/"), (f"GET {len(long_path)}-byte path", long_path)):
            start, finish = started(each, "GET", path), each.finished
            rows.append((f"meter of {name}: a request ({label})", best(lambda s=start, f=finish: (s(), f())) - empty))
    rows += [
        ("access log: format_line", best(lambda: format_line(facts, clock.now(), 0.0001, 0)) - empty),
        ("access log: format + os.write to a file", best(lambda: log.write(facts, 0.0001)) - empty),
    ]
    os.close(log.fd)
    os.unlink(log.path)
    os.rmdir(directory)
    meter.close()
    title = f"best of {args.repeat} x {args.number} calls, minus an empty call"
    return [{"table": title, "what": name, "us/request": round(us, 3)} for name, us in rows]
