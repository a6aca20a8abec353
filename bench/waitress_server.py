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
stderr once it serves.  With ``--count-loop`` it counts, per request served,
the iterations of waitress's I/O loop and the ``handle_write`` calls that
found the channel's ``outbuf_lock`` held by the task thread, and prints them
to stderr on SIGTERM (the evidence in bench/AFFINITY.md).
"""

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import warnings


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


def install_loop_counters():
    """Count I/O-loop iterations and busy outbuf_lock hits; print on SIGTERM."""
    from waitress import channel, wasyncore

    counts = {"loop": 0, "busy": 0, "free": 0, "requests": 0}
    poll = wasyncore.poll
    flush_if_lockable = channel.HTTPChannel._flush_some_if_lockable
    received = channel.HTTPChannel.received

    def counting_poll(*a, **kw):
        counts["loop"] += 1
        return poll(*a, **kw)

    def counting_flush(self, *a, **kw):
        # the same non-blocking acquire waitress does, only to count
        if self.outbuf_lock.acquire(False):
            self.outbuf_lock.release()
            counts["free"] += 1
        else:
            counts["busy"] += 1
        return flush_if_lockable(self, *a, **kw)

    def counting_received(self, data):
        before = len(self.requests)
        res = received(self, data)
        counts["requests"] += max(0, len(self.requests) - before)
        return res

    wasyncore.poll = counting_poll
    channel.HTTPChannel._flush_some_if_lockable = counting_flush
    channel.HTTPChannel.received = counting_received

    def report(*a):
        n = max(counts["requests"], 1)
        print(
            f"loopcount requests={counts['requests']} loop_iterations/request="
            f"{counts['loop'] / n:.2f} handle_write_lock_busy/request={counts['busy'] / n:.2f} "
            f"handle_write_lock_free/request={counts['free'] / n:.2f}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(0)

    signal.signal(signal.SIGTERM, report)


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
    p.add_argument("--count-loop", action="store_true")
    p.add_argument("--send-bytes", type=int, default=None,
                   help="waitress send_bytes (deprecated option; an experiment)")
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

    if args.count_loop:
        install_loop_counters()

    # With threads=1 waitress logs "Task queue depth is N" on every queued
    # request; logging is not what we measure.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    app = load_app(args.app)
    options = {}
    if args.send_bytes is not None:
        warnings.simplefilter("ignore", DeprecationWarning)
        options["send_bytes"] = args.send_bytes
    server = create_server(app, host=args.host, port=args.port, threads=args.threads, **options)

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
