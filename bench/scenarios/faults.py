"""Faults that could wedge the master or leave a slot broken: one figure per point, per checkout.

    python -m bench faults --prefork-path /work/wt/base,. [--command-seconds 10]

Each ``--prefork-path`` is a checkout of prefork_waitress; the figures are
printed side by side (first column: the reference, usually the old main):

- respawn: seconds from SIGKILLing worker 1 until it serves again, while a
  command to a SIGSTOPped worker 0 waits (command timeout ``--command-seconds``);
- ctl status: seconds one ``status`` request takes during that command;
- crash app: forks/s, master CPU (% of a core) and master log bytes/s while
  clients hit an app that ``os._exit``\\s on every request;
- fds: seconds until every slot serves again once the master's fds, used up
  (a lower limit, filled) while its workers were killed, are given back.

Bounded (each phase has a deadline), 127.0.0.1 only; kills everything it starts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Any, Dict, Optional

from bench import harness

NAME = "faults"
HELP = "faults that could wedge the master or leave a slot broken, one figure per point, side by side per checkout"
SMOKE = {"command_seconds": 1.0, "crash_seconds": 1.0, "heal_deadline": 10.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefork-path", type=harness.csv(str), default=[harness.REPO_ROOT], metavar="DIR,...",
                        help="checkouts of prefork_waitress, side by side (the first: the reference; "
                        "default: this one)")
    parser.add_argument("--command-seconds", type=float, default=10.0, help="timeout of the waiting command")
    parser.add_argument("--crash-seconds", type=float, default=5.0, help="load on the crashing app")
    parser.add_argument("--heal-deadline", type=float, default=15.0, help="give up waiting for the slots")

MASTER = r"""
import json, logging, os, resource, signal, sys, time
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
from prefork_waitress import Master, Worker

def hello(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

def crash(environ, start_response):
    os._exit(3)

class Sleepy(Worker):
    def child_sleep(self, seconds):
        time.sleep(seconds)
        return "slept"

""" + harness.REPORTING + r"""
class Starving(Reporting):
    # SIGUSR2 uses up the master's fds (a lower limit, filled with /dev/null); SIGUSR2 again gives them back.

    placeholders = None

    def start(self):
        self.add_signal_handler(signal.SIGUSR2, self.toggle)
        super().start()

    def toggle(self):
        if self.placeholders is None:
            self.saved = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, self.saved[1]))
            self.placeholders = []
            while True:
                try:
                    self.placeholders.append(os.open(os.devnull, os.O_RDONLY))
                except OSError:
                    break
            say("starved")
        else:
            for fd in self.placeholders:
                os.close(fd)
            self.placeholders = None
            resource.setrlimit(resource.RLIMIT_NOFILE, self.saved)
            say("fed")

options = json.loads(sys.argv[2])
app = crash if options.pop("app") == "crash" else hello
Starving(app, worker_class=Sleepy, **options).start()
"""

NEVER = float("inf")


class Master(harness.Cluster):
    """One master subprocess of the checkout at ``path`` (harness.Cluster running MASTER), with a control socket."""

    def __init__(self, path: str, work: str, app: str = "hello", workers: int = 2) -> None:
        self.socket_path = os.path.join(work, f"ctl-{time.monotonic_ns()}.sock")
        super().__init__(cwd=work, master_script=MASTER, checkout=path, app=app, workers=workers, base_port=0,
                         control_socket=self.socket_path)

    def wait_for(self, condition: Any, timeout: float) -> Any:
        """``condition()``'s value once truthy, or None after ``timeout`` seconds."""
        try:
            return self.wait(condition, timeout)
        except TimeoutError:
            return None

    def ready(self) -> None:
        if not self.wait_for(lambda: self.ports, 30):
            raise RuntimeError(f"the master did not start; see {self.log_path}")

    def request(self, message: Dict[str, Any], timeout: float = 120.0) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket_path)
            sock.sendall(json.dumps(message).encode() + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data or b"null")

    def close(self, timeout: float = 15.0) -> None:
        """SIGCONT everything (a worker may be stopped), then harness.Cluster's close."""
        try:
            os.killpg(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        super().close(timeout)


def serves(port: int, timeout: float = 0.5) -> bool:
    try:
        return harness.http_get(port, timeout=timeout)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def respawn_and_status(path: str, work: str, command_seconds: float) -> Dict[str, float]:
    """Worker 0 SIGSTOPped, a command to it waiting: respawn latency of worker 1, status latency."""
    figures: Dict[str, float] = {}
    for figure in ("respawn", "status"):
        master = Master(path, work)
        try:
            master.ready()
            os.kill(master.current[0], signal.SIGSTOP)
            command = {"action": "command", "name": "ping", "worker": 0, "timeout": command_seconds}
            waiter = threading.Thread(target=master.request, args=(command,), daemon=True)
            waiter.start()
            time.sleep(1.0)  # the command is in flight
            began = time.monotonic()
            if figure == "status":
                master.request({"action": "status"})
                figures["status"] = time.monotonic() - began
            else:
                old = master.current[1]
                os.kill(old, signal.SIGKILL)
                back = master.wait_for(lambda m=master, o=old: m.current.get(1) not in (None, o), command_seconds + 10)
                figures["respawn"] = time.monotonic() - began if back else NEVER
            waiter.join(command_seconds + 30)
        finally:
            master.close()
    return figures


def crash_app(path: str, work: str, seconds: float) -> Dict[str, float]:
    """Forks/s, master CPU share and log bytes/s while every request kills its worker."""
    master = Master(path, work, app="crash")
    try:
        master.ready()
        stop = threading.Event()

        def hammer(port: int) -> None:
            while not stop.is_set():
                serves(port, timeout=0.2)

        clients = [threading.Thread(target=hammer, args=(p,), daemon=True) for p in master.ports * 2]
        exits, cpu, log = len(master.events), master.cpu_seconds(), master.log_bytes()
        began = time.monotonic()
        for client in clients:
            client.start()
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        forks = sum(1 for e in master.events[exits:] if e["event"] == "exited")
        figures = {
            "forks_per_s": forks / elapsed,
            "master_cpu_pct": 100 * (master.cpu_seconds() - cpu) / elapsed,
            "log_bytes_per_s": (master.log_bytes() - log) / elapsed,
        }
        stop.set()
        for client in clients:
            client.join(5)
        return figures
    finally:
        master.close()


def fd_exhaustion(path: str, work: str, starved: float, deadline: float) -> Dict[str, float]:
    """Kill both workers while the master cannot open an fd; seconds until both serve after the fix."""
    master = Master(path, work)
    try:
        master.ready()
        os.kill(master.pid, signal.SIGUSR2)
        if not master.wait_for(lambda: any(e["event"] == "starved" for e in master.events), 10):
            raise RuntimeError("the master did not use up its fds")
        for pid in list(master.current.values()):
            os.kill(pid, signal.SIGKILL)
        time.sleep(starved)
        os.kill(master.pid, signal.SIGUSR2)
        if not master.wait_for(lambda: any(e["event"] == "fed" for e in master.events), 10):
            raise RuntimeError(f"the master did not get its fds back; see {master.log_path}")
        began = time.monotonic()
        while time.monotonic() - began < deadline:
            if all(serves(port) for port in master.ports):
                return {"fds_heal_s": time.monotonic() - began}
            time.sleep(0.05)
        return {"fds_heal_s": NEVER}
    finally:
        master.close()


def measure(path: str, args: argparse.Namespace) -> Dict[str, float]:
    work = tempfile.mkdtemp(prefix="prefork-faults-")
    try:
        figures = respawn_and_status(path, work, args.command_seconds)
        figures.update(crash_app(path, work, args.crash_seconds))
        figures.update(fd_exhaustion(path, work, starved=1.0, deadline=args.heal_deadline))
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


ROWS = (
    ("respawn", "respawn while a command waits (s)"),
    ("status", "ctl status during the command (s)"),
    ("forks_per_s", "crash-on-every-request: forks/s"),
    ("master_cpu_pct", "crash-on-every-request: master CPU %"),
    ("log_bytes_per_s", "crash-on-every-request: log bytes/s"),
    ("fds_heal_s", "every slot serving after fds freed (s)"),
)


def show(value: Optional[float], deadline: float) -> str:
    if value is None:
        return "-"
    return f"never (>{deadline:g})" if value == NEVER else f"{value:.2f}"


def run(args: argparse.Namespace) -> list:
    """One row per figure, one column per checkout."""
    results = {path: measure(path, args) for path in args.prefork_path}
    rows = []
    for key, label in ROWS:
        deadline = args.heal_deadline if key == "fds_heal_s" else args.command_seconds + 10
        row = {"table": "one figure per point, per checkout (the first: the reference)", "figure": label}
        for path in args.prefork_path:
            row[os.path.basename(os.path.abspath(path))] = show(results[path].get(key), deadline)
        rows.append(row)
    return rows
