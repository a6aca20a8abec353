"""Worker classes and a gunicorn config for the variants the memory scenario measures."""

import gc

from prefork_waitress import Worker


class NoFullCollectWorker(Worker):
    """Workers never run an automatic gen-2 (full) collection (gen-0/1 as usual)."""

    def on_start(self):
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1_000_000_000)


class LazyYoungWorker(Worker):
    """Workers collect gen 0 ten times less often (threshold 7,000 instead of 700)."""

    def on_start(self):
        _, middle, old = gc.get_threshold()
        gc.set_threshold(7_000, middle, old)
