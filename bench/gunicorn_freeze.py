"""gunicorn config: what a gunicorn user writes to freeze a --preload app (the memory scenario)."""

import gc


def when_ready(server):
    """Runs in the arbiter after the preload, before the workers are forked."""
    gc.collect()
    gc.freeze()
