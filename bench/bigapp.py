"""A "large legacy app" for the memory scenario: a big object graph built at import.

At import: 3,000 classes (with methods and class attributes, as a big Django
or Trac install defines) and 100,000 small records (dicts holding a list and
a nested dict, so the cyclic GC tracks them), about 60 MB of Python heap.
Per request: build and drop ~80 short-lived objects (40 of them in
reference cycles, as request/ORM object graphs are), read 20 records of a 2,000-record hot set, and put one entry in a
bounded 500-entry cache (entries live long enough to reach the old
generation, as session or template caches do, which is what lets full
collections run in a long-lived worker).
"""

import os
import random
from collections import OrderedDict


def _make_class(i):
    def describe(self):
        return f"{type(self).__name__}#{self.n}"

    def __init__(self, n=0):
        self.n = n

    return type(f"Model{i}", (object,), {"__init__": __init__, "describe": describe, "table": f"t_{i}",
                                         "fields": (f"f{i}_a", f"f{i}_b"), "options": {"ordering": [f"f{i}_a"]}})


CLASSES = [_make_class(i) for i in range(3_000)]
RECORDS = {
    f"key{i:06d}": {"id": i, "name": f"record {i}", "tags": [i % 7, i % 11], "meta": {"owner": i % 97}}
    for i in range(100_000)
}
HOT_KEYS = [f"key{i:06d}" for i in range(2_000)]  # the newest 2,000 records are the ones requests read
CACHE = OrderedDict()
CACHE_SIZE = 500


def _request_garbage(n):
    """Short-lived objects, some in cycles, dropped when the request ends."""
    objects = [CLASSES[(n + i) % len(CLASSES)](i) for i in range(40)]
    rows = [{"row": i, "values": [i, str(i)]} for i in range(20)]
    for a, b in zip(objects, objects[1:]):
        a.next, b.prev = b, a  # a doubly linked chain: only the cyclic GC frees it
    return sum(len(o.describe()) for o in objects) + len(rows)


def app(environ, start_response):
    n = random.randrange(1_000_000)
    size = _request_garbage(n)
    hot = sum(RECORDS[random.choice(HOT_KEYS)]["meta"]["owner"] for _ in range(20))
    CACHE[n] = {"size": size, "hot": hot, "parts": [n, size]}
    while len(CACHE) > CACHE_SIZE:
        CACHE.popitem(last=False)
    body = f"pid {os.getpid()} records {len(RECORDS)} hot {hot}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
