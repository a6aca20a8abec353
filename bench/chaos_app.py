"""The app of the chaos scenario (bench/scenarios/chaos.py): answers "<code version> <pid> <bytes posted>".

The code version is read once, when a worker imports this module, from the file
named by CHAOS_VERSION_FILE: a rolling reload after that file changed makes every
slot answer the new one. ``GET /bloat`` makes the worker hold BLOAT_MIB more
memory, so ``max_rss`` recycles it.
"""

import os

with open(os.environ["CHAOS_VERSION_FILE"]) as _file:
    VERSION = _file.read().strip()

BLOAT_MIB = 96
_held = []


def app(environ, start_response):
    posted = b""
    if environ["REQUEST_METHOD"] == "POST":
        posted = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if environ.get("PATH_INFO") == "/bloat":
        _held.append(b"b" * (BLOAT_MIB << 20))  # bytes filled in: the pages are resident
    body = f"{VERSION} {os.getpid()} {len(posted)}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
