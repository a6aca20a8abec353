"""Running the real command line in a subprocess: prefork-waitress and its ctl."""

import subprocess
import sys

from conftest import ENV


def run_cli(*args, cwd=None, timeout=20, env=None):
    """Run ``python -m prefork_waitress ARGS`` to completion; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "prefork_waitress", *map(str, args)],
        cwd=cwd,
        env=dict(ENV, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ctl(sock, *args, timeout=20):
    return run_cli("ctl", "--socket", sock, *args, timeout=timeout)
