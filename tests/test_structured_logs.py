"""JSON logs: the master's and workers' records (--log-format json) and the access log (access_log_format).

Every line is parsed with json.loads; a client's hostile path, headers and
request id must not add a field or a line, in the JSON or the combined format.
"""

import json
import os
import re
import signal
import socket
import time

import pytest
from clitools import ctl
from conftest import get, wait_until
from test_access_log import lines, parsed

pytestmark = pytest.mark.timeout(60)

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def json_lines(text):
    """Every line of ``text`` as a JSON object (fails on any line that is not one)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{text}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def find(records, **fields):
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def test_cli_log_format_json_master_and_worker_records(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    master = server("--log-format", "json", "--workers", "2", "--base-port", "0", "--control-socket", sock, "apps:app")
    workers = master.status(sock)["workers"]
    killed = workers[0]["pid"]
    os.kill(killed, signal.SIGKILL)
    wait_until(
        lambda: find(json_lines(master.log()), event="worker_ready", slot=0, generation=2), 15, message="respawn"
    )
    assert ctl(sock, "scale", "3").returncode == 0
    assert ctl(sock, "reload").returncode == 0
    assert ctl(sock, "scale", "2").returncode == 0
    wait_until(lambda: find(json_lines(master.log()), event="worker_exit", reason="retired"), 20, message="retired")
    assert get(workers[1]["port"], "/log")[0] == 200
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    records = json_lines(master.log())
    master_pid = master.proc.pid
    for record in records:
        assert ISO_UTC.match(record["time"]) and record["level"] in ("INFO", "WARNING", "ERROR"), record
        assert abs(time.time() - _epoch(record["time"])) < 120
        assert isinstance(record["pid"], int) and record["logger"] and isinstance(record["message"], str)
    (exit_record,) = find(records, event="worker_exit", worker_pid=killed)
    assert exit_record["level"] == "WARNING" and exit_record["pid"] == master_pid and exit_record["slot"] == 0
    assert exit_record["exitcode"] == -9 and exit_record["signal"] == "SIGKILL" and exit_record["reason"] == "killed"
    assert exit_record["generation"] == 1 and exit_record["port"] == workers[0]["port"]
    assert "died with signal SIGKILL" in exit_record["message"]
    (respawned,) = find(records, event="worker_ready", slot=0, generation=2)
    assert respawned["port"] == workers[0]["port"] and respawned["worker_pid"] != killed
    scaled, shrunk = find(records, event="scale")
    assert scaled["workers"] == 3 and scaled["before"] == 2 and "slot" not in scaled
    assert shrunk["workers"] == 2 and shrunk["before"] == 3
    (retire,) = find(records, event="retire")
    (retired,) = find(records, event="worker_exit", reason="retired")
    assert retire["slot"] == retired["slot"] == 2 and retired["exitcode"] == 0
    assert [r["result"] for r in find(records, event="reload")] == ["started", "ok"]
    assert find(records, event="reload", result="ok")[0]["workers"] == 3
    replaced = find(records, event="worker_exit", reason="replaced")
    assert {r["slot"] for r in replaced} == {0, 1, 2} and all(r["exitcode"] == 0 for r in replaced)
    assert find(records, event="stop", graceful=True)
    assert {r["slot"] for r in find(records, event="worker_exit", reason="stopped")} == {0, 1}
    # the app's own records in a worker: its pid and slot, its extra field, the traceback as one string
    logged, failed = find(records, logger="apps")
    assert logged["slot"] == 1 and logged["pid"] != master_pid and logged["order"] == 7
    assert logged["message"] == f'a "logged"\nline from {logged["pid"]}' and logged["level"] == "WARNING"
    assert failed["level"] == "ERROR" and failed["slot"] == 1 and failed["message"] == "it failed"
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert failed["exception"].rstrip().endswith("ZeroDivisionError: division by zero")


def _epoch(iso):
    import calendar

    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) + float(iso[19:-1])


def test_a_bad_log_format_is_refused_with_what_is_accepted(tmp_path):
    from clitools import run_cli

    result = run_cli("--log-format", "xml", "apps:app", cwd=tmp_path)
    assert result.returncode == 2
    assert "option log_format: expected 'text' or 'json', got 'xml'" in result.stderr
    result = run_cli("--access-log-format", "clf", "--access-log", "-", "apps:app", cwd=tmp_path)
    assert result.returncode == 2
    assert "option access_log_format: expected 'combined' or 'json', got 'clf'" in result.stderr


# -- the access log ------------------------------------------------------------------------

MASTER = """
RecordingMaster("apps:app", workers=1, base_port=0, access_log={path!r}, access_log_format={format!r}).start()
emit("exited")
"""

HOSTILE_TARGET = b'/q"uo\\te\x01\x1b[31m?x="y"&z=\\%0A'
HOSTILE_REFERER = b'http://e/"}, "status": 999, "x": "'
HOSTILE_AGENT = b'caf\xc3\xa9 \xff\t"\\'
HOSTILE_ID = b'id-"quoted"\\back{"forged": 1}'
LONG_PATH, LONG_QUERY, LONG_ID = "/" + "a" * 5000, "b" * 3000, "r" * 2000


def _send(port, head):
    """One raw request on its own connection; the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return response
            response += chunk


def _hostile_requests(port):
    """Three requests: hostile bytes, very long fields, and a header injection waitress refuses (400)."""
    first = _send(
        port,
        b"GET "
        + HOSTILE_TARGET
        + b" HTTP/1.1\r\nHost: x\r\nReferer: "
        + HOSTILE_REFERER
        + b"\r\nUser-Agent: "
        + HOSTILE_AGENT
        + b"\r\nX-Request-ID: "
        + HOSTILE_ID
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert first.startswith(b"HTTP/1.1 200 "), first
    long = _send(
        port,
        f"GET {LONG_PATH}?{LONG_QUERY} HTTP/1.0\r\nX-Request-ID: {LONG_ID}\r\n\r\n".encode(),
    )
    assert long.startswith(b"HTTP/1.0 200 ") or long.startswith(b"HTTP/1.1 200 "), long[:100]
    refused = _send(port, b'GET /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\n{"injected": true}\r\n\r\n')
    assert refused.split(b"\r\n")[0].endswith(b" 400 Bad Request"), refused
    return first.split(b"\r\n\r\n", 1)[1]


def test_access_log_json_fields_match_the_requests_even_hostile_ones(cluster, tmp_path):
    path = tmp_path / "access.log"
    c = cluster(MASTER.format(path=str(path), format="json"))
    (port,) = c.ready()["ports"]
    status, body, _ = get(port, "/plain?a=1", headers={"Referer": "http://r/", "User-Agent": "ua/1"})
    worker_pid = int(body.split()[0])
    began = time.time()
    _hostile_requests(port)
    records = json_lines("\n".join(lines(path, 4)))
    assert len(records) == 4  # one line per request: nothing forged a line
    plain, hostile, long, refused = records
    fields = ["time", "remote_addr", "method", "path", "query", "protocol", "status", "bytes", "duration"]
    fields += ["slot", "pid", "referer", "user_agent", "request_id", "remote_user"]
    assert all(list(record) == fields for record in records)  # nothing forged a field
    assert plain == dict(
        plain,
        remote_addr="127.0.0.1",
        method="GET",
        path="/plain",
        query="a=1",
        protocol="HTTP/1.1",
        status=200,
        bytes=len(body),
        slot=0,
        pid=worker_pid,
        referer="http://r/",
        user_agent="ua/1",
        request_id=None,
        remote_user=None,
    )
    assert ISO_UTC.match(plain["time"]) and abs(_epoch(plain["time"]) - began) < 60
    assert 0 <= plain["duration"] < 5
    assert hostile["path"] == '/q"uo\\te\x01\x1b[31m' and hostile["query"] == 'x="y"&z=\\%0A'
    assert hostile["referer"] == HOSTILE_REFERER.decode()
    assert hostile["user_agent"] == 'café \\xff\t"\\'  # decoded as UTF-8; bytes that are not as \xhh
    assert hostile["request_id"] == HOSTILE_ID.decode() and hostile["status"] == 200 and hostile["pid"] == worker_pid
    assert long["path"] == LONG_PATH and long["query"] == LONG_QUERY and long["request_id"] == LONG_ID
    assert long["protocol"] == "HTTP/1.0"
    # refused by waitress before it read the request: no method or path, status 400, nothing forged
    assert refused["status"] == 400 and refused["method"] is None and refused["path"] is None
    assert refused["request_id"] is None and refused["duration"] == 0
    assert "injected" not in path.read_text()


def test_access_log_combined_escapes_hostile_paths_and_headers(cluster, tmp_path):
    path = tmp_path / "access.log"
    c = cluster(MASTER.format(path=str(path), format="combined"))
    (port,) = c.ready()["ports"]
    _hostile_requests(port)
    found = lines(path, 3)
    assert len(found) == 3  # one line per request: nothing forged a line
    hostile, long, refused = (parsed(line) for line in found)  # each matches the whole combined format
    assert hostile["target"] == '/q\\"uo\\\\te\\x01\\x1b[31m?x=\\"y\\"&z=\\\\%0A'
    assert hostile["referer"] == 'http://e/\\"}, \\"status\\": 999, \\"x\\": \\"'
    assert hostile["agent"] == 'caf\\xc3\\xa9 \\xff\\x09\\"\\\\'
    assert hostile["status"] == "200" and hostile["slot"] == "0"
    assert long["target"] == f"{LONG_PATH}?{LONG_QUERY}" and long["protocol"] == "HTTP/1.0"
    assert refused["method"] is None and refused["status"] == "400"
    assert "\x1b" not in path.read_text() and "injected" not in path.read_text()


PROXIED = """
RecordingMaster("apps:app", workers=1, base_port=0, access_log={path!r}, access_log_format={format!r},
                trusted_proxy="127.0.0.1", trusted_proxy_headers="x-forwarded-for").start()
emit("exited")
"""


@pytest.mark.parametrize("format", ["combined", "json"])
def test_a_remote_address_from_a_trusted_proxy_header_cannot_forge_a_field(cluster, tmp_path, format):
    """Behind a trusted proxy, waitress takes REMOTE_ADDR from X-Forwarded-For as sent, spaces and quotes too."""
    path = tmp_path / "access.log"
    c = cluster(PROXIED.format(path=str(path), format=format))
    (port,) = c.ready()["ports"]
    forged = '1.2.3.4 "evil'
    response = _send(
        port, f"GET /p HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {forged}\r\nConnection: close\r\n\r\n".encode()
    )
    assert response.startswith(b"HTTP/1.1 200 "), response
    (line,) = lines(path, 1)
    if format == "json":
        (record,) = json_lines(line)
        assert record["remote_addr"] == forged and record["path"] == "/p"
    else:
        fields = parsed(line)
        assert fields["host"] == '1.2.3.4\\x20\\"evil' and fields["target"] == "/p"


API_MASTER = """
import logging, sys
from prefork_waitress import JsonFormatter, Master

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(JsonFormatter())
logging.basicConfig(level=logging.INFO, handlers=[handler])


class OnceMaster(Master):
    def when_ready(self):
        self.stop()


OnceMaster("apps:app", workers=1, base_port=0).start()
"""


def test_an_api_master_gets_json_records_from_the_public_formatter(tmp_path):
    import subprocess
    import sys

    from conftest import ENV

    script = tmp_path / "api_master.py"
    script.write_text(API_MASTER)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stderr)
    assert [r.get("event") for r in records] == ["worker_ready", "running", "stop", "worker_exit"], records
    assert records[-1]["reason"] == "stopped" and records[-1]["exitcode"] == 0 and records[-1]["slot"] == 0
