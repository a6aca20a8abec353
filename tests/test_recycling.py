"""max_requests: workers are recycled one slot at a time, successor first, no request lost."""

import time

from conftest import KeepAliveConnection, LoadLoop, get, wait_until

BODY = """
class M(RecordingMaster):
    def _serving(self):
        return sum(1 for slot in self._slots if slot.current is not None and slot.current.ready)

    def worker_started(self, info):
        booting = sum(1 for p in self._processes.values() if not p.ready)
        emit("worker_started", info=info.__dict__, serving=self._serving(), booting=booting)

    def worker_exited(self, info, exitcode):
        emit("worker_exited", info=info.__dict__, exitcode=exitcode, serving=self._serving())

    def recycling(self):
        return self._replacer.busy or bool(self._replacer.queue)

M("apps:app", workers={workers}, base_port=0, max_requests={limit}, graceful_timeout=10).start()
"""


def settle(c, limit):
    """Wait until no recycle is due or running; then every event so far is in c.events."""

    def settled():
        if c.order("recycling")["result"]:
            return False
        return all(reply["requests_served"] < limit for reply in c.order("command", "stats")["result"].values())

    wait_until(settled, timeout=15, interval=0.05, message="recycling to settle")
    c.order("recycling")


def test_recycling_under_load_staggers_slots_and_fails_nothing(cluster):
    c = cluster(BODY.format(workers=2, limit=20))
    ready = c.ready()
    with LoadLoop(ready["ports"], threads=4) as load:
        load.wait_for_requests(300)
    assert load.failures == []
    settle(c, 20)
    after_ready = c.events[c.events.index(ready) + 1 :]
    lifecycle = [e for e in after_ready if e["event"] in ("worker_started", "worker_exited")]
    started = [e for e in lifecycle if e["event"] == "worker_started"]
    exited = [e for e in lifecycle if e["event"] == "worker_exited"]
    assert {e["info"]["id"] for e in started} == {0, 1}, "both slots were recycled"
    assert all(e["info"]["generation"] > 1 for e in started)
    assert len(exited) == len(started) and all(e["exitcode"] == 0 for e in exited)
    assert all(e["serving"] == 2 for e in lifecycle), "a slot was without a serving worker"
    # One slot at a time: when a successor serves, no other successor is starting.
    assert all(e["booting"] == 0 for e in started), lifecycle


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
    settle(c, 15)
    lifecycle = [e for e in c.events[c.events.index(ready) + 1 :] if e["event"] in ("worker_started", "worker_exited")]
    assert all(e["serving"] == 2 for e in lifecycle), "a slot was without a serving worker"
    assert all(e["exitcode"] == 0 for e in lifecycle if e["event"] == "worker_exited")
    assert "recycling it" in c.stderr_path.read_text()
