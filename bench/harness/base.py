"""What every part of the harness shares: the host, the repo root, and small helpers of the scenarios."""

import os
import sys

HOST = "127.0.0.1"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))




def median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def csv(kind):
    """An argparse type: "a,b,c" -> [kind(a), kind(b), kind(c)]."""
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def rotated(items, rnd):
    """``items`` rotated by ``rnd``: each round starts with another contender."""
    items = list(items)
    k = rnd % max(1, len(items))
    return items[k:] + items[:k]


def progress(line):
    """A per-run line, to stderr (the tables go to stdout)."""
    print(line, file=sys.stderr, flush=True)
