"""Apps for the slow-client tests: a long streamed response, and hello (the pid) for everything else."""

import apps

CHUNK = b"x" * (1 << 20)
CHUNKS = 64


def stream(environ, start_response):
    """/stream: 64 chunks of 1 MiB, no Content-Length (chunked); /slow?s=N: apps.slow; else hello."""
    if environ.get("PATH_INFO") == "/slow":
        return apps.slow(environ, start_response)
    if environ.get("PATH_INFO") != "/stream":
        return apps.hello(environ, start_response)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (CHUNK for _ in range(CHUNKS))
