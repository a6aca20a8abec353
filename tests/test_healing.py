"""Nothing stays broken: crash-after-ready, failed forks, fd exhaustion, scale bounds, preload.

Issue 10, points 3 to 8 and 11. The fd limit is lowered with
``resource.setrlimit`` inside the master's own process (tests/support.py,
StarvingMaster), so the master's next fork, pipe or accept fails with EMFILE.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from conftest import ENV, free_ports, get, wait_until

STARVING = """
from support import StarvingMaster
StarvingMaster({app!r}, workers={workers}, base_port={base_port}, worker_class=apps.TestWorker,
               control_socket="ctl.sock", graceful_timeout=5{extra}).start()
emit("exited")
"""


def start(cluster, app="apps:app", workers=2, base_port=0, extra=""):
    c = cluster(STARVING.format(app=app, workers=workers, base_port=base_port, extra=extra))
    return c, c.ready()


def hammer(port, seconds):
    """Clients hitting ``port`` for ``seconds`` (every request is expected to fail)."""
    stop = time.monotonic() + seconds

    def run():
        while time.monotonic() < stop:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(100)
            except OSError:
                pass

    threads = [threading.Thread(target=run, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    return threads


def test_a_worker_crashing_on_every_request_is_retried_with_backoff(cluster):
    """Point 3: an app that os._exits on every request makes a handful of forks, not a storm."""
    c, ready = start(cluster, app="apps:crash", workers=1)
    seconds = 3.0
    for thread in hammer(ready["ports"][0], seconds):
        thread.join(seconds + 5)
    c.order("status")  # every exit of the window has been reported before this result
    exits = [e for e in c.events if e["event"] == "worker_exited"]
    assert 1 <= len(exits) <= 12, f"{len(exits)} worker exits in {seconds} s"
    # The crash-loop backoff line (the worker died after it was ready), the second crash waiting 0.1 s.
    assert re.search(r"\(2 in a row\); respawning in 0\.1 s \(crash-loop backoff\)", c.log(None)), c.log()


def test_a_failed_fork_on_respawn_is_retried_until_the_slot_serves_again(cluster):
    """Point 4: EMFILE on respawn is a slot failure, retried with backoff; the slot heals once fds are back."""
    c, ready = start(cluster)
    assert c.order("starve")["result"] == "starved"
    old = ready["workers"][1]["pid"]
    os.kill(old, signal.SIGKILL)
    c.wait_event("worker_exited", 5, where=lambda e: e["info"]["pid"] == old)
    assert c.order("feed")["result"] == "fed"
    info = c.wait_event("worker_started", 10, where=lambda e: e["info"]["id"] == 1 and e["info"]["generation"] > 1)[
        "info"
    ]
    assert info["pid"] != old
    assert get(ready["ports"][1])[0] == 200


def test_a_failed_fork_during_a_reload_abandons_it_and_the_next_reload_works(cluster):
    """Point 4: the reload ends with reloaded(False) and the reason; the old workers keep serving."""
    c, ready = start(cluster)
    c.order("starve")
    c.order("reload")
    assert c.wait_event("reloaded", 10)["ok"] is False
    c.order("feed")
    assert all(get(port)[0] == 200 for port in ready["ports"])
    c.order("reload")
    assert c.wait_event("reloaded", 15)["ok"] is True


def test_scale_without_fds_fails_as_a_whole_naming_the_limit(cluster):
    """Point 4: scale is all-or-nothing; its error says the fd limit was hit and what to raise."""
    c, ready = start(cluster)
    c.order("starve")
    error = c.order("scale", 4)["error"]
    c.order("feed")
    assert "ulimit -n" in error, error
    assert c.order("status")["result"]["master"]["workers"] == 2
    c.order("scale", 3)
    assert c.wait_event("ports_changed", 10)["ports"][:2] == ready["ports"]


def test_fd_exhaustion_at_start_up_is_one_line_and_leaves_nothing_running(tmp_path):
    """Point 5: the limit and `ulimit -n` named, exit code 1, no traceback, no process left."""
    limit = 40
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"  # hard too: the master raises soft
        "from prefork_waitress._run.cli import main\n"
        "sys.exit(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--workers", "60", "--base-port", "0", "--pid", "m.pid", "apps:app"],
        cwd=str(tmp_path),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "ulimit -n" in err and str(limit) in err, err
    assert len([line for line in err.splitlines() if "error" in line]) == 1, err
    assert not (tmp_path / "m.pid").exists()
    wait_until(lambda: not _session_alive(proc.pid), 5, message="every process of the session gone")


def _session_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_emfile_on_metrics_accept_backs_off_like_the_control_socket(cluster):
    """The metrics/health server shares the control socket's accept back-off: a probe it cannot accept does
    not spin the master, and is answered once fds are back."""
    metrics_port = free_ports(1)
    c, ready = start(cluster, extra=f", metrics_port={metrics_port}")
    c.order("starve")
    pending = socket.create_connection(("127.0.0.1", metrics_port), timeout=10)
    try:
        cpu, began = _cpu_seconds(c.proc.pid), time.monotonic()
        wait_until(lambda: time.monotonic() - began >= 2.0, 5, message="2 s of EMFILE")  # the measured window
        assert _cpu_seconds(c.proc.pid) - cpu < 0.5
        assert 1 <= c.log().count("accept failed") <= 4
        c.order("feed")
        pending.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert pending.recv(65536).startswith(b"HTTP/1.1 ")  # answered
    finally:
        pending.close()


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_on_control_accept_backs_off_and_logs_at_most_once_a_second(cluster, tmp_path):
    """Point 6: a pending control connection the master cannot accept does not spin it."""
    c, ready = start(cluster)
    c.order("starve")
    pending = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pending.connect(str(tmp_path / "ctl.sock"))
        pending.settimeout(10)
        cpu, began = _cpu_seconds(c.proc.pid), time.monotonic()
        wait_until(lambda: time.monotonic() - began >= 2.0, 5, message="2 s of EMFILE")  # the measured window
        assert _cpu_seconds(c.proc.pid) - cpu < 0.5
        assert c.log().count("accept failed") <= 4
        c.order("feed")
        pending.sendall(b'{"action": "status"}\n')
        assert b'"ok": true' in pending.recv(65536)
    finally:
        pending.close()


def test_scale_down_and_up_while_the_retiring_worker_drains_takes_its_socket_back(cluster):
    """Point 7: the new slot 2 reuses the retiring slot's socket: no EADDRINUSE, the slow request finishes."""
    base = free_ports(3)
    c, ready = start(cluster, workers=3, base_port=base)
    slow = {}
    client = threading.Thread(target=lambda: slow.update(reply=get(base + 2, "/slow?s=2")), daemon=True)
    client.start()
    wait_until(lambda: c.order("command", "stats", worker=2)["result"]["2"]["in_flight"] == 1, 5, message="in flight")
    c.order("scale", 2)
    assert "error" not in c.order("scale", 3), c.events[-1]
    assert c.order("status")["result"]["master"]["ports"] == [base, base + 1, base + 2]
    client.join(10)
    assert slow["reply"][0] == 200
    wait_until(lambda: get(base + 2)[0] == 200, 10, message="slot 2 serving again")


def test_a_slot_flapped_twice_while_its_old_worker_drains_keeps_its_socket(cluster):
    """The second scale-down stops the slot's new worker; the old one, still draining, keeps the slot,
    so the next scale-up takes it back again on its socket (before: the master closed it and bound a
    new one: with OS-chosen ports, a new port, and every client of the old one refused)."""
    c, ready = start(cluster, workers=3, base_port=0)
    ports, old = ready["ports"], ready["workers"][2]["pid"]
    slow = {}
    client = threading.Thread(target=lambda: slow.update(reply=get(ports[2], "/slow?s=4")), daemon=True)
    client.start()
    wait_until(lambda: c.order("command", "stats", worker=2)["result"]["2"]["in_flight"] == 1, 5, message="in flight")
    c.order("scale", 2)
    assert "error" not in c.order("scale", 3), c.events[-1]
    new = c.wait_event("worker_started", 10, where=lambda e: e["info"]["id"] == 2 and e["info"]["pid"] != old)
    c.order("scale", 2)
    c.wait_event("worker_exited", 10, where=lambda e: e["info"]["pid"] == new["info"]["pid"])
    assert "error" not in c.order("scale", 3), c.events[-1]
    assert c.order("status")["result"]["master"]["ports"] == ports
    client.join(10)
    assert slow["reply"][0] == 200 and int(slow["reply"][1].split()[0]) == old
    wait_until(lambda: get(ports[2])[0] == 200, 10, message="slot 2 serving again")


def test_scale_past_port_65535_or_the_workers_bound_is_refused_before_anything_is_bound(cluster):
    """Point 8: no wrap-around to low ports, and the same upper bound as the workers option."""
    c, ready = start(cluster, workers=1, base_port=65534)
    error = c.order("scale", 3)["error"]
    assert "65535" in error, error
    error = c.order("scale", 100000)["error"]
    assert "512" in error, error
    assert c.order("status")["result"]["master"]["ports"] == [65534]


HANGING = "import time\ntime.sleep(60)\n\ndef app(environ, start_response):\n    pass\n"


def test_a_preloaded_import_that_hangs_is_bounded_by_boot_timeout(server, tmp_path):
    """Point 11: one line naming boot_timeout, non-zero exit, the pid file removed."""
    (tmp_path / "hang.py").write_text(HANGING)
    s = server("--preload", "--boot-timeout", "1", "--pid", "m.pid", "--base-port", "0", "hang:app")
    assert s.wait(timeout=15) == 1
    errors = [line for line in s.log().splitlines() if line.startswith("prefork-waitress: error:")]
    assert len(errors) == 1 and "boot_timeout" in errors[0], s.log()
    frames = [line for line in s.log().splitlines() if line.startswith("  File ")]
    assert all("hang.py" in line for line in frames), s.log()  # where the import hung, and only the app's frames
    assert not (tmp_path / "m.pid").exists()


def test_sigterm_during_a_preloaded_import_removes_the_pid_file(server, tmp_path):
    """Point 11: the pid file is removed on every exit path, a stop during preload included."""
    (tmp_path / "hang.py").write_text(HANGING)
    s = server("--preload", "--pid", "m.pid", "--base-port", "0", "hang:app")
    wait_until(lambda: (tmp_path / "m.pid").exists(), 10, message="the pid file")
    s.signal(signal.SIGTERM)
    s.wait(timeout=10)
    assert not (tmp_path / "m.pid").exists(), s.log()


def test_ttin_past_the_last_port_is_one_log_line_and_changes_nothing(server, tmp_path):
    """Point 7/8 through signals: a refused TTIN is logged in one line, no traceback, the count unchanged."""
    sock = tmp_path / "ctl.sock"
    s = server("--workers", "1", "--base-port", "65535", "--control-socket", sock, "apps:app")
    s.status(sock)
    s.signal(signal.SIGTTIN)
    wait_until(lambda: "past 65535" in s.log(), 10, message="the refusal logged")
    assert "Traceback" not in s.log(), s.log()
    assert s.status(sock)["master"]["workers"] == 1
