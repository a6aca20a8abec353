"""How much an app slows down when other Python code runs between two of its calls (bench/PROFILE.md, "Flask").

    python -m bench app_interference [--app bench.flask_app:app] [--calls 500] [--batches 20]

The process pins itself to CPU 0, as a worker is. The app runs alone in a loop, then with K rounds
of unrelated work between two calls (a waitress request parse, an HTTP date, a JSON decode, a small
sort: the kind of code a server runs between two requests). Only the app's calls are timed (thread
CPU clock), so a rise is the app's own code running slower: the caches and predictors it had warm
were used by something else.
"""

import email.utils
import importlib
import io
import json
import os
import sys
import time

from waitress.adjustments import Adjustments
from waitress.parser import HTTPRequestParser

from bench import harness

NAME = "app_interference"
HELP = "an app's own CPU per call alone and with other Python work between calls (the Flask gap's cause)"
SMOKE = {"calls": 50, "batches": 2}
SETTINGS = (0, 1, 3, 10)  # rounds of other work between two calls of the app

ADJ = Adjustments()
RAW = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
ENVIRON = {
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "", "REQUEST_URI": "/",
    "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": "waitress",
    "REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1", "REMOTE_PORT": "50000", "HTTP_HOST": "127.0.0.1:8080",
    "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
    "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.input_terminated": True,
}


def other_work(rounds):
    for _ in range(rounds):
        HTTPRequestParser(ADJ).received(RAW)
        email.utils.formatdate(usegmt=True)
        json.loads('{"a": [1, 2, 3]}')
        sorted({str(i): i for i in range(20)})


def app_us(app, calls, rounds):
    """The app's CPU per call (us), with ``rounds`` of other work before each call."""
    def start_response(status, headers, exc_info=None):
        return lambda data: None

    spent = 0
    for _ in range(calls):
        other_work(rounds)
        environ = dict(ENVIRON, **{"wsgi.input": io.BytesIO(b"")})
        started = time.thread_time_ns()
        result = app(environ, start_response)
        list(result)
        if hasattr(result, "close"):
            result.close()
        spent += time.thread_time_ns() - started
    return spent / calls / 1000


def add_arguments(p):
    p.add_argument("--app", default="bench.flask_app:app", help="MODULE:APP (default %(default)s)")
    p.add_argument("--calls", type=int, default=500, help="calls per batch (default %(default)s)")
    p.add_argument("--batches", type=int, default=20,
                   help="batches per setting, the settings alternated (default %(default)s)")


def run(args):
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    module, _, attr = args.app.partition(":")
    app = getattr(importlib.import_module(module), attr)
    app_us(app, args.calls, 0)  # warm up
    results = {k: [] for k in SETTINGS}
    for _ in range(args.batches):  # alternated, so a busy moment of the box hits every setting alike
        for rounds in SETTINGS:
            results[rounds].append(app_us(app, args.calls, rounds))
    alone = harness.median(results[0])
    table = f"{args.app}: the app's CPU per call, µs (medians of {args.batches} batches of {args.calls} calls)"
    return [{"table": table, "rounds of other work between calls": rounds, "app µs per call": harness.median(xs),
             "min": min(xs), "max": max(xs), "vs alone": f"{harness.median(xs) / alone:.2f}x"}
            for rounds, xs in results.items()]
