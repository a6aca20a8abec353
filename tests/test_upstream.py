"""The upstream file for the frontend: rendering, rewriting, the command, and a real nginx in front."""

import os
import re
import threading
import time

import pytest
from conftest import HERE, get, missing, wait_until
from frontends import NGINX, Nginx

from prefork_waitress.upstream import render

MASTER = """
RecordingMaster("apps:app", workers=2, base_port=0, upstream_file="upstream.conf",
                upstream_format={format!r}, on_ports_changed={command!r}).start()
emit("exited")
"""


def test_render_nginx_and_haproxy():
    assert render([8080, 8081]) == "server 127.0.0.1:8080 max_fails=0;\nserver 127.0.0.1:8081 max_fails=0;\n"
    assert render([9000], "0.0.0.0") == "server 127.0.0.1:9000 max_fails=0;\n"
    assert render([9000], "::") == "server [::1]:9000 max_fails=0;\n"
    assert render([8080, 8081], "10.0.0.5", "haproxy") == (
        "server w0 10.0.0.5:8080 check maxconn 1\nserver w1 10.0.0.5:8081 check maxconn 1\n"
    )
    assert render([9000], format="haproxy", maxconn=0) == "server w0 127.0.0.1:9000 check\n"
    with pytest.raises(ValueError, match="unknown upstream format"):
        render([8080], format="apache")


def test_the_block_formats_balance_to_the_least_busy_worker():
    """nginx-block / haproxy-block: the whole upstream/backend, so the balancing comes from us."""
    nginx = render([8080, 8081], format="nginx-block", name="myapp")
    directives = [line.strip() for line in nginx.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert directives == [
        "upstream myapp {",
        "least_conn;",
        "zone myapp 64k;",
        "server 127.0.0.1:8080 max_fails=0;",
        "server 127.0.0.1:8081 max_fails=0;",
        "keepalive 16;",
        "}",
    ]
    assert "keepalive 40;" in render(range(9000, 9040), format="nginx-block")  # at least one per worker
    haproxy = render([8080], "10.0.0.5", format="haproxy-block", name="app", maxconn=2)
    directives = [line.strip() for line in haproxy.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert directives == [
        "backend app",
        "mode http",
        "balance leastconn",
        "timeout queue 30s",
        "server w0 10.0.0.5:8080 check maxconn 2",
    ]


def test_upstream_format_and_name_are_checked():
    from prefork_waitress.options import make_settings

    with pytest.raises(ValueError, match="option upstream_format: expected one of nginx, nginx-block, haproxy, hap"):
        make_settings(upstream_format="apache")
    with pytest.raises(ValueError, match="option upstream_name: expected a name of letters, digits"):
        make_settings(upstream_name="my app")
    assert make_settings().upstream_name == "prefork_app"


def test_file_written_on_start_and_on_every_change_then_the_command_runs(cluster, tmp_path):
    command = "cat upstream.conf >> runs.log && echo --- >> runs.log"
    c = cluster(MASTER.format(format="haproxy", command=command))
    ports = c.ready()["ports"]
    upstream = tmp_path / "upstream.conf"
    assert upstream.read_text() == render(ports, format="haproxy")
    runs = tmp_path / "runs.log"
    wait_until(lambda: runs.exists() and runs.read_text().count("---") == 1, message="the first run")
    grown = c.order("scale", 3) and c.wait_event("ports_changed")["ports"]
    assert upstream.read_text() == render(grown, format="haproxy")
    wait_until(lambda: runs.read_text().count("---") == 2, message="the second run")
    assert runs.read_text().split("---\n")[1] == render(grown, format="haproxy")
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".upstream-")]


def test_failing_or_slow_command_is_logged_and_never_blocks_the_master(cluster, tmp_path):
    command = "sleep 0.3; echo ran >> runs.log; exit 3"
    c = cluster(MASTER.format(format="nginx", command=command))
    ports = c.ready()["ports"]
    c.order("scale", 3)
    c.order("scale", 4)  # while the first run is still going: one more run, after it
    assert get(ports[0])[0] == 200  # the master is not waiting for the command
    final = render(c.wait_event("ports_changed", where=lambda e: len(e["ports"]) == 4)["ports"])
    wait_until(lambda: "failed with exit code 3" in c.log(), message="the failure logged")
    wait_until(lambda: (tmp_path / "runs.log").read_text().count("ran") >= 2, message="a second run")
    assert (tmp_path / "upstream.conf").read_text() == final
    assert get(ports[1])[0] == 200


def test_command_failing_before_any_success_says_the_frontend_may_not_be_up(cluster, tmp_path):
    c = cluster(MASTER.format(format="nginx", command="exit 1"))
    c.ready()
    wait_until(lambda: "is the frontend running yet?" in c.log(), message="the start-up advice")
    assert "on_ports_changed command 'exit 1' failed with exit code 1;" in c.log()


# --- a real nginx in front -------------------------------------------------------------


@pytest.fixture
def nginx(tmp_path, request):
    if NGINX is None:
        missing("no nginx binary (CI installs nginx-light)")
    server = Nginx(tmp_path / "nginx", tmp_path / "upstream.conf", getattr(request, "param", False))
    yield server
    server.stop()


def _pid_via(port):
    status, body, _ = get(port, timeout=5)
    assert status == 200, body
    return int(body.split()[0])


def test_nginx_reaches_every_worker_then_the_new_one_and_loses_nothing_in_a_reload(cluster, nginx):
    c = cluster(MASTER.format(format="nginx", command=nginx.reload_command()))
    ready = c.ready()  # the file exists now (nginx is not up yet, so this first reload fails harmlessly)
    nginx.start()
    pids = {w["pid"] for w in ready["workers"]}
    seen = set()
    wait_until(lambda: seen.add(_pid_via(nginx.port)) or seen == pids, message="nginx reaching every worker")

    c.order("scale", 3)
    new_pid = c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 2)["info"]["pid"]
    wait_until(lambda: _pid_via(nginx.port) == new_pid, message="nginx reaching the new worker")

    failures, served, stop = [], [], threading.Event()

    def load():
        while not stop.is_set() and len(served) < 5000:
            try:
                served.append(_pid_via(nginx.port))
            except Exception as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_until(lambda: len(served) >= 20, message="load through nginx before the reload")
        c.order("reload")
        reloaded = c.wait_event("reloaded")
        during = len(served)
        wait_until(lambda: len(served) >= during + 20, message="load through nginx after the reload")
    finally:
        stop.set()
        thread.join(10)
    assert reloaded["ok"] and failures == []
    upstream_errors = [line for line in (nginx.prefix / "error.log").read_text().splitlines() if "upstream" in line]
    assert upstream_errors == []  # not even a connection nginx had to retry on another worker
    new_pids = {w["pid"] for w in reloaded["workers"]}
    wait_until(lambda: _pid_via(nginx.port) in new_pids, message="nginx on the reloaded workers")


def _example_location():
    """The proxy directives of examples/nginx.conf's ``location /``, aimed at the test's upstream."""
    example = open(os.path.join(os.path.dirname(HERE), "examples", "nginx.conf")).read()
    body = re.search(r"location / \{(.*?)\n    \}", example, re.S).group(1)
    return body.replace("http://prefork_app", "http://app")


def test_example_nginx_config_does_not_retry_a_request_killed_by_request_timeout(cluster, nginx):
    """One slow GET costs one worker: nginx must not resend it to the others when its worker is killed."""
    conf, replaced = re.subn(
        r"location / \{[^}]*\}", lambda m: "location / {" + _example_location() + "}", nginx.conf.read_text()
    )
    assert replaced == 1
    nginx.conf.write_text(conf)
    c = cluster("""
    RecordingMaster("apps:app", workers=3, base_port=0, upstream_file="upstream.conf", request_timeout=1,
                    graceful_timeout=5).start()
    """)
    c.ready()
    nginx.start()
    started = time.monotonic()
    status, _, _ = get(nginx.port, "/slow?s=8", timeout=30)
    assert status == 502
    assert time.monotonic() - started < 7  # not 3 x request_timeout + kills, not the app's 8 s
    attempts = (nginx.prefix / "error.log").read_text().count("upstream prematurely closed connection")
    assert attempts == 1, (nginx.prefix / "error.log").read_text()  # nginx tried one worker, not each in turn


@pytest.mark.parametrize("nginx", [False, True], ids=["close", "upstream-keepalive"], indirect=True)
def test_scale_down_behind_nginx_drops_nothing_not_even_a_post(cluster, nginx):
    from frontload import FrontendLoad

    c = cluster(MASTER.replace("workers=2", "workers=5").format(format="nginx", command=nginx.reload_command()))
    ready = c.ready()
    nginx.start()
    pids = {w["pid"] for w in ready["workers"]}
    seen = set()
    wait_until(lambda: seen.add(_pid_via(nginx.port)) or seen == pids, message="nginx reaching every worker")
    retired = {w["pid"] for w in ready["workers"] if w["id"] >= 2}
    with FrontendLoad(nginx.port, max_seconds=40) as load:
        load.wait_for_requests(100)
        c.order("scale", 2)
        for _ in retired:
            exited = c.wait_event("worker_exited", timeout=30, where=lambda e: e["info"]["pid"] in retired)
            assert exited["exitcode"] == 0
        load.wait_for_requests(100)
    assert load.failures == [] and load.posts > 50
    assert (tmp := (nginx.prefix / "error.log").read_text()).count("upstream") == 0, tmp
    assert {_pid_via(nginx.port) for _ in range(6)} <= pids - retired


def test_a_retiring_slot_serves_until_the_command_has_exited_and_can_be_taken_back(cluster, tmp_path):
    c = cluster(MASTER.replace("workers=2", "workers=3").format(format="nginx", command="sleep 1; touch ran"))
    ready = c.ready()
    wait_until(lambda: (tmp_path / "ran").exists(), message="the first run")
    os.unlink(tmp_path / "ran")
    third = ready["workers"][2]
    c.order("scale", 2)
    assert get(third["port"])[0] == 200  # still serving: the frontend may not know yet
    exited = c.wait_event("worker_exited", where=lambda e: e["info"]["id"] == 2)
    assert (tmp_path / "ran").exists() and exited["exitcode"] == 0

    wait_until(lambda: c.order("status")["result"]["master"]["workers"] == 2, message="two slots")
    os.unlink(tmp_path / "ran")
    c.order("scale", 3)
    again = c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 2 and e["info"]["pid"] != third["pid"])
    again = again["info"]
    c.order("scale", 2)
    c.order("scale", 3)  # before the command let slot 2 go: it serves on, same worker
    assert [w["pid"] for w in c.order("status")["result"]["workers"]][2] == again["pid"]
    assert get(again["port"])[0] == 200
    assert get(again["port"])[0] == 200  # (test_retiring: a slot taken back is never retired)
