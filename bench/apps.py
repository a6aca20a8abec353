"""WSGI apps used by the benchmarks.

``hello``: the smallest possible response, measures server overhead.
``sleep20``: sleeps 20 ms per request (an I/O-bound view, e.g. a DB call).
"""

import time

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
