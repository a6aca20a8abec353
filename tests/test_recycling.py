"""max_requests: workers are recycled one slot at a time, successor first, no request lost."""

import time

from conftest import KeepAliveConnection, LoadLoop, get, wait_until

BODY = """
import os
from procfs import children_of
from prefork_waitress import CommandError

class M(RecordingMaster):
    def _serving(self):
        # A slot serves when its worker answers; a slot respawning or stopping answers NotReady.
        return sum(1 for reply in self.command("ping", timeout=5).values() if not isinstance(reply, CommandError))

    def worker_started(self, info):
        emit("worker_started", info=info.__dict__, serving=self._serving(), children=sorted(children_of(os.getpid())))

    def worker_exited(self, info, exitcode):
        emit("worker_exited", info=info.__dict__, exitcode=exitcode, serving=self._serving())

M("apps:app", workers={workers}, base_port=0, max_requests={limit}, graceful_timeout=10).start()
"""


def settle(c, limit, ready):
    """Wait until every slot's worker is below its limit and serving, and every replaced worker
    has exited; then every event so far is in c.events."""

    def settled():
        replies = c.order("command", "stats")["result"].values()
        if not all("error" not in reply and reply["requests_served"] < limit for reply in replies):
            return False
        after_ready = c.events[c.events.index(ready) + 1 :]
        started = sum(1 for e in after_ready if e["event"] == "worker_started")
        return started == sum(1 for e in after_ready if e["event"] == "worker_exited")

    wait_until(settled, timeout=15, interval=0.05, message="recycling to settle")


def booting_at_each_start(ready, events):
    """For each worker_started event: the master's children that were neither known ready nor exited.

    The hook lists the master's children (from /proc); every worker it had
    announced ready and not yet announced exited is known. What remains, other
    than the worker just started, is a successor still booting."""
    known = {w["pid"] for w in ready["workers"]}
    booting = []
    for event in events:
        pid = event["info"]["pid"]
        if event["event"] == "worker_exited":
            known.discard(pid)
            continue
        booting.append(set(event["children"]) - known - {pid})
        known.add(pid)
    return booting


def test_recycling_under_load_staggers_slots_and_fails_nothing(cluster):
    c = cluster(BODY.format(workers=2, limit=20))
    ready = c.ready()
    with LoadLoop(ready["ports"], threads=4) as load:
        load.wait_for_requests(300)
    assert load.failures == []
    settle(c, 20, ready)
    after_ready = c.events[c.events.index(ready) + 1 :]
    lifecycle = [e for e in after_ready if e["event"] in ("worker_started", "worker_exited")]
    started = [e for e in lifecycle if e["event"] == "worker_started"]
    exited = [e for e in lifecycle if e["event"] == "worker_exited"]
    assert {e["info"]["id"] for e in started} == {0, 1}, "both slots were recycled"
    assert all(e["info"]["generation"] > 1 for e in started)
    assert len(exited) == len(started) and all(e["exitcode"] == 0 for e in exited)
    assert all(e["serving"] == 2 for e in lifecycle), "a slot was without a serving worker"
    # One slot at a time: when a successor serves, no other successor is starting.
    assert all(not booting for booting in booting_at_each_start(ready, lifecycle)), lifecycle


def test_keep_alive_connection_is_told_to_close_before_its_worker_leaves(cluster):
    c = cluster(BODY.format(workers=1, limit=5))
    port = c.ready()["ports"][0]
    conn = KeepAliveConnection("127.0.0.1", port, timeout=10)
    served_by = []
    closes = 0
    deadline = time.monotonic() + 8
    while len(set(served_by)) < 3 and time.monotonic() < deadline:
        status, body, headers = get(port, conn=conn)  # the worker serves on until its successor is ready
        assert status == 200
        served_by.append(body.split()[0])
        if headers.get("Connection") == "close":
            closes += 1
            conn.close()
            conn = KeepAliveConnection("127.0.0.1", port, timeout=10)
    conn.close()
    pids = list(dict.fromkeys(served_by))
    assert len(pids) == 3 and closes >= 2, (" ".join(served_by), closes)
    assert served_by == sorted(served_by, key=pids.index), "each worker served one run of requests"


def test_recycling_and_rolling_reloads_wait_for_each_other(cluster):
    c = cluster(BODY.format(workers=2, limit=15))
    ready = c.ready()
    with LoadLoop(ready["ports"], threads=4) as load:
        for _ in range(3):
            load.wait_for_requests(60)
            c.order("reload")
        reloads = [c.wait_event("reloaded") for _ in range(2)]  # a reload asked during one is queued, merged
        load.wait_for_requests(60)
    assert load.failures == []
    assert all(r["ok"] for r in reloads)
    settle(c, 15, ready)
    lifecycle = [e for e in c.events[c.events.index(ready) + 1 :] if e["event"] in ("worker_started", "worker_exited")]
    assert all(e["serving"] == 2 for e in lifecycle), "a slot was without a serving worker"
    assert all(e["exitcode"] == 0 for e in lifecycle if e["event"] == "worker_exited")
    assert "recycling it" in c.stderr_path.read_text()
