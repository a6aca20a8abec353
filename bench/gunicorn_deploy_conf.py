"""gunicorn config for the deploy scenario: each worker says when it has loaded the app (pid per line)."""

import os


def post_worker_init(worker):
    path = os.environ.get("DEPLOY_READY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
