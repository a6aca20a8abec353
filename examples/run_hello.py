"""Three workers of examples/hello.py on ports 8080-8082, stopped with Ctrl-C."""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefork_waitress import Master  # noqa: E402


class HelloMaster(Master):
    def when_ready(self) -> None:
        print("serving on", ", ".join(f"http://127.0.0.1:{port}/" for port in self.ports), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    HelloMaster("examples.hello:app", workers=3, base_port=8080).start()
