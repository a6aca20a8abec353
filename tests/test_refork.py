"""refork_after: the other slots' workers are forked from a warm one, and the master keeps them all."""

import os
import signal
import sys

import pytest
from conftest import REQUEST_LOST, InThread, LoadLoop, get, pid_alive, port_is_free, wait_until
from procfs import children_of, signal_thread, stat_fields, threads_of
from test_memory import fresh_interpreter_freeze_count
from test_wedge import frozen

from prefork_waitress.options import make_settings

BODY = """
RecordingMaster("apps:app", workers={workers}, base_port=0, worker_class=apps.TestWorker,
                refork_after={after}, graceful_timeout=10{extra}).start()
emit("exited")
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reforking is Linux only")


def start(cluster, workers=3, after=20, extra=""):
    c = cluster(BODY.format(workers=workers, after=after, extra=extra))
    return c, c.ready()


def reforked(c, slots, timeout=20):
    """Wait for a reforked worker in each of ``slots``: slot id -> its WorkerInfo (as a dict)."""
    found = {}
    while set(found) != set(slots):
        event = c.wait_event(
            "worker_started", timeout, where=lambda e: e["info"]["reforked_from"] and e["info"]["id"] not in found
        )
        found[event["info"]["id"]] = event["info"]
    return found


def workers(c):
    """Slot id -> WorkerInfo dict, from the master's public ``workers``."""
    return {w["id"]: w for w in c.order("_snapshot")["result"]}


def served_by(port):
    return int(get(port)[1].split()[0])


def refork_from_slot_0(cluster, workers_count=3, after=20, extra=""):
    """A cluster whose slot 0 alone gets requests, so it is the template; waits until the others are reforked."""
    c, ready = start(cluster, workers=workers_count, after=after, extra=extra)
    for _ in range(after):
        assert get(ready["ports"][0])[0] == 200
    infos = reforked(c, list(range(1, workers_count)))
    for cold in ready["workers"][1:]:  # until it has drained, the cold worker may still take a connection
        c.wait_event("worker_exited", 15, where=lambda e, pid=cold["pid"]: e["info"]["pid"] == pid)
    return c, ready, infos


def test_refork_replaces_every_other_slot_from_the_warm_worker_with_no_failed_request(cluster):
    c, ready = start(cluster, workers=3, after=30)
    master_pid = c.proc.pid
    first = {w["id"]: w["pid"] for w in ready["workers"]}
    with LoadLoop(ready["ports"], threads=4) as load:
        one = c.wait_event("worker_started", 25, where=lambda e: bool(e["info"]["reforked_from"]))
        template = one["info"]["reforked_from"]
        template_slot = next(slot for slot, pid in first.items() if pid == template)
        others = [slot for slot in first if slot != template_slot]
        infos = {one["info"]["id"]: one["info"], **reforked(c, [s for s in others if s != one["info"]["id"]])}
        for slot in others:
            exited = c.wait_event("worker_exited", 15, where=lambda e, s=slot: e["info"]["pid"] == first[s])
            assert exited["exitcode"] == 0, "the cold worker drained and left on its own"
        load.wait_for_requests(100)  # the reforked workers serve under the same load
    assert load.failures == []
    assert sorted(infos) == others and all(info["reforked_from"] == template for info in infos.values())
    now = workers(c)
    assert now[template_slot]["pid"] == template and now[template_slot]["reforked_from"] is None
    for slot, info in infos.items():
        assert now[slot]["pid"] == info["pid"] == served_by(ready["ports"][slot])
        assert int(stat_fields(info["pid"])[1]) == master_pid, "the master adopted it: it is its parent"
    assert "forking the workers of slots" in c.log()
    assert f"refork from pid {template} done: 2 slot(s) reforked" in c.log()


def test_reforked_workers_answer_commands_are_respawned_when_killed_and_die_with_the_master(cluster):
    c, ready, infos = refork_from_slot_0(cluster)
    replies = c.order("command", "greet", "you")["result"]
    assert replies == {str(slot): f"noticed you; hello you from {slot}" for slot in range(3)}
    stats = c.order("command", "stats")["result"]
    assert {slot: stats[str(slot)]["pid"] for slot in (1, 2)} == {slot: infos[slot]["pid"] for slot in (1, 2)}
    assert all(stats[str(slot)]["requests_served"] < 5 for slot in (1, 2)), "a new Worker, not the template's"
    killed = infos[1]["pid"]
    os.kill(killed, signal.SIGKILL)
    exited = c.wait_event("worker_exited", 10, where=lambda e: e["info"]["pid"] == killed)
    assert exited["exitcode"] == -signal.SIGKILL
    after = infos[1]["generation"]
    respawned = c.wait_event(
        "worker_started", 10, where=lambda e: e["info"]["id"] == 1 and e["info"]["generation"] > after
    )
    respawned = respawned["info"]
    assert respawned["reforked_from"] is None  # the master forks a respawn itself
    assert served_by(ready["ports"][1]) == respawned["pid"]
    assert killed not in children_of(c.proc.pid), "reaped, not left a zombie"
    pids = [w["pid"] for w in workers(c).values()]
    c.signal(signal.SIGKILL)
    c.wait_exit()
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5, message="every worker gone")
    wait_until(lambda: all(port_is_free(p) for p in ready["ports"]), timeout=5, message="ports free")


def test_a_reforked_worker_stops_on_sigterm_whichever_of_its_threads_the_kernel_hands_it_to(cluster):
    """On 3.13 a worker forked from the template's command thread never ran its SIGTERM handler
    when the signal landed on one of its other threads: the master SIGKILLed it after graceful_timeout."""
    c, ready, infos = refork_from_slot_0(cluster, workers_count=2)
    pid = infos[1]["pid"]
    main, *others = threads_of(pid)
    assert main == pid and others, "a worker has its command thread besides the loop thread"
    signal_thread(pid, others[-1], signal.SIGTERM)
    exited = c.wait_event("worker_exited", 5, where=lambda e: e["info"]["pid"] == pid)  # graceful_timeout is 10 s
    assert exited["exitcode"] == 0
    c.wait_event("worker_started", 10, where=lambda e: e["info"]["id"] == 1 and e["info"]["pid"] != pid)
    assert get(ready["ports"][1])[0] == 200


def test_a_reforked_worker_finishes_its_request_on_a_graceful_stop(cluster):
    c, ready, infos = refork_from_slot_0(cluster, workers_count=2)
    slow = InThread(lambda: get(ready["ports"][1], "/slow?s=1.5", timeout=20))
    wait_until(lambda: c.order("command", "stats")["result"]["1"]["in_flight"] == 1, 5, message="request running")
    c.signal(signal.SIGTERM)
    status, body, _ = slow.result(timeout=20)
    assert status == 200 and int(body.split()[0]) == infos[1]["pid"]
    assert c.wait_exit(timeout=20) == 0


def test_the_template_freezes_the_heap_it_shares_unless_gc_freeze_is_off(cluster):
    baseline = fresh_interpreter_freeze_count()
    c, ready, infos = refork_from_slot_0(cluster, workers_count=2)
    stats = c.order("command", "stats")["result"]
    assert stats["0"]["gc_frozen"] > baseline + 1000, "the template froze its heap before it forked"
    assert stats["1"]["gc_frozen"] >= stats["0"]["gc_frozen"] - 100, "and the reforked worker inherited it"
    c2, _, _ = refork_from_slot_0(cluster, workers_count=2, extra=", gc_freeze=False")
    assert [reply["gc_frozen"] for reply in c2.order("command", "stats")["result"].values()] == [baseline] * 2


def test_max_requests_and_request_timeout_hold_for_reforked_workers(cluster, tmp_path):
    out = tmp_path / "workers.out"
    c, ready, infos = refork_from_slot_0(
        cluster, workers_count=2, after=10, extra=f", max_requests=25, request_timeout=1, output={str(out)!r}"
    )
    reforked_pid = infos[1]["pid"]
    for _ in range(25):
        assert get(ready["ports"][1])[0] == 200
    exited = c.wait_event("worker_exited", 15, where=lambda e: e["info"]["pid"] == reforked_pid)
    assert exited["exitcode"] == 0 and f"worker 1 (pid {reforked_pid}) served 25 requests; recycling it" in c.log()
    c2, ready2, infos2 = refork_from_slot_0(
        cluster, workers_count=2, after=10, extra=f", output={str(out)!r}, request_timeout=1"
    )
    stuck = infos2[1]["pid"]
    request = InThread(lambda: get(ready2["ports"][1], "/slow?s=30", timeout=20))
    killed = c2.wait_event("worker_exited", 15, where=lambda e: e["info"]["pid"] == stuck)
    assert killed["exitcode"] == -signal.SIGKILL and "over request_timeout (1 s)" in c2.log()
    with pytest.raises(REQUEST_LOST):
        request.result(timeout=20)
    replaced = c2.wait_event("worker_started", 10, where=lambda e: e["info"]["generation"] > infos2[1]["generation"])
    assert replaced["info"]["id"] == 1


def test_a_frozen_reforked_worker_misses_its_heartbeats_and_is_replaced(cluster):
    c, ready, infos = refork_from_slot_0(cluster, workers_count=2, extra=", heartbeat_timeout=1")
    with frozen(infos[1]["pid"]) as pid:
        exited = c.wait_event("worker_exited", 8, where=lambda e: e["info"]["pid"] == pid)
        assert exited["exitcode"] == -signal.SIGKILL
    replaced = c.wait_event("worker_started", 8, where=lambda e: e["info"]["generation"] > infos[1]["generation"])
    assert replaced["info"]["id"] == 1 and served_by(ready["ports"][1]) == replaced["info"]["pid"]
    assert "heartbeat" in c.log()


def test_refork_after_is_checked_like_every_option(monkeypatch):
    with pytest.raises(ValueError, match="option refork_after: expected a number"):
        make_settings(refork_after="often")
    assert make_settings(refork_after="1000").refork_after == (1000,)
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(
        ValueError, match="option refork_after: cannot refork here: it needs Linux.*leave refork_after at 0"
    ):
        make_settings(refork_after=1000)
    assert make_settings(refork_after=0).refork_after == ()
