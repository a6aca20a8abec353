"""The access log: Apache combined format + duration + slot, one O_APPEND write per line, reopened on rotation."""

import os
import re
import signal
import socket

import pytest
from conftest import free_port, get, wait_until

pytestmark = pytest.mark.timeout(60)

# %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i", then %D (microseconds) and the slot id.
COMBINED = re.compile(
    r"^(?P<host>\S+) (?P<ident>-) (?P<user>\S+) "
    r"\[(?P<day>\d{2})/(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/(?P<year>\d{4})"
    r":(?P<time>\d{2}:\d{2}:\d{2}) (?P<zone>[+-]\d{4})\] "
    r'"(?:(?P<method>[A-Z]+) (?P<target>(?:[^"\\]|\\.)*) (?P<protocol>HTTP/\d\.\d)|-)" '
    r"(?P<status>\d{3}) (?P<size>\d+|-) "
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)" '
    r"(?P<micros>\d+) (?P<slot>\d+)$"
)

MASTER = """
RecordingMaster("apps:app", workers=2, base_port=0, access_log={path!r}).start()
emit("exited")
"""


def lines(path, count, timeout=10):
    """The log's lines, once it has at least ``count``."""

    def enough():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            found = f.read().splitlines()
        return found if len(found) >= count else None

    return wait_until(enough, timeout, message=f"{count} lines in {path}")


def parsed(line):
    match = COMBINED.match(line)
    assert match, f"not a combined log line: {line!r}"
    return match.groupdict()


def test_lines_are_combined_format_with_duration_and_slot(cluster, tmp_path):
    path = tmp_path / "access.log"
    c = cluster(MASTER.format(path=str(path)))
    ports = c.ready()["ports"]
    get(ports[0], "/a?b=1&c=%22", headers={"Referer": "http://example.com/x", "User-Agent": 'agent "007" \\ 1'})
    get(ports[1], "/slow?s=0.2")
    assert get(ports[1], "/raise")[0] == 500
    first, slow, failed = (parsed(line) for line in lines(path, 3))
    assert first["host"] == "127.0.0.1" and first["user"] == "-"
    assert first["method"] == "GET" and first["target"] == "/a?b=1&c=%22" and first["protocol"] == "HTTP/1.1"
    assert first["status"] == "200" and int(first["size"]) == len(get(ports[0])[1])
    assert first["referer"] == "http://example.com/x"
    assert first["agent"] == 'agent \\"007\\" \\\\ 1'  # quotes and backslashes escaped as Apache does
    assert first["slot"] == "0" and slow["slot"] == "1"
    assert 200_000 <= int(slow["micros"]) < 10_000_000
    assert failed["status"] == "500" and failed["target"] == "/raise"
    assert slow["referer"] == "-" and slow["agent"] != ""


def test_control_characters_are_escaped_and_refused_requests_logged(cluster, tmp_path):
    path = tmp_path / "access.log"
    c = cluster(MASTER.format(path=str(path)))
    ports = c.ready()["ports"]
    get(ports[0], "/", headers={"User-Agent": b"x\tred \xc3\xa9"})
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as sock:
        sock.sendall(b"GET /bad HTTP/1.1\r\nHost: x\r\nX\x01: y\r\n\r\n")
        assert sock.recv(100).split(b"\r\n")[0].endswith(b" 400 Bad Request")
    agent, refused = (parsed(line) for line in lines(path, 2))
    assert agent["agent"] == "x\\x09red \\xc3\\xa9"
    # waitress refuses it before it reads the request line: logged as "-", as Apache does
    assert refused["method"] is None and refused["status"] == "400" and refused["slot"] == "0"


def test_reopen_after_rotation_writes_to_the_new_file(cluster, tmp_path):
    path = tmp_path / "access.log"
    c = cluster(MASTER.format(path=str(path)))
    ports = c.ready()["ports"]
    get(ports[0], "/before")
    lines(path, 1)
    os.rename(path, tmp_path / "access.log.1")
    get(ports[1], "/still-old")
    assert c.order("command", "reopen")["result"] == {"0": True, "1": True}
    get(ports[0], "/after-0")
    get(ports[1], "/after-1")
    new = [parsed(line)["target"] for line in lines(path, 2)]
    assert sorted(new) == ["/after-0", "/after-1"]
    assert [parsed(line)["target"] for line in lines(tmp_path / "access.log.1", 2)] == ["/before", "/still-old"]


def test_cli_sigusr1_reopens_the_access_log(server, tmp_path):
    port = free_port()
    path = tmp_path / "access.log"
    s = server("--workers", "1", "--base-port", port, "--access-log", path, "--control-socket", "ctl.sock", "apps:app")
    s.status(tmp_path / "ctl.sock")
    get(port, "/one")
    lines(path, 1)
    os.rename(path, tmp_path / "access.log.1")
    s.signal(signal.SIGUSR1)
    wait_until(path.exists, timeout=10, message="the worker to create access.log again")
    get(port, "/two")
    assert [parsed(line)["target"] for line in lines(path, 1)] == ["/two"]


def test_access_log_dash_writes_to_the_output(server, tmp_path):
    port = free_port()
    output = tmp_path / "out.log"
    s = server(
        "--workers",
        "1",
        "--base-port",
        port,
        "--access-log",
        "-",
        "--output",
        output,
        "--control-socket",
        "ctl.sock",
        "apps:app",
    )
    s.status(tmp_path / "ctl.sock")
    get(port, "/dash")

    def logged():
        return [line for line in output.read_text().splitlines() if COMBINED.match(line)]

    (line,) = wait_until(logged, timeout=10, message="an access log line in the output")
    assert parsed(line)["target"] == "/dash"


def test_off_by_default(cluster, tmp_path):
    c = cluster('RecordingMaster("apps:app", workers=1, base_port=0, output="out.log").start()\n')
    ports = c.ready()["ports"]
    get(ports[0], "/x")
    assert not any(COMBINED.match(line) for line in (tmp_path / "out.log").read_text().splitlines())
