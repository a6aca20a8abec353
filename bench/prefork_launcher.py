"""Run the app under prefork_waitress (for bench/metrics_scrape.py; the scenarios run `python -m prefork_waitress`).

    python bench/prefork_launcher.py --workers 2 --base-port 20000 bench.apps:hello
    python bench/prefork_launcher.py --workers 2 --base-port 20000 --cpu-affinity off \
        --request-timeout 30 --max-requests 0 --preload bench.apps:hello
    python bench/prefork_launcher.py --workers 2 --base-port 20000 --metrics-port 9100 \
        --access-log /tmp/access.log bench.apps:hello

Exits with status 3 and prints "prefork_waitress: not available" when the
library cannot be imported (not written yet, or not on PYTHONPATH).
"""

import argparse
import sys

NOT_AVAILABLE = 3


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--cpu-affinity", choices=["auto", "off"], default="auto")
    p.add_argument("--request-timeout", type=float, default=None)
    p.add_argument("--max-requests", type=int, default=0)
    p.add_argument("--preload", action="store_true")
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--access-log", default=None)
    p.add_argument("--check", action="store_true", help="only check the import")
    p.add_argument("--show-path", action="store_true", help="print where prefork_waitress comes from")
    p.add_argument("app", nargs="?", default="bench.apps:hello")
    args = p.parse_args(argv)
    try:
        import prefork_waitress
        from prefork_waitress import Master
    except ImportError as exc:
        print(f"prefork_waitress: not available ({exc})", flush=True)
        sys.exit(NOT_AVAILABLE)
    if args.show_path:
        print(f"prefork_waitress from {prefork_waitress.__file__}", flush=True)
    if args.check:
        return
    Master(
        args.app,
        workers=args.workers,
        host=args.host,
        base_port=args.base_port,
        cpu_affinity=args.cpu_affinity == "auto",
        request_timeout=args.request_timeout,
        max_requests=args.max_requests,
        preload=args.preload,
        **{name: value for name, value in (("metrics_port", args.metrics_port), ("access_log", args.access_log))
           if value is not None},
    ).start()


if __name__ == "__main__":
    main()
