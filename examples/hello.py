"""The smallest app: every worker answers with its pid and port."""

import os


def app(environ, start_response):
    body = f"Hello from pid {os.getpid()} on port {environ['SERVER_PORT']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def paste_app(global_conf, **settings):
    """PasteDeploy app factory for examples/site.ini."""
    return app
