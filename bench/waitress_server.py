"""One plain waitress process on one port, optionally CPU-pinned.

Started by the benchmarks as a fresh interpreter (subprocess), e.g.::

    python bench/waitress_server.py --port 8080 --threads 1 --pin early --cpus 0

Pinning modes (Linux only):

``none``   no affinity call.
``early``  ``os.sched_setaffinity(0, cpus)`` before waitress starts its task
           thread(s): every thread of the process inherits the mask.
``late``   the same call made after ``create_server`` has started the task
           thread.  ``sched_setaffinity(0, ...)`` only changes the *calling
           thread*, so the task thread keeps the old (all-CPU) mask.
``split``  the I/O-loop thread on the first CPU of ``--cpus``, the task
           thread(s) on the second: the two threads are forced onto
           different cores (the causal test for the collapse).

With ``--show-affinity`` the process prints each thread's allowed CPUs to
stderr once it serves.
"""

import argparse
import importlib
import logging
import os
import signal
import sys
import threading


def load_app(spec):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def thread_affinities():
    """{tid: 'Cpus_allowed_list'} for every thread of this process."""
    out = {}
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out[int(tid)] = line.split(":", 1)[1].strip()
        except OSError:
            pass
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--app", default="bench.apps:hello")
    p.add_argument("--pin", choices=["none", "early", "late", "split"], default="none")
    p.add_argument("--cpus", default="", help="comma-separated CPU ids")
    p.add_argument("--switch-interval", type=float, default=None)
    p.add_argument("--show-affinity", action="store_true")
    args = p.parse_args(argv)

    cpus = [int(c) for c in args.cpus.split(",") if c.strip()]
    if args.pin != "none" and not cpus:
        p.error("--pin needs --cpus")
    if args.pin == "split" and len(cpus) < 2:
        p.error("--pin split needs two CPUs")
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)

    # The benchmark kills the whole process group with SIGTERM: exit quietly.
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

    if args.pin == "early":
        os.sched_setaffinity(0, set(cpus))

    from waitress.server import create_server

    # With threads=1 waitress logs "Task queue depth is N" on every queued
    # request; logging is not what we measure.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    app = load_app(args.app)
    server = create_server(app, host=args.host, port=args.port, threads=args.threads)

    if args.pin == "late":
        os.sched_setaffinity(0, set(cpus))  # main thread only
    elif args.pin == "split":
        os.sched_setaffinity(0, {cpus[0]})
        me = threading.get_native_id()
        for t in threading.enumerate():
            if t.native_id and t.native_id != me:
                os.sched_setaffinity(t.native_id, {cpus[1]})

    if args.show_affinity:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid, allowed in thread_affinities().items():
            print(
                f"affinity pid={os.getpid()} tid={tid} "
                f"thread={names.get(tid, '?')} cpus={allowed}",
                file=sys.stderr,
                flush=True,
            )
    server.run()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
