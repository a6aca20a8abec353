"""The core engine, exercised for real: forked workers, sockets, signals."""

import http.client
import os
import signal
import socket
import threading
import time

import pytest
from conftest import REQUEST_LOST, InThread, get, pid_alive, port_is_free, wait_until

BASIC = """
RecordingMaster("apps:app", workers={workers}, base_port=0, worker_class=apps.TestWorker,
                graceful_timeout={graceful}).start()
emit("exited")
"""


def basic(cluster, workers=2, graceful=10, env=None):
    c = cluster(BASIC.format(workers=workers, graceful=graceful), env=env)
    return c, c.ready()


def test_each_port_is_served_by_its_own_process(cluster):
    c, ready = basic(cluster, workers=3)
    ports = ready["ports"]
    assert len(set(ports)) == 3
    pids = {w["pid"] for w in ready["workers"]}
    assert len(pids) == 3 and c.proc.pid not in pids
    for info in ready["workers"]:
        status, body, _ = get(info["port"])
        assert status == 200
        assert body == f"{info['pid']} {info['port']}"


def test_master_stays_single_threaded(cluster):
    """Python 3.12+ deprecates forking a threaded process: the master never starts a thread."""
    c, ready = basic(cluster, workers=2)
    c.order("command", "ping")
    c.order("reload")
    c.wait_event("reloaded")
    assert os.listdir(f"/proc/{c.proc.pid}/task") == [str(c.proc.pid)]


def test_worker_started_sees_the_port_it_serves(cluster):
    c, ready = basic(cluster, workers=2)
    started = [e for e in c.events if e["event"] == "worker_started"]
    assert sorted(e["info"]["port"] for e in started) == sorted(ready["ports"])
    for event in started:
        assert get(event["info"]["port"])[1] == f"{event['info']['pid']} {event['info']['port']}"


def test_killed_worker_is_replaced_on_the_same_port_without_refusing(cluster):
    c, ready = basic(cluster, workers=2)
    victim = ready["workers"][0]
    port = victim["port"]
    outcomes = []  # (monotonic start, "ok" | "refused" | "lost") of every request the hammer sent
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            started = time.monotonic()
            try:
                get(port, timeout=5)
                outcome = "ok"
            except ConnectionRefusedError:
                outcome = "refused"
            except (ConnectionResetError, http_client_errors()):
                outcome = "lost"  # only the request in flight on the killed process may be
            outcomes.append((started, outcome))

    def after(moment):
        return [outcome for started, outcome in list(outcomes) if started >= moment]

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_until(lambda: after(0).count("ok") >= 3, message="the hammer's first requests answered")
        os.kill(victim["pid"], signal.SIGKILL)
        exited = c.wait_event("worker_exited")
        reaped = time.monotonic()  # from here on the old process is gone: nothing may fail
        assert exited["info"]["pid"] == victim["pid"] and exited["exitcode"] == -signal.SIGKILL
        started = c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 0 and e["info"]["generation"] == 2)
        assert started["info"]["port"] == port and started["info"]["pid"] != victim["pid"]
        assert started["info"]["restarts"] == 1 and started["info"]["generation"] == 2
        wait_until(lambda: get(port)[1].startswith(str(started["info"]["pid"])), message="new worker answers")
        wait_until(lambda: after(reaped).count("ok") >= 3, message="the hammer answered after the respawn")
    finally:
        stop.set()
        thread.join(10)
    seen = [outcome for _, outcome in outcomes]
    assert seen.count("refused") == 0, seen
    assert seen.count("lost") <= 1, f"more than the one request in flight on the killed worker was lost: {seen}"
    assert set(after(reaped)) == {"ok"}, f"a request sent after the old worker was reaped failed: {after(reaped)}"


def http_client_errors():
    import http.client

    return http.client.HTTPException


def test_commands_mixins_errors_and_addressing(cluster):
    c, ready = basic(cluster, workers=2)
    result = c.order("command", "greet", "ann")["result"]
    assert result == {"0": "noticed ann; hello ann from 0", "1": "noticed ann; hello ann from 1"}
    one = c.order("command", "greet", "bob", worker=1)["result"]
    assert one == {"1": "noticed bob; hello bob from 1"}
    unknown = c.order("command", "nosuch")["result"]["0"]
    assert unknown["type"] == "UnknownCommand" and "nosuch" in unknown["error"]
    boom = c.order("command", "boom")["result"]["1"]
    assert boom["type"] == "KeyError" and "boom" in boom["error"]
    late = c.order("command", "sleep", 3, timeout=0.3)["result"]
    assert all(r["type"] == "Timeout" for r in late.values())
    assert c.order("command", "ping")["result"] == {"0": "pong", "1": "pong"}
    bad = c.order("command", "unpicklable", worker=0)["result"]["0"]
    assert bad["type"] == "PicklingError"
    assert c.order("command", "ping", worker=7)["error"].startswith("ValueError: no worker slot 7")
    stats = c.order("command", "stats", worker=0)["result"]["0"]
    assert stats["pid"] == ready["workers"][0]["pid"] and stats["port"] == ready["ports"][0]
    assert stats["generation"] == 1 and stats["in_flight"] == 0 and stats["max_rss"] > 0


def test_command_to_a_worker_that_dies_is_an_error_not_a_hang(cluster):
    c, ready = basic(cluster, workers=2)
    result = c.order("command", "exit", worker=1, timeout=5)["result"]
    assert result["1"]["type"] == "WorkerExited"
    c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 1 and e["info"]["generation"] == 2)


def test_busy_worker_still_answers_commands(cluster):
    c, ready = basic(cluster, workers=1)
    port = ready["ports"][0]
    thread = threading.Thread(target=get, args=(port, "/slow?s=2"))
    thread.start()
    try:
        wait_until(
            lambda: c.order("command", "stats")["result"]["0"]["in_flight"] == 1,
            message="the slow request to be in flight",
        )
        started = time.monotonic()
        assert c.order("command", "ping")["result"] == {"0": "pong"}
        assert time.monotonic() - started < 1.5
    finally:
        thread.join(10)


def test_io_handler_and_signal_handler_run_in_the_loop(cluster, tmp_path):
    c = cluster("""
        import os, signal, threading
        r, w = os.pipe()
        class M(RecordingMaster):
            def when_ready(self):
                super().when_ready()
                os.write(w, b"x")
        master = M("apps:app", workers=1, base_port=0)
        def on_pipe(fd):
            emit("io", data=os.read(fd, 10).decode(), main=threading.current_thread() is threading.main_thread())
        master.add_io_handler(r, on_pipe)
        master.add_signal_handler(signal.SIGUSR1, lambda: emit("usr1", workers=len(master.workers)))
        master.start()
    """)
    c.ready()
    assert c.wait_event("io")["data"] == "x"
    c.signal(signal.SIGUSR1)
    assert c.wait_event("usr1")["workers"] == 1


def test_scale_up_and_down(cluster):
    c, ready = basic(cluster, workers=1)
    c.order("scale", 3)
    changed = c.wait_event("ports_changed")
    assert len(changed["ports"]) == 3 and changed["ports"][0] == ready["ports"][0]
    for port in changed["ports"]:
        assert get(port)[0] == 200
    c.order("scale", 1)
    shrunk = c.wait_event("ports_changed")
    assert shrunk["ports"] == ready["ports"]
    exits = [c.wait_event("worker_exited") for _ in range(2)]
    assert sorted(e["info"]["id"] for e in exits) == [1, 2]
    assert all(e["exitcode"] == 0 for e in exits)
    wait_until(lambda: all(port_is_free(p) for p in changed["ports"][1:]), message="retired ports freed")
    assert "ValueError" in c.order("scale", 0)["error"]


def test_graceful_stop_finishes_the_request_in_flight(cluster, tmp_path):
    hooks = tmp_path / "hooks.log"
    c, ready = basic(cluster, workers=1, env={"PW_TEST_HOOK_LOG": str(hooks)})
    port = ready["ports"][0]
    outcome = {}

    def slow():
        outcome["response"] = get(port, "/slow?s=1.5")

    thread = threading.Thread(target=slow)
    thread.start()
    wait_until(lambda: c.order("command", "stats")["result"]["0"]["in_flight"] == 1, message="request in flight")
    c.signal(signal.SIGTERM)
    c.wait_event("stopping")
    thread.join(10)
    status, body, headers = outcome["response"]
    assert status == 200 and headers.get("Connection") == "close"
    assert c.wait_exit() == 0
    pid = ready["workers"][0]["pid"]
    assert hooks.read_text().splitlines() == [f"start 0 {pid}", f"stop 0 {pid}"]


def test_idle_keepalive_connection_is_closed_on_stop(cluster):
    c, ready = basic(cluster, workers=1)
    port = ready["ports"][0]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, _, headers = get(port, conn=conn)
    assert status == 200 and "Connection" not in headers  # kept alive
    c.signal(signal.SIGTERM)
    assert c.wait_exit() == 0
    assert conn.sock.recv(4096) == b""  # closed by the draining worker, not left hanging
    conn.close()


def test_pid_file_written_refused_when_live_replaced_when_stale(cluster, tmp_path):
    pidfile = tmp_path / "master.pid"
    body = f"""
        RecordingMaster("apps:app", workers=1, base_port=0, pidfile={str(pidfile)!r}).start()
    """
    first = cluster(body)
    first.ready()
    assert pidfile.read_text().strip() == str(first.proc.pid)
    second = cluster(body)
    assert second.wait_exit() != 0
    assert f"names process {first.proc.pid}, which is running" in second.log()
    assert pidfile.read_text().strip() == str(first.proc.pid)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert not pidfile.exists()
    pidfile.write_text("999999\n")  # a pid that is not running
    third = cluster(body)
    third.ready()
    assert pidfile.read_text().strip() == str(third.proc.pid)


def test_output_gets_worker_stdout_and_stderr_and_stdin_is_devnull(cluster, tmp_path):
    out = tmp_path / "workers.out"
    c = cluster(f"""
        RecordingMaster("apps:app", workers=1, base_port=0, output={str(out)!r}).start()
    """)
    ready = c.ready()
    status, body, _ = get(ready["ports"][0], "/print")
    assert body == "/dev/null"
    pid = ready["workers"][0]["pid"]
    wait_until(
        lambda: f"printed by {pid}" in out.read_text() and f"stderr of {pid}" in out.read_text(),
        message="worker output in the file",
    )


@pytest.mark.parametrize(
    "source, spec, expected",
    [
        (None, "apps_that_do_not_exist:app", "apps_that_do_not_exist"),
        ("raise RuntimeError('database is down')\n", "broken_app:app", "database is down"),
        ("app = None\n", "broken_app:application", "has no attribute 'application'"),
    ],
    ids=["missing-module", "raises-at-import", "missing-attribute"],
)
def test_app_that_cannot_load_at_start_is_a_boot_error_with_its_message(cluster, tmp_path, source, spec, expected):
    if source is not None:
        (tmp_path / "broken_app.py").write_text(source)
    c = cluster(f"""
        try:
            RecordingMaster({spec!r}, workers=2, base_port=0).start()
        except Exception as exc:
            emit("failed", type=type(exc).__name__, message=str(exc))
    """)
    failed = c.wait_event("failed")
    assert failed["type"] == "BootError" and expected in failed["message"]
    assert c.wait_exit() == 0


def test_port_in_use_fails_before_forking(cluster):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        c = cluster(f"""
            import multiprocessing
            try:
                RecordingMaster("apps:app", workers=2, base_port={port}).start()
            except Exception as exc:
                emit("failed", type=type(exc).__name__, message=str(exc),
                     children=len(multiprocessing.active_children()))
        """)
        failed = c.wait_event("failed")
    finally:
        busy.close()
    assert failed["type"] == "StartError"
    assert f"127.0.0.1:{port}" in failed["message"] and "in use" in failed["message"]
    assert failed["children"] == 0


def test_master_sigkill_leaves_no_worker_alive(cluster):
    c, ready = basic(cluster, workers=2)
    pids = [w["pid"] for w in ready["workers"]]
    c.signal(signal.SIGKILL)
    c.wait_exit()
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5, message="workers gone")
    wait_until(lambda: all(port_is_free(p) for p in ready["ports"]), timeout=5, message="ports free")


def test_worker_sigterm_is_graceful_and_it_is_replaced(cluster):
    c, ready = basic(cluster, workers=1)
    os.kill(ready["workers"][0]["pid"], signal.SIGTERM)
    exited = c.wait_event("worker_exited")
    assert exited["exitcode"] == 0
    c.wait_event("worker_started", where=lambda e: e["info"]["generation"] == 2)


def test_stop_kills_a_worker_that_ignores_it_after_graceful_timeout(cluster):
    c, ready = basic(cluster, workers=1, graceful=1)
    port = ready["ports"][0]
    request = InThread(lambda: get(port, "/slow?s=20"))
    wait_until(lambda: c.order("command", "stats")["result"]["0"]["in_flight"] == 1, message="request in flight")
    c.signal(signal.SIGTERM)
    exited = c.wait_event("worker_exited")
    assert exited["exitcode"] in (-signal.SIGKILL, 4)  # killed, not left to finish its 20 s request
    # when (graceful_timeout, not before): test_states.py, on a virtual clock
    assert c.wait_exit() == 0
    with pytest.raises(REQUEST_LOST):
        request.result(10)  # the killed worker's request is lost with it


def test_preload_import_failure_is_a_boot_error_before_any_fork(cluster, tmp_path):
    (tmp_path / "broken_preload.py").write_text("raise RuntimeError('no config file')\n")
    c = cluster("""
        import multiprocessing
        try:
            RecordingMaster("broken_preload:app", workers=2, base_port=0, preload=True).start()
        except Exception as exc:
            emit("failed", type=type(exc).__name__, message=str(exc),
                 children=len(multiprocessing.active_children()))
    """)
    failed = c.wait_event("failed")
    assert failed["type"] == "BootError" and "no config file" in failed["message"]
    assert failed["children"] == 0


def test_stop_command_drains_the_worker_like_sigterm_and_it_is_replaced(cluster):
    c, ready = basic(cluster, workers=2)
    stopped = ready["workers"][0]
    assert c.order("command", "stop", worker=0)["result"] == {"0": True}
    exited = c.wait_event("worker_exited", where=lambda e: e["info"]["pid"] == stopped["pid"])
    assert exited["exitcode"] == 0  # a graceful exit, not a kill
    c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 0 and e["info"]["generation"] == 2)
    assert get(stopped["port"])[0] == 200
