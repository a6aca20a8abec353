"""request_timeout: a stuck request's worker is replaced, with its traceback in the output."""

import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REQUEST_LOST, InThread, get, wait_until

from prefork_waitress._policies.timeouts import DUMP_SIGNAL, KILL_AFTER_DUMP, RequestTimeouts
from prefork_waitress._wire.meter import _START, RequestMeter

BODY = """
RecordingMaster("apps:app", workers=2, base_port=0, request_timeout=1, output={out!r}, graceful_timeout=10).start()
"""


def test_stuck_request_replaces_its_worker_and_dumps_its_traceback(cluster, tmp_path):
    out = tmp_path / "workers.out"
    c = cluster(BODY.format(out=str(out)))
    ready = c.ready()
    stuck, other = ready["workers"]
    outcome = {}

    def stuck_request():
        try:
            outcome["response"] = get(stuck["port"], "/slow?s=30", timeout=20)
        except Exception as exc:
            outcome["error"] = exc

    sent = time.monotonic()
    thread = threading.Thread(target=stuck_request)
    thread.start()
    try:
        # The other worker serves meanwhile, a request shorter than the timeout included.
        status, body, _ = get(other["port"], "/slow?s=0.5")
        assert status == 200 and body == f"{other['pid']} {other['port']}"
        started = c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 0 and e["info"]["generation"] == 2)
        exited = c.wait_event("worker_exited", where=lambda e: e["info"]["pid"] == stuck["pid"])
    finally:
        thread.join(20)
    assert "error" in outcome, outcome  # the stuck request itself is lost with its process
    replaced_after = started["t"] - sent
    assert 1.0 <= replaced_after < 1.8, replaced_after
    assert exited["exitcode"] == -signal.SIGKILL and exited["t"] - sent < 3
    assert started["info"]["port"] == stuck["port"] and get(stuck["port"])[1].startswith(str(started["info"]["pid"]))

    wait_until(lambda: " in slow\n" in out.read_text(), message="the stuck thread's traceback in the output")
    dump = out.read_text()
    note = f"prefork_waitress: worker 0 (pid {stuck['pid']}, port {stuck['port']}) request running for 1."
    assert note in dump and dump.index(note) < dump.index(" in slow\n")
    assert "apps.py" in dump and "(most recent call first)" in dump
    assert f"worker 0 (pid {stuck['pid']}, port {stuck['port']}): request running for 1." in c.log()
    assert "over request_timeout (1 s)" in c.log()

    assert c.order("command", "stats", worker=1)["result"]["1"]["pid"] == other["pid"]
    assert not [e for e in c.events if e["event"] == "worker_exited" and e["info"]["pid"] == other["pid"]]


class RecordingTimers:
    """The clock/timer collaborator of RequestTimeouts: records when it asks to be woken."""

    def __init__(self):
        self.deadlines = []

    def call_at(self, deadline, callback):
        self.deadlines.append(deadline)
        return self

    def call_later(self, delay, callback):
        return self.call_at(time.monotonic() + delay, callback)

    def cancel(self):
        pass


class RecordingPool:
    """The pool collaborator: the processes to sweep, and what the policy asks of it."""

    def __init__(self, workers):
        self.processes = {worker.pid: worker for worker in workers}
        self.stopped = []
        self.respawned = []

    def stop_process(self, worker, graceful, timeout=None):
        self.stopped.append((worker, graceful, timeout))

    def vacate(self, worker):
        return True

    def respawn(self, slot, reason):
        self.respawned.append((slot, reason))


class Slot:
    id, port, retiring = 0, 8080, False


class SweptWorker:
    """A worker of the pool: a real process (so the dump signal has a target) and its meter."""

    generation = 1

    def __init__(self):
        self.meter = RequestMeter()
        self.slot = Slot()
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.pid = self.process.pid

    def close(self):
        self.process.kill()
        self.process.wait(10)
        self.meter.close()


def test_sweep_sleeps_until_the_earliest_deadline_then_replaces_the_stuck_worker(tmp_path):
    idle, busy = SweptWorker(), SweptWorker()
    timers, pool = RecordingTimers(), RecordingPool([idle, busy])
    output = tmp_path / "workers.out"
    sweeps = RequestTimeouts(10.0, timers, pool, lambda slot: False, lambda: True, output=str(output))
    try:
        before = time.monotonic()
        sweeps.sweep()
        assert before + 10 <= timers.deadlines[-1] <= time.monotonic() + 10  # all idle: one timeout
        _START.pack_into(busy.meter._map, 0, before - 3.0)
        sweeps.sweep()
        assert timers.deadlines[-1] == before + 7.0  # exactly when the running request is due
        assert pool.stopped == [] and pool.respawned == []
        _START.pack_into(busy.meter._map, 0, before - 10.5)
        sweeps.sweep()
        assert pool.stopped == [(busy, True, KILL_AFTER_DUMP)] and pool.respawned == [(busy.slot, "timeout")]
        assert sweeps.expired == {busy.pid}  # it is not expired twice
        assert busy.process.wait(10) == -DUMP_SIGNAL  # it was sent the traceback dump signal
        assert f"(pid {busy.pid}, port 8080) request running for 10." in output.read_text()
        busy.meter.finished()
        assert busy.meter.read() == 0.0
    finally:
        idle.close()
        busy.close()


GIL_BODY = """
import ctypes

def holding_app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        open("holding", "w").close()
        hold = ctypes.PyDLL(None).sleep  # a C call that keeps the GIL: no Python code runs meanwhile
        while True:
            hold(30)  # a signal cuts a sleep short: hold on again
    return apps.app(environ, start_response)

RecordingMaster(holding_app, workers=1, base_port=0, output={out!r}, request_timeout={timeout},
                graceful_timeout=1).start()
emit("exited")
"""


def hold_the_gil(c, tmp_path, port):
    """Start a request that holds the worker's GIL; returns its thread once the request runs."""
    request = InThread(lambda: get(port, "/hold", timeout=20))
    wait_until(lambda: (tmp_path / "holding").exists(), message="the request to hold the GIL")
    return request


def test_request_holding_the_gil_is_still_dumped_and_replaced(cluster, tmp_path):
    out = tmp_path / "workers.out"
    c = cluster(GIL_BODY.format(out=str(out), timeout=1))
    ready = c.ready()
    request = hold_the_gil(c, tmp_path, ready["ports"][0])
    exited = c.wait_event("worker_exited")
    c.wait_event("worker_started", where=lambda e: e["info"]["generation"] == 2)
    with pytest.raises(REQUEST_LOST):
        request.result(20)  # its request is lost with the killed process
    assert exited["exitcode"] == -signal.SIGKILL
    wait_until(lambda: " in holding_app\n" in out.read_text(), message="the traceback of the GIL holder")
    assert get(ready["ports"][0])[0] == 200


def test_stop_kills_a_worker_that_cannot_even_run_its_signal_handler(cluster, tmp_path):
    c = cluster(GIL_BODY.format(out=str(tmp_path / "workers.out"), timeout=None))
    ready = c.ready()
    request = hold_the_gil(c, tmp_path, ready["ports"][0])
    stopped = time.monotonic()
    c.signal(signal.SIGTERM)
    exited = c.wait_event("worker_exited")
    assert exited["exitcode"] == -signal.SIGKILL  # neither its drain nor its own exit deadline could run
    assert c.wait_exit() == 0 and time.monotonic() - stopped < 4
    with pytest.raises(REQUEST_LOST):
        request.result(20)  # its request is lost with the killed process
