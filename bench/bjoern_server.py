"""bjoern on one port with N forked processes sharing the listening socket (bench/contenders.py).

    python bench/bjoern_server.py --port 8080 --workers 2 bench.apps:hello
"""

import argparse
import importlib
import os
import signal
import sys


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("app")
    args = p.parse_args(argv)
    import bjoern

    module, _, attr = args.app.partition(":")
    app = getattr(importlib.import_module(module), attr)
    bjoern.listen(app, "127.0.0.1", args.port)
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            bjoern.run()
            os._exit(0)
        children.append(pid)

    def stop(signum, frame):
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    bjoern.run()


if __name__ == "__main__":
    main()
