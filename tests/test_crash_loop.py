"""Crash loops after the service is up: exponential backoff, summarised logs, recovery."""

import os
import signal

from conftest import get, wait_until
from procfs import cpu_seconds

from prefork_waitress._policies.backoff import BACKOFF_CAP, BACKOFF_START, backoff_delay

FLAKY_APP = """
import os

if os.path.exists("fail.flag"):
    raise RuntimeError("flag file says fail")

from apps import app
"""

TIMED_MASTER = """
RecordingMaster("flaky_app:app", workers=2, base_port=0, graceful_timeout=5).start()
"""


def full_log(c):
    return c.stderr_path.read_text(errors="replace")


def test_backoff_doubles_from_start_to_cap():
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [BACKOFF_START, BACKOFF_START * 2, BACKOFF_START * 4, 0.8]
    assert backoff_delay(100) == BACKOFF_CAP == 30.0


def test_crash_loop_backs_off_keeps_others_serving_and_recovers(cluster, tmp_path):
    (tmp_path / "flaky_app.py").write_text(FLAKY_APP)
    c = cluster(TIMED_MASTER, env={"PYTHONDONTWRITEBYTECODE": "1"})
    ready = c.ready()
    port0, port1 = ready["ports"]
    (tmp_path / "fail.flag").write_text("fail")
    os.kill(ready["workers"][1]["pid"], signal.SIGKILL)
    killed = c.wait_event("worker_exited", where=lambda e: e["exitcode"] == -signal.SIGKILL)

    failures = []
    for attempt in range(1, 5):
        failures.append(c.wait_event("worker_exited", where=lambda e: e["info"]["id"] == 1 and e["exitcode"] == 3))
        if attempt == 2:  # between attempts: the slot says it is respawning, the other slot serves
            replies = c.order("command", "ping")["result"]
            assert replies["0"] == "pong" and replies["1"]["type"] == "NotReady"
            assert get(port0)[0] == 200
    cpu_before = cpu_seconds(c.proc.pid)
    (tmp_path / "fail.flag").unlink()
    back = c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 1 and e["info"]["generation"] > 1)
    idle_cpu = cpu_seconds(c.proc.pid) - cpu_before

    # Then 0.1, 0.2, 0.4, 0.8 s, never a retry early (a busy box only makes the gaps longer); the exact
    # schedule is asserted on a virtual clock (test_states.py::test_a_worker_that_keeps_failing_to_boot_...).
    times = [killed["t"]] + [e["t"] for e in failures] + [back["t"]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    for gap, delay in zip(gaps[1:], (0.1, 0.2, 0.4, 0.8)):
        assert delay <= gap, (gaps, delay)
    assert idle_cpu < 0.2, f"the master used {idle_cpu} s of CPU during an 0.8 s backoff"

    assert back["info"]["generation"] == 6 and back["info"]["restarts"] == 5
    assert get(port1)[0] == 200
    # The master logs the recovery right after the worker_started event the test saw: wait for the line.
    wait_until(lambda: "worker 1 is serving again after" in full_log(c), 10, message="the recovery log line")
    log = full_log(c)
    assert log.count("RuntimeError: flag file says fail") == 2  # the summary line + the traceback's last line
    assert log.count("Traceback (most recent call last)") == 1
    assert "died with signal SIGKILL; respawning" in log
    assert "still failing (same error, exit code 3, attempt 4, next in 0.8 s)" in log
    assert "worker 1 is serving again after 4 failed attempts" in log


def test_a_different_error_is_logged_in_full_again(cluster, tmp_path):
    (tmp_path / "flaky_app.py").write_text(FLAKY_APP.replace('"flag file says fail"', 'open("fail.flag").read()'))
    c = cluster(TIMED_MASTER, env={"PYTHONDONTWRITEBYTECODE": "1"})
    ready = c.ready()
    flag = tmp_path / "fail.flag"
    flag.write_text("first problem")
    os.kill(ready["workers"][0]["pid"], signal.SIGKILL)
    wait_until(lambda: "(same error, exit code 3, attempt 2," in full_log(c), message="a repeated failure")
    flag.write_text("second problem")
    wait_until(
        lambda: "still failing" in full_log(c).partition("RuntimeError: second problem; retrying in")[2],
        message="the second error, then a repeat of it",
    )
    flag.unlink()
    c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 0 and e["info"]["generation"] > 1)
    log = full_log(c)
    assert log.count("Traceback (most recent call last)") == 2
    assert log.count("RuntimeError: first problem; retrying in") == 1
    assert get(ready["ports"][0])[0] == 200
