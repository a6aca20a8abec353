"""Faults: killed workers, a killed master, hundreds of respawns, commands meanwhile."""

import http.client
import os
import signal
import time

from conftest import LoadLoop, get, pid_alive, wait_until

RESOURCES = """
import os

from procfs import children_of

class M(RecordingMaster):
    def resources(self):
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/maps") as f:
            maps = len(f.readlines())
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[fd] = os.readlink(f"/proc/self/fd/{fd}").split(":[")[0]  # pipe, socket, a path
            except OSError:
                pass
        return {"fds": fds, "maps": maps, "rss": rss,
                "children": children_of(os.getpid()), "workers": [w.pid for w in self.workers]}
"""

HYGIENE = (
    RESOURCES
    + """
M("apps:app", workers=2, base_port=0, worker_class=apps.TestWorker, request_timeout=30).start()
"""
)


class Respawner:
    """Makes the current worker of a slot exit (SIGKILL or the exit command) and waits for its successor."""

    def __init__(self, c, ready):
        self.c = c
        self.current = {w["id"]: w for w in ready["workers"]}

    def __call__(self, slot, how="kill"):
        before = self.current[slot]
        if how == "kill":
            os.kill(before["pid"], signal.SIGKILL)
        else:
            assert self.c.order("command", "exit", worker=slot)["result"][str(slot)]["type"] == "WorkerExited"
        self.c.wait_event("worker_exited", where=lambda e: e["info"]["pid"] == before["pid"])
        started = self.c.wait_event(
            "worker_started", where=lambda e: e["info"]["id"] == slot and e["info"]["generation"] > before["generation"]
        )
        self.current[slot] = started["info"]
        return started


def settled_resources(c):
    """The master's resources once every child it has is one of its current workers."""

    def settled():
        found = c.order("resources")["result"]
        children = {int(pid): state for pid, state in found["children"].items()}
        return found if sorted(children) == sorted(found["workers"]) and "Z" not in children.values() else None

    return wait_until(settled, timeout=10, interval=0.02, message="no child but the current workers")


def test_hundreds_of_respawns_leak_no_fd_mapping_memory_or_zombie(cluster):
    c = cluster(HYGIENE)
    respawn = Respawner(c, c.ready())
    for i in range(10):  # warm up allocators and caches
        respawn(i % 2)
    before = settled_resources(c)
    for i in range(100):
        respawn(i % 2, "kill" if i % 3 else "exit")
    after = settled_resources(c)
    assert sorted(after["fds"].items()) == sorted(before["fds"].items())
    # request_timeout meters are unmapped (a leak would add 100); the allocator may map a few
    assert after["maps"] - before["maps"] < 10, (before["maps"], after["maps"])
    assert after["rss"] - before["rss"] < 1024 * 1024, (before["rss"], after["rss"])
    assert c.order("command", "stats", worker=0)["result"]["0"]["generation"] == 56


def test_master_sigkill_takes_workers_down_within_a_second(cluster):
    c = cluster(HYGIENE)
    ready = c.ready()
    idle = []
    for port in ready["ports"]:  # an idle keep-alive connection each: the slowest case of a drain
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        get(port, conn=conn)
        idle.append(conn)
    pids = [w["pid"] for w in ready["workers"]]
    killed = time.monotonic()
    c.signal(signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5, interval=0.005, message="workers gone")
    gone_after = time.monotonic() - killed
    for conn in idle:
        assert conn.sock.recv(10) == b""
        conn.close()
    assert gone_after < 1.0, gone_after
    for port in ready["ports"]:
        try:
            get(port, timeout=2)
        except ConnectionRefusedError:
            continue
        raise AssertionError(f"port {port} still accepts connections")


def test_ten_killed_workers_are_each_replaced_at_once_and_no_connection_is_refused(cluster):
    c = cluster(HYGIENE)
    ready = c.ready()
    respawn = Respawner(c, ready)
    with LoadLoop(ready["ports"], threads=4) as load:
        load.wait_for_requests(50)
        for i in range(10):
            started = respawn(i % 2)
            assert started["info"]["port"] == ready["ports"][i % 2]
            assert started["info"]["generation"] == 2 + i // 2
        load.wait_for_requests(50)
    refused = [f for f in load.failures if "Refused" in f]
    assert refused == []
    # Only connections of a killed process can break: a request in flight, or kept alive on it.
    assert len(load.failures) <= 10 * 4, load.failures
    lost = ("ConnectionReset", "RemoteDisconnected", "BrokenPipe", "IncompleteRead")
    assert all(any(kind in f for kind in lost) for f in load.failures), load.failures
    assert "died with signal SIGKILL; respawning" in c.log()


COMMANDS = """
import os, time

class SlowStart(apps.TestWorker):
    def on_start(self):
        if os.path.exists("slow.flag"):  # boot until a command releases it (or 10 s)
            deadline = time.monotonic() + 10
            while not os.path.exists("go.flag") and time.monotonic() < deadline:
                time.sleep(0.01)
            with open("ready_at", "w") as f:
                f.write(repr(time.monotonic()))
        super().on_start()

    def child_release_and_sleep(self, seconds):
        open("go.flag", "w").close()
        time.sleep(seconds)
        return "slept"

class M(RecordingMaster):
    def worker_started(self, info):
        super().worker_started(info)
        if info.generation > 1:  # a command of a hook, right after the loop ran another one
            emit("hook_command", result=self.command("greet", "hook", worker=info.id))

M("apps:app", workers=2, base_port=0, worker_class=SlowStart).start()
"""


def test_commands_under_faults_are_answered_by_their_own_replies(cluster, tmp_path):
    c = cluster(COMMANDS)
    ready = c.ready()
    # A late reply to a timed-out command is not taken for the next command's.
    late = c.order("command", "sleep", 0.5, worker=0, timeout=0.1)["result"]["0"]
    assert late["type"] == "Timeout"
    assert c.order("command", "greet", "ann", worker=0)["result"] == {"0": "noticed ann; hello ann from 0"}

    # A slot whose worker is respawning says so; the other slot answers.
    (tmp_path / "slow.flag").write_text("slow")
    os.kill(ready["workers"][1]["pid"], signal.SIGKILL)
    c.wait_event("worker_exited")
    replies = c.order("command", "ping")["result"]
    assert replies["0"] == "pong"
    assert replies["1"]["type"] == "NotReady" and "respawning" in replies["1"]["error"]

    # The successor becomes ready while a long command is collected: its hook's command runs after it.
    slept = c.order("command", "release_and_sleep", 1.0, worker=0)
    assert slept["result"] == {"0": "slept"}
    started = c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 1 and e["info"]["generation"] > 1)
    hook = c.wait_event("hook_command")
    assert hook["result"] == {"1": "noticed hook; hello hook from 1"}
    ready_at = float((tmp_path / "ready_at").read_text())  # CLOCK_MONOTONIC, shared by the processes
    assert ready_at < slept["t"], "the successor was ready during the command"
    assert slept["t"] <= started["t"] <= hook["t"], "its ready and its hook were handled after the command"
    order = [e["event"] for e in c.events if e is slept or e is started or e is hook]
    assert order == ["result", "worker_started", "hook_command"]
