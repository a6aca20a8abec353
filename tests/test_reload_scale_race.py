"""A rolling reload racing a scale-down and scale-up of the same slot (issue 22, point 4).

A HUP storm queues reloads back to back while TTOU/TTIN flap the last slot:
the slot leaves and comes back (on the same socket) while a reload is under
way. The reload must count it as reloaded (its new worker was forked after the
reload began), the slot must end with one process, and no worker may be
SIGKILLed for "not stopping" when only the slot's own retirement held it.
"""

import signal
import time

import pytest
from conftest import LoadLoop, wait_until
from procfs import children_of

from prefork_waitress._core.processes import BOOTING_STOP_TIMEOUT

SLOW_APP = """
import time

time.sleep(0.1)  # an app that takes a moment to load: a worker boots for ~0.1 s


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


# Under CI's parallel load on 3.13 the cluster once did not settle within 60 s (after the keep-alive race,
# the earlier intermittent failure, was fixed in the load loop): rerun, so a steady failure still fails.
@pytest.mark.flaky(reruns=2)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("load", [False, True], ids=["idle", "load-on-the-flapping-slot"])
def test_reload_racing_a_scale_down_and_up_of_one_slot_reloads_it_and_leaves_one_process(cluster, tmp_path, load):
    (tmp_path / "slowload.py").write_text(SLOW_APP)
    c = cluster("""
    RecordingMaster("slowload:app", workers=3, base_port=0, graceful_timeout=30).start()
    """)
    ready = c.ready()
    last_port = ready["ports"][2]
    with LoadLoop([last_port] if load else [], threads=4 if load else 0, max_seconds=90) as loop:
        if load:
            loop.wait_for_requests(50)
        for _ in range(20):  # the storm's pace, not a synchronisation
            c.signal(signal.SIGHUP)
            time.sleep(0.1)
        for _ in range(10):
            c.signal(signal.SIGTTOU)
            time.sleep(0.05)
            c.signal(signal.SIGTTIN)
            time.sleep(0.05)
        storm_end = time.monotonic()
        # Signals of one kind pending together merge into one (POSIX): on a busy box a TTIN can be lost,
        # so the end state is asked for once more, through the API.
        assert "error" not in c.order("scale", 3)
        # retiring workers under load drain until their port is quiet, up to half of graceful_timeout (15 s)
        try:
            wait_until(lambda: _settled(c), timeout=60, message="3 slots, one process each, no reload running")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus: {c.order('status')}\n{c.log(tail=None)[-6000:]}") from None
        # A worker of the flapping slot that was still booting got BOOTING_STOP_TIMEOUT: look past it.
        time.sleep(max(0.0, storm_end + BOOTING_STOP_TIMEOUT + 1.0 - time.monotonic()))
        settled = _settled(c)
        requests, failures = loop.ok, list(loop.failures)
    log = c.log(tail=None)
    reloads = [event for event in c.events if event["event"] == "reloaded"]
    assert reloads and all(event["ok"] for event in reloads), f"{reloads}\n{log[-4000:]}"
    assert "rolling reload incomplete" not in log
    assert "killing it" not in log, log[-4000:]
    assert settled, "after the storm settled, a slot got a second process again"
    if load:
        assert requests > 0 and not failures, f"{requests} ok, failures: {failures[:5]}"
    c.signal(signal.SIGTERM)
    assert c.wait_exit() == 0


def _settled(c):
    """The master's children once they are exactly the current workers of 3 slots (one process per
    slot) and no reload is running; None before."""
    status = c.order("status")["result"]
    pids = [worker["pid"] for worker in status["workers"]]
    if status["master"]["reloading"] or len(pids) != 3 or None in pids:
        return None
    children = {pid for pid, state in children_of(c.proc.pid).items() if state != "Z"}
    if children != set(pids):
        return None
    return children
