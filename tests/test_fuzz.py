"""Fuzzing the master's own parsers of outside input with Hypothesis (issue 22.6).

Whatever a control client sends, whatever the environment or an ini file or
HAProxy says, the answer is an error reply, a close or a clear error: the
master keeps serving and no traceback reaches its log. The examples per
property are bounded (``max_examples`` below, no deadline: a loaded box is
slow, not wrong) so the whole module takes seconds. (The metrics port's
request head is fuzzed with the metrics server itself.)
"""

import json
import socket
import subprocess
import sys

import pytest
from conftest import ENV, Server, free_ports, get
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork_waitress.control import request
from prefork_waitress.integrations.haproxy_runtime import parse_address, reply_error, server_sessions, servers_state
from prefork_waitress.integrations.systemd import notify
from prefork_waitress.options import OPTIONS, PROGRAM_OPTIONS, convert_option

# One master for the module's control-socket properties: it has to keep serving through all of them.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(FUZZ, max_examples=100)


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    port = free_ports(1)
    sock = tmp_path / "ctl.sock"
    server = Server(tmp_path, ["--workers", "1", "--base-port", str(port), "--control-socket", str(sock), "apps:app"])
    try:
        server.status(sock)
        server.sock, server.port = str(sock), port
        yield server
        assert server.proc.poll() is None, f"the master exited:\n{server.log()}"
        assert "Traceback" not in server.log(), server.log()
    finally:
        server.close()


def _exchange(path, payload):
    """Send ``payload``; read reply lines until one per request line came back or the master closed."""
    expected = sum(1 for line in payload.split(b"\n")[:-1] if line.strip())
    replies = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(path)
        conn.sendall(payload)
        data = b""
        while len(replies) < expected:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            *lines, data = data.split(b"\n")
            replies += [json.loads(line) for line in lines]
    for reply in replies:
        assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
        assert reply["ok"] or isinstance(reply.get("error"), str) and reply["error"], reply
    return replies


def _still_serving(master):
    reply = request(master.sock, {"action": "status"}, timeout=10)
    assert reply["ok"] and reply["result"]["master"]["state"] == "running", reply
    assert get(master.port)[0] == 200


@FUZZ
@given(payload=st.lists(st.binary(max_size=200), max_size=4).map(lambda lines: b"\n".join(lines) + b"\n"))
def test_any_bytes_on_the_control_socket_get_error_replies_or_a_close(master, payload):
    _exchange(master.sock, payload)
    _still_serving(master)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Actions that change the cluster are drawn only with arguments that must be refused, so
# the master under test stays one running worker: a scale to 2..512 is left out, as are
# "stop", "reload" and a worker command named "stop".
SAFE_COUNT = JSON.filter(lambda v: not (isinstance(v, (int, float)) and not isinstance(v, bool) and 1 < v <= 512))
COMMAND_NAME = st.one_of(st.sampled_from(["ping", "stats", "nosuch", ""]), JSON).filter(lambda n: n != "stop")
REQUEST = st.one_of(
    JSON,
    st.fixed_dictionaries({"action": st.text(max_size=12).filter(lambda a: a not in ("stop", "reload", "upgrade"))}),
    st.fixed_dictionaries({"action": st.just("status")}, optional={"extra": JSON}),
    st.fixed_dictionaries({"action": st.just("scale")}, optional={"workers": SAFE_COUNT}),
    st.fixed_dictionaries(
        {"action": st.just("command"), "name": COMMAND_NAME},
        optional={"args": JSON, "worker": JSON, "timeout": JSON},
    ),
)


@FUZZ
@given(messages=st.lists(REQUEST, min_size=1, max_size=3))
def test_any_json_request_gets_a_reply_and_the_master_keeps_serving(master, messages):
    payload = b"".join(json.dumps(message).encode() + b"\n" for message in messages)
    replies = _exchange(master.sock, payload)
    assert replies, f"no reply to {messages!r}"
    _still_serving(master)


# The activation variables are read in a fresh interpreter whose fd 3 (the first one systemd
# would pass) is /dev/null: no fd of the test process is wrapped as a passed socket.
ACTIVATION = """\
import os, sys
os.dup2(os.open(os.devnull, os.O_RDONLY), 3)
from hypothesis import given, settings, strategies as st
from prefork_waitress._os.activation import VARIABLES, activated_sockets
from prefork_waitress.errors import StartError

PID = str(os.getpid())
VALUE = st.one_of(st.text(max_size=30), st.integers(-5, 10**9).map(str), st.just(PID), st.just("1"))
NAMES = st.one_of(st.none(), st.text(max_size=30), st.lists(st.text("ab:0123", max_size=4)).map(":".join))

@settings(max_examples=int(sys.argv[1]), deadline=None, database=None)
@given(pid=VALUE, fds=VALUE, names=NAMES)
def check(pid, fds, names):
    env = {"LISTEN_PID": pid, "LISTEN_FDS": fds, "OTHER": "kept"}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    try:
        assert activated_sockets(env) == []
    except StartError as exc:
        assert str(exc) and "\\n" not in str(exc), repr(exc)
    assert env == {"OTHER": "kept"}, env

check()
print("checked")
"""


@pytest.mark.serial  # 300 CPU-bound examples in a subprocess with a 50 s timeout (~2 s alone)
def test_any_activation_environment_is_ignored_or_a_one_line_start_error(tmp_path):
    examples = 300
    done = subprocess.run(
        [sys.executable, "-c", ACTIVATION, str(examples)],
        env=ENV,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0 and done.stdout.strip() == "checked", done.stderr[-3000:]


# Options that import (worker_class), or take a directory that must exist, are left out:
# the rest are what a command line, an ini file or the environment hands over as text.
TEXT_OPTIONS = [o.name for o in OPTIONS if o.name not in ("worker_class",)]


@settings(FUZZ, max_examples=400)
@given(name=st.sampled_from(TEXT_OPTIONS), value=st.text(max_size=40))
def test_any_option_text_is_converted_or_refused_with_a_message_naming_it(name, value):
    try:
        convert_option(name, value)
    except ValueError as exc:
        assert str(exc).startswith(f"option {name}: "), exc


@FEW
@given(option=st.sampled_from(PROGRAM_OPTIONS), value=st.text(max_size=40))
def test_any_program_option_text_is_converted_or_refused(option, value):
    if option.name == "chdir":
        value = "/nonexistent/" + value
    try:
        option.convert(value)
    except ValueError as exc:
        assert str(exc), option.name


HAPROXY_LINE = st.one_of(
    st.text(max_size=60),
    st.lists(st.text("abcsvnameqcurpxFRONTENDBACK0123456789-_ ", max_size=8), max_size=6).map(",".join),
    st.lists(st.text("abcsrv_nameid 0123456789", max_size=8), max_size=6).map(" ".join),
)
HAPROXY_REPLY = st.lists(HAPROXY_LINE, max_size=5).map("\n".join)


@settings(FUZZ, max_examples=300)
@given(
    reply=st.one_of(
        HAPROXY_REPLY,
        HAPROXY_REPLY.map(lambda r: "# pxname,svname,qcur,qmax,scur\n" + r),
        HAPROXY_REPLY.map(lambda r: "1\n# be_id be_name srv_id srv_name srv_addr\n" + r),
    )
)
def test_any_haproxy_reply_is_parsed_without_raising(reply):
    assert reply_error(reply) is None or isinstance(reply_error(reply), str)
    assert isinstance(servers_state(reply), dict)
    assert all(isinstance(n, int) for n in server_sessions(reply).values())


@FEW
@given(address=st.text(max_size=60))
def test_any_haproxy_address_and_notify_socket_is_taken_or_refused_without_raising(address):
    family, target = parse_address(address)
    assert family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
    assert notify("STATUS=fuzz", address="/nonexistent/" + address) is False
    assert notify("STATUS=fuzz", address="@pw-fuzz-nobody-listens-" + address) is False
