"""WSGI apps used by the benchmarks.

``hello``: the smallest possible response, measures server overhead.
``sleep20``: sleeps 20 ms per request (an I/O-bound view, e.g. a DB call).
``body1m``: a 1 MiB body (the send path).
``mixed``: ``/slow?s=0.5`` sleeps that long (a slow view), anything else is ``hello``.
"""

import time
from urllib.parse import parse_qs

HELLO = b"Hello, world!\n"


def hello(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))],
    )
    return [HELLO]


def sleep20(environ, start_response):
    time.sleep(0.020)
    body = b"slept 20 ms\n"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


BODY_1M = b"x" * (1 << 20)


def body1m(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BODY_1M)))],
    )
    return [BODY_1M]


def mixed(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0.5"])[0]))
    return hello(environ, start_response)
