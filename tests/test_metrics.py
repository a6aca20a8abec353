"""Prometheus metrics over real HTTP from a real master, read with prometheus_client's parser."""

import http.client
import os
import signal
import socket
import threading
import time

import pytest
from clitools import ctl
from conftest import free_port, get, wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

MASTER = """
RecordingMaster("apps:app", workers=2, base_port=0, metrics_port={port}, control_socket="ctl.sock"{extra}).start()
emit("exited")
"""


def start(cluster, **extra):
    port = free_port()
    options = "".join(f", {name}={value!r}" for name, value in extra.items())
    c = cluster(MASTER.format(port=port, extra=options))
    return c, c.ready(), port


def scrape(port):
    """GET /metrics; returns {family name: family} as Prometheus's own parser reads it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, body
        assert response.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    finally:
        conn.close()
    return {family.name: family for family in text_string_to_metric_families(body)}


def value(families, name, **labels):
    """The value of the one sample called ``name`` with exactly these labels."""
    found = [s.value for f in families.values() for s in f.samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def served(port, slot, count):
    """Wait until slot has counted ``count`` requests (a worker counts just after its response is sent)."""
    wait_until(
        lambda: value(scrape(port), "prefork_waitress_requests_total", slot=str(slot)) == count,
        timeout=10,
        message=f"slot {slot} to have counted {count} requests",
    )


def restarts(port, reason):
    return value(scrape(port), "prefork_waitress_worker_restarts_total", reason=reason)


def test_requests_per_slot_and_in_total_with_their_durations(cluster):
    c, ready, port = start(cluster)
    ports = ready["ports"]
    for _ in range(3):
        get(ports[0])
    get(ports[1], "/slow?s=0.3")
    served(port, 0, 3)
    served(port, 1, 1)
    families = scrape(port)
    requests = "prefork_waitress_requests"
    assert value(families, requests + "_total", slot="0") == 3
    assert value(families, requests + "_total", slot="1") == 1
    cluster_total = "prefork_waitress_cluster_requests"
    assert value(families, cluster_total + "_total") == 4
    histogram = "prefork_waitress_request_duration_seconds"
    assert families[histogram].type == "histogram"
    assert value(families, histogram + "_count", slot="1") == 1
    assert 0.3 <= value(families, histogram + "_sum", slot="1") < 5
    for le, count in (("0.1", 0), ("0.25", 0), ("+Inf", 1)):  # 300 ms: above 0.25 s
        assert value(families, histogram + "_bucket", slot="1", le=le) == count
    assert value(families, "prefork_waitress_cluster_request_duration_seconds_count") == 4
    assert value(families, "prefork_waitress_up") == 1
    assert value(families, "prefork_waitress_workers") == 2
    build = families["prefork_waitress_build_info"].samples[0].labels
    assert set(build) == {"version", "waitress_version", "python_version"}
    for slot in ("0", "1"):
        assert value(families, "prefork_waitress_worker_resident_memory_bytes", slot=slot) > 1_000_000
        assert value(families, "prefork_waitress_accept_queue_limit", slot=slot, port=str(ports[int(slot)])) > 0
        assert value(families, "prefork_waitress_accept_queue_length", slot=slot, port=str(ports[int(slot)])) == 0
    assert value(families, "prefork_waitress_master_resident_memory_bytes") > 1_000_000


def test_a_running_request_is_in_flight(cluster):
    c, ready, port = start(cluster)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (get(ready["ports"][0], "/slow?s=2"), done.set()), daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: value(scrape(port), "prefork_waitress_requests_in_flight", slot="0") == 1,
            timeout=10,
            message="slot 0 in flight",
        )
        families = scrape(port)
        assert value(families, "prefork_waitress_requests_in_flight", slot="1") == 0
        assert value(families, "prefork_waitress_cluster_requests_in_flight") == 1
    finally:
        thread.join(15)
    assert done.is_set()
    wait_until(  # the worker clears it just after the response is sent
        lambda: value(scrape(port), "prefork_waitress_requests_in_flight", slot="0") == 0,
        timeout=10,
        message="slot 0 idle again",
    )


def test_counts_survive_a_killed_worker_and_restarts_are_counted_by_reason(cluster):
    c, ready, port = start(cluster)
    for _ in range(5):
        get(ready["ports"][0])
    served(port, 0, 5)
    os.kill(ready["workers"][0]["pid"], signal.SIGKILL)
    c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 0)
    get(ready["ports"][0])
    served(port, 0, 6)  # the dead worker's 5 are kept
    assert restarts(port, "killed") == 1 and restarts(port, "crash") == 0
    assert c.order("reload")
    assert c.wait_event("reloaded")["ok"] is True
    families = scrape(port)
    assert restarts(port, "reload") == 2
    assert value(families, "prefork_waitress_reloads_total", result="ok") == 1
    assert value(families, "prefork_waitress_reloads_total", result="failed") == 0
    assert value(families, "prefork_waitress_requests_total", slot="0") == 6


def test_recycled_and_timed_out_workers_are_counted(cluster):
    c, ready, port = start(cluster, max_requests=3, request_timeout=0.5)
    for _ in range(3):
        get(ready["ports"][1])
    wait_until(lambda: restarts(port, "recycled") == 1, timeout=15, message="a recycle counted")
    with pytest.raises((OSError, http.client.HTTPException)):
        get(ready["ports"][0], "/slow?s=5", timeout=10)
    wait_until(lambda: restarts(port, "timeout") == 1, timeout=15, message="a timeout counted")
    assert restarts(port, "crash") == 0 and restarts(port, "killed") == 0


def test_ctl_metrics_prints_the_same_families(cluster, tmp_path):
    c, ready, port = start(cluster)
    get(ready["ports"][0])
    served(port, 0, 1)
    result = ctl(tmp_path / "ctl.sock", "metrics")
    assert result.returncode == 0, result.stderr
    families = {family.name: family for family in text_string_to_metric_families(result.stdout)}
    assert set(families) == set(scrape(port))
    assert value(families, "prefork_waitress_requests_total", slot="0") == 1


def raw(port, data, timeout=10):
    """Send bytes, read until the server closes; the response bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def closed_without_reply(port):
    try:
        return raw(port, b"GET /metrics HTTP/1.0\r\n\r\n") == b""
    except ConnectionResetError:
        return True


def test_only_get_metrics_with_a_small_request_is_served(cluster):
    c, ready, port = start(cluster)
    assert raw(port, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    reply = raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405 ") and b"Allow: GET" in reply
    assert raw(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw(port, huge).startswith(b"HTTP/1.1 431 ")
    assert raw(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert get(ready["ports"][0])[0] == 200  # the workers never noticed


def test_silent_connections_are_closed_by_the_head_deadline_and_new_ones_evict_them(cluster):
    c, ready, port = start(cluster)
    silent = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(16)]
    try:
        assert scrape(port)["prefork_waitress_up"]  # the 17th evicts the oldest silent one
        assert silent[0].recv(1) == b""
        started = time.monotonic()
        for sock in silent[1:]:
            assert sock.recv(1) == b""  # closed by the head deadline (2 s)
        assert time.monotonic() - started < 8
    finally:
        for sock in silent:
            sock.close()
    assert get(ready["ports"][1])[0] == 200


def test_a_metrics_port_in_use_fails_the_start_with_a_clear_error(cluster):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        c = cluster(MASTER.format(port=port, extra=""))
        assert c.wait_exit(20) != 0
        assert f"cannot listen on 127.0.0.1:{port}: address already in use" in c.log()


def test_metrics_host_overrides_host_from_the_cli(server, tmp_path):
    port, metrics_port = free_port(), free_port()
    s = server(
        "--workers",
        "1",
        "--base-port",
        port,
        "--metrics-port",
        metrics_port,
        "--metrics-host",
        "127.0.0.2",
        "--control-socket",
        "ctl.sock",
        "apps:app",
    )
    s.status(tmp_path / "ctl.sock")
    conn = http.client.HTTPConnection("127.0.0.2", metrics_port, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    conn.close()
    assert value(families, "prefork_waitress_workers") == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", metrics_port), timeout=5).close()


@pytest.mark.parametrize(
    "options, error",
    [
        ({"metrics_port": "http"}, "option metrics_port: expected a number, got 'http'"),
        ({"metrics_port": 70000}, "option metrics_port: must be at least 1 and at most 65535, got 70000"),
        ({"metrics_host": 5}, "option metrics_host: expected a host name or address, got 5"),
        ({"access_log": 3}, "option access_log: expected a file path, got 3"),
    ],
)
def test_bad_options_say_what_is_wrong(options, error):
    from prefork_waitress import make_settings

    with pytest.raises(ValueError) as caught:
        make_settings(**options)
    assert str(caught.value).startswith(error)
