"""The old helpers of the bench scripts not yet migrated to ``python -m bench`` (the lifecycle ones):
the names they use, now from bench/harness.py (the one harness), plus their table printer. Importing
it installs the signal handlers that stop every server on Ctrl-C/SIGTERM/SIGHUP, as it always did.
"""

import os
import sys

try:
    from bench import harness, results
except ImportError:  # python bench/SCRIPT.py: the repo root is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench import harness, results

HOST = harness.HOST
REPO_ROOT = harness.REPO_ROOT
Server = harness.Proc
children = harness.children
free_port = harness.free_port
free_port_range = harness.free_port_range
median = harness.median
nginx_conf = harness.nginx_conf
nginx_path = harness.nginx_path
run_wrk = harness.run_wrk
parse_wrk_text = harness.parse_wrk_text
wrk_path = harness.wrk_path
stop_all = harness.stop_all
wait_http_200 = harness.wait_http_200
fmt = results.fmt

harness.install_exit_handlers()


def cpu(pid):
    """utime+stime seconds of ``pid``; 0.0 when it is gone."""
    return harness.cpu_seconds(pid, default=0.0)


def python_server(name, script_args, ports, env=None):
    """A fresh interpreter running ``python script_args...``."""
    return harness.Proc(name, [sys.executable] + list(script_args), ports, env=env)


def nginx_server(name, upstream_ports, workers=1, host=HOST):
    """nginx on a free port proxying (keep-alive upstream) to upstream_ports."""
    return harness.nginx_front(name, upstream_ports, workers=workers, host=host)


def print_table(headers, rows, file=None):
    """Plain text table, right-aligned numbers; also valid Markdown."""
    print(results.table([dict(zip(headers, row)) for row in rows]), file=file or sys.stdout, flush=True)


def machine_summary():
    """One line: nproc, CPU model, kernel, python, waitress/gunicorn."""
    m = results.machine()
    return (f"{m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}, Python {m['python']}, "
            + ", ".join(f"{k} {m['versions'].get(k) or 'not installed'}" for k in ("waitress", "gunicorn")))
