"""refork_after as a list: refork in generations, each from a warmer template (the real CLI and ctl)."""

import os
import re
import signal
import sys

import pytest
from clitools import ctl, run_cli
from conftest import LoadLoop, get, wait_until
from procfs import children_of

from prefork_waitress.options import make_settings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reforking is Linux only")

ROUND = re.compile(r"refork from pid (\d+) done: (\d+) slot\(s\) reforked \(refork generation (\d+)\)")


def status(sock):
    """Slot id -> that slot's worker, from ``ctl status --json``."""
    import json

    reply = ctl(sock, "status", "--json")
    assert reply.returncode == 0, reply.stderr
    return {w["id"]: w for w in json.loads(reply.stdout)["workers"]}


def rounds(s):
    """[(template pid, slots reforked, generation made)] of every finished refork round, from the master's log."""
    return [tuple(map(int, match)) for match in ROUND.findall(s.log())]


def test_two_generations_under_load_the_second_from_a_worker_of_the_first_with_no_failed_request(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    s = server(
        "--workers", 3, "--base-port", 0, "--control-socket", sock, "--worker-class", "apps:TestWorker",
        "--refork-after", "20,60", "--graceful-timeout", 10, "apps:app",
    )  # fmt: skip
    first = {w["id"]: w for w in s.status(sock)["workers"]}
    ports = [first[slot]["port"] for slot in range(3)]
    template1 = first[0]["pid"]
    for _ in range(20):  # slot 0 alone reaches the first count: it makes generation 1
        assert get(ports[0])[0] == 200
    wait_until(lambda: "refork generation 1: forking the workers of slots 1, 2" in s.log(), 10, message="round 1")
    with LoadLoop(ports[1:], threads=4) as load:  # the workers of slots 1 and 2 (generation 1, soon) get the load
        wait_until(lambda: len(rounds(s)) == 2, 40, message=f"two refork rounds; log:\n{s.log()}")
        load.wait_for_requests(100)  # the second generation serves under the same load
    assert load.failures == []
    (pid1, count1, made1), (pid2, count2, made2) = rounds(s)
    assert (pid1, count1, made1) == (template1, 2, 1)
    now = wait_until(lambda: (w := status(sock)) and all(x["pid"] for x in w.values()) and w, 5, message="status")
    template2 = next(w for w in now.values() if w["pid"] == pid2)
    assert template2["id"] in (1, 2) and template2["refork_generation"] == 1, "a worker of the first generation"
    assert template2["reforked_from"] == template1 and (count2, made2) == (2, 2)
    others = [w for w in now.values() if w["id"] != template2["id"]]
    assert {(w["refork_generation"], w["reforked_from"]) for w in others} == {(2, pid2)}
    for w in now.values():
        assert int(get(ports[w["id"]])[1].split()[0]) == w["pid"], "each slot is served by its new worker"
    alive = {w["pid"] for w in now.values()}
    wait_until(
        lambda: set(children_of(s.proc.pid)) == alive,
        15,
        message=f"the replaced workers drained and reaped: {alive} {children_of(s.proc.pid)} {first} {s.log()}",
    )
    table = ctl(sock, "status").stdout.splitlines()
    assert table[1].split()[-1] == "refork" and sorted(line.split()[-1] for line in table[2:]) == ["1", "2", "2"]
    assert "refork generation 3" not in s.log(), "two counts, two generations"


def test_a_template_that_dies_while_its_reforked_workers_live_is_reaped_and_respawned(server, tmp_path):
    """Its reforked workers hold a copy of its multiprocessing sentinel pipe: the master must not wait on that."""
    sock = tmp_path / "ctl.sock"
    s = server(
        "--workers", 2, "--base-port", 0, "--control-socket", sock, "--worker-class", "apps:TestWorker",
        "--refork-after", "10", "apps:app",
    )  # fmt: skip
    first = {w["id"]: w for w in s.status(sock)["workers"]}
    template = first[0]["pid"]
    for _ in range(10):
        assert get(first[0]["port"])[0] == 200
    wait_until(lambda: len(rounds(s)) == 1, 15, message="the refork round")
    reforked = status(sock)[1]
    assert reforked["reforked_from"] == template and reforked["refork_generation"] == 1
    os.kill(template, signal.SIGKILL)
    wait_until(lambda: template not in children_of(s.proc.pid), 10, message="the template reaped")
    respawned = wait_until(lambda: (w := status(sock)[0])["pid"] not in (None, template) and w, 10, message="respawn")
    assert respawned["refork_generation"] == 0 and int(get(first[0]["port"])[1].split()[0]) == respawned["pid"]
    assert status(sock)[1]["pid"] == reforked["pid"], "the reforked worker serves on"


def test_a_single_count_reforks_once_as_before(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    s = server(
        "--workers", 2, "--base-port", 0, "--control-socket", sock, "--worker-class", "apps:TestWorker",
        "--refork-after", "10", "apps:app",
    )  # fmt: skip
    ports = [w["port"] for w in s.status(sock)["workers"]]
    for _ in range(10):
        assert get(ports[0])[0] == 200
    wait_until(lambda: len(rounds(s)) == 1, 15, message="the refork round")
    for _ in range(30):  # the reforked worker passes the count too: it reports it, and nothing follows
        assert get(ports[1])[0] == 200
    # Its report went up its Pipe before this command's reply; the next status runs after its handler.
    assert ctl(sock, "command", "greet", "x", "--worker", "1").returncode == 0
    assert status(sock)[1]["refork_generation"] == 1
    assert len(rounds(s)) == 1 and "refork generation 2" not in s.log()


@pytest.mark.parametrize(
    "given, expected",
    [
        (0, ()),
        ("0", ()),
        ([], ()),
        (1000, (1000,)),
        ("1000", (1000,)),
        ("50,1000,10000", (50, 1000, 10000)),
        (" 50, 1000 ", (50, 1000)),
        ([50, 1000, 10000], (50, 1000, 10000)),
        ((20, "60"), (20, 60)),
    ],
)
def test_refork_after_takes_a_number_or_an_increasing_list(given, expected):
    assert make_settings(refork_after=given).refork_after == expected


@pytest.mark.parametrize(
    "given, message",
    [
        ("1000,50", "each generation's threshold must be larger than the one before, got 1000 then 50"),
        ([50, 50], "each generation's threshold must be larger than the one before, got 50 then 50"),
        ("50,0,1000", r"every threshold of a list must be above 0 \(0 alone turns reforking off\)"),
        ([0, 50], r"every threshold of a list must be above 0"),
        (-5, "a number of requests cannot be negative, got -5"),
        ("50,-3", "a number of requests cannot be negative, got '-3'"),
        ("often", "expected a number of requests or a list of them .*got 'often'"),
        ("50;1000", "expected a number of requests or a list of them .*got '50;1000'"),
        ([50, 2.5], "expected a number of requests or a list of them"),
        (True, "expected a number of requests or a list of them"),
    ],
)
def test_refork_after_says_what_is_wrong_with_a_bad_value(given, message):
    with pytest.raises(ValueError, match="option refork_after: " + message):
        make_settings(refork_after=given)


def test_the_command_line_and_the_environment_take_the_list(tmp_path):
    shown = run_cli("--refork-after", "50,1000,10000", "--print-config", "apps:app")
    assert shown.returncode == 0 and re.search(r"refork_after = \(50, 1000, 10000\)\s+# cli", shown.stdout)
    env = run_cli("--print-config", "apps:app", env={"PREFORK_WAITRESS_REFORK_AFTER": "20,60"})
    assert env.returncode == 0
    assert re.search(r"refork_after = \(20, 60\)\s+# env PREFORK_WAITRESS_REFORK_AFTER", env.stdout)
    bad = run_cli("--refork-after", "1000,50", "apps:app")
    assert bad.returncode == 2
    assert "refork_after: each generation's threshold must be larger than the one before" in bad.stderr
