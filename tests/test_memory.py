"""Memory options: the preloaded heap is frozen for the workers, max_rss recycles a worker that grows."""

import subprocess
import sys

import pytest
from conftest import LoadLoop

from prefork_waitress._os.memory import MIB, RssLimit

BODY = """
M = RecordingMaster
M("apps:app", workers={workers}, base_port=0, graceful_timeout=10, {options}).start()
"""


def fresh_interpreter_freeze_count():
    """What gc.get_freeze_count() says before anyone froze anything (3.12 starts with a few hundred)."""
    code = "import gc; print(gc.get_freeze_count())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=30).stdout)


def frozen_counts(c):
    return [reply["gc_frozen"] for reply in c.order("command", "stats")["result"].values()]


def test_preload_freezes_the_heap_the_workers_inherit(cluster):
    c = cluster(BODY.format(workers=2, options="preload=True"))
    c.ready()
    counts = frozen_counts(c)
    assert len(counts) == 2 and all(n > 1000 for n in counts), counts  # the interpreter + waitress + the app
    assert "objects frozen (gc.freeze)" in c.log()


def test_a_preload_reload_freezes_the_new_code_too(cluster):
    c = cluster(BODY.format(workers=1, options="preload=True"))
    c.ready()
    before = frozen_counts(c)[0]
    c.order("reload")
    assert c.wait_event("reloaded")["ok"]
    after = frozen_counts(c)[0]
    assert after > 1000 and abs(after - before) < before // 2, (before, after)  # refrozen, not accumulated


@pytest.mark.parametrize("options", ["preload=False", "preload=True, gc_freeze=False"])
def test_no_freeze_without_preload_or_when_turned_off(cluster, options):
    c = cluster(BODY.format(workers=1, options=options))
    c.ready()
    assert frozen_counts(c) == [fresh_interpreter_freeze_count()]


def test_max_rss_recycles_a_growing_worker_successor_first_with_no_failed_request(cluster):
    c = cluster(BODY.format(workers=1, options="max_rss=90"))
    ready = c.ready()
    first = ready["workers"][0]["pid"]
    boot_rss = c.order("command", "stats")["result"]["0"]["rss"]
    assert boot_rss < 60 * MIB, f"test worker too big at boot for max_rss=90: {boot_rss / MIB:.0f} MiB"
    with LoadLoop(ready["ports"], threads=2, path="/grow") as load:
        exited = c.wait_event("worker_exited", timeout=30, where=lambda e: e["info"]["pid"] == first)
        load.wait_for_requests(50)  # and its successor serves
    assert load.failures == []
    assert exited["exitcode"] == 0, "the grown worker drained and left on its own"
    successor = c.wait_event("worker_started", where=lambda e: e["info"]["generation"] == 2)
    assert successor["t"] < exited["t"], "the successor served before the grown worker left"
    assert "over max_rss=90; recycling it" in c.log()
    stats = c.order("command", "stats")["result"]["0"]
    assert stats["pid"] != first and stats["generation"] >= 2


def test_max_rss_off_never_recycles(cluster):
    c = cluster(BODY.format(workers=1, options="max_rss=0"))
    ready = c.ready()
    with LoadLoop(ready["ports"], threads=2, path="/grow") as load:
        load.wait_for_requests(300)  # ~75 MiB more than at boot
    assert load.failures == []
    stats = c.order("command", "stats")["result"]["0"]
    assert stats["pid"] == ready["workers"][0]["pid"] and stats["rss"] > 60 * MIB


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_rss_limit_reads_at_most_once_per_interval_and_tells_once():
    clock, reads, rss = Clock(), [], [10 * MIB]

    def read():
        reads.append(clock.now)
        return rss[0]

    limit = RssLimit(50, read_rss=read, clock=clock, interval=1.0)
    assert limit.check() is None and reads == [100.0]
    rss[0] = 80 * MIB
    clock.now = 100.5
    assert limit.check() is None and reads == [100.0], "read again within the interval"
    clock.now = 101.0
    assert limit.check() == 80 * MIB and len(reads) == 2
    clock.now = 105.0
    assert limit.check() is None and len(reads) == 2, "told once; no more reads"


def test_rss_limit_without_proc_never_fires():
    limit = RssLimit(1, read_rss=lambda: None, clock=Clock())
    assert limit.check() is None
