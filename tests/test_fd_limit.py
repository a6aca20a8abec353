"""The master raises its soft fd limit at start and survives one lowered from outside (issue 22.3)."""

import os
import resource
import shutil
import signal
import sys

import pytest
from conftest import free_ports, get, pid_alive, wait_until

APP = "apps:app"
NOT_WAITING = "the loop cannot wait on its"


def _set_limit(pid, soft, hard):
    """Set a running process's RLIMIT_NOFILE from outside, with util-linux prlimit where it exists."""
    if shutil.which("prlimit"):
        import subprocess

        subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={soft}:{hard}"], check=True)
    else:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def _limit(pid):
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def _start(server, tmp_path, workers, program=None):
    port = free_ports(workers)
    sock = tmp_path / "ctl.sock"
    args = ["--workers", str(workers), "--base-port", str(port), "--control-socket", str(sock), APP]
    master = server(*args, **({"program": program} if program else {}))
    return master, sock, master.status(sock)


def test_the_master_raises_its_soft_fd_limit_and_its_workers_keep_the_original(server, tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard fd limit ({hard}) leaves nothing to raise")
    program = (sys.executable, "-c", _LOWERED_THEN_CLI, "256")
    master, _, status = _start(server, tmp_path, 1, program)
    soft_master, hard_master = _limit(master.proc.pid)
    assert soft_master == hard_master, f"master's limit {soft_master}/{hard_master}: soft not raised"
    worker = status["workers"][0]["pid"]
    assert _limit(worker)[0] == 256, "a worker runs under the limit the master was given"


# Start the CLI with a soft fd limit of argv[1] (the program under test then raises its own).
_LOWERED_THEN_CLI = """\
import resource, sys
soft = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from prefork_waitress.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_master_survives_an_fd_limit_lowered_from_outside_and_respawns_after(server, tmp_path):
    # Three workers: after one died the loop still watches 2 x 2 worker fds, its signal
    # socket and control socket, more than the 4 the limit allows (poll() fails with EINVAL).
    master, sock, status = _start(server, tmp_path, 3)
    pid = master.proc.pid
    victim = status["workers"][0]
    survivor = status["workers"][1]
    _set_limit(pid, 4, 1024)
    try:
        os.kill(victim["pid"], signal.SIGKILL)  # wakes the loop, whose next poll() has more fds than 4
        try:
            wait_until(lambda: NOT_WAITING in master.log() or master.proc.poll() is not None, timeout=10)
        except AssertionError:
            raise AssertionError(f"the master did not notice its loop cannot wait:\n{master.log()}") from None
        assert master.proc.poll() is None, f"the master died under a lowered fd limit:\n{master.log()}"
        # Meanwhile the other worker still serves.
        status_code, body, _ = get(survivor["port"])
        assert status_code == 200 and int(body.split()[0]) == survivor["pid"]
    finally:
        _set_limit(pid, 1024, 1024)
    respawned = master.status(sock)

    def slot0_back():
        current = master.status(sock)["workers"][0]
        return current if current["pid"] not in (None, victim["pid"]) else None

    slot0 = wait_until(slot0_back, timeout=15, message="slot 0 respawned")
    assert master.proc.poll() is None
    status_code, body, _ = get(victim["port"])
    assert status_code == 200 and int(body.split()[0]) == slot0["pid"]
    assert pid_alive(survivor["pid"]) and respawned["workers"][1]["pid"] == survivor["pid"], "kept its workers"
    log = master.log()
    assert log.count(NOT_WAITING) == 1, log
    assert "Traceback" not in log, log


def test_a_reload_waits_for_a_slot_retrying_a_failed_fork_and_counts_it_reloaded(server, tmp_path):
    """A slot whose respawn failed (fds exhausted) gets its worker from the retry, forked after the reload
    began: the reload waits for it (boot_timeout at most) and reports reloaded, not incomplete."""
    master, sock, status = _start(server, tmp_path, 2)
    pid = master.proc.pid
    victim = status["workers"][0]
    _, hard = _limit(pid)
    _set_limit(pid, max(8, len(os.listdir(f"/proc/{pid}/fd")) // 2), hard)
    try:
        os.kill(victim["pid"], signal.SIGKILL)
        # six failed forks in a row: the next retry is 3.2 s away, more than slot 1's replacement takes
        wait_until(lambda: master.log().count("cannot fork a worker for slot 0") >= 6, timeout=20)
    finally:
        _set_limit(pid, 1024, hard)
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "rolling reload done" in master.log() or "rolling reload incomplete" in master.log(), 30)
    log = master.log()
    assert "rolling reload incomplete" not in log and "reload abandoned" not in log, log
    workers = master.status(sock)["workers"]
    assert all(w["pid"] not in (None, victim["pid"], status["workers"][1]["pid"]) for w in workers), workers
    for worker in workers:
        assert get(worker["port"])[0] == 200
