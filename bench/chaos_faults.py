"""The chaos scenario's faults and what runs them: the actions, the load, the master's resources over time."""

import argparse
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from bench.chaos_frontends import Frontends, wait_for
from bench.harness import Cluster, free_port, free_port_range, pid_alive
from prefork_waitress.control import ControlError, request
from prefork_waitress.integrations.haproxy import WATCH_INTERVAL

WORKERS = 3
STALL_LIMIT = 10.0  # seconds with no request answered: a stuck cluster (a SIGSTOP lasts 2 s at most)
FD_SLACK = 4  # the master's fds may differ this much between two settled moments (a control client, a scrape)
KILL_GRACE = 0.5  # a request sent this soon after a SIGKILL may still reach the killed worker's connection
# HAProxy drops the servers added at run time when it reloads (its documented behaviour) and the master puts
# them back within WATCH_INTERVAL (README's bound); the slack covers HAProxy's start, the commands, a busy box
RELOAD_GAP = WATCH_INTERVAL + 3.0
NO_SERVER = "No server is available"
FAULTS = (
    "kill",
    "stop_cont",
    "hup_storm",
    "flap",
    "bloat",
    "nginx_reload",
    "haproxy_reload",
    "fd_dip",
    "full_log",
    "idle_conns",
)
SLOW_FAULTS = ("hup_storm", "flap")  # ask the master for several seconds of work: drawn less often




# the master's resources over time ----------------------------------------------------------------------


class Sampler:
    """Once a second: the master's open fds, RSS (KiB) and CPU seconds."""

    def __init__(self, cluster: Cluster, progress: Any = lambda: 0) -> None:
        """``progress()``: requests answered so far, to find stalls (no request answered for a while)."""
        self.cluster = cluster
        self.progress = progress
        self.samples: List[Tuple[float, int, int, float]] = []
        self.answered: List[Tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def longest_stall(self) -> float:
        """The longest time (s) in which no request was answered."""
        longest, since = 0.0, None
        for (t, count), (_, before) in zip(self.answered[1:], self.answered):
            if count == before:
                since = since if since is not None else t - 1.0
                longest = max(longest, t - since)
            else:
                since = None
        return longest

    def take(self) -> Optional[Tuple[float, int, int, float]]:
        try:
            with open(f"/proc/{self.cluster.pid}/status") as f:
                rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]
            return (time.monotonic(), self.cluster.fds(), rss, self.cluster.cpu_seconds())
        except (OSError, AttributeError):
            return None

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.answered.append((time.monotonic(), self.progress()))
            sample = self.take()
            if sample is not None:
                self.samples.append(sample)


# the run -------------------------------------------------------------------------------------------------


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.kills: List[float] = []  # monotonic times of our SIGKILLs
        self.haproxy_reloads: List[float] = []  # monotonic times of our HAProxy reloads
        self.probe_failures: List[str] = []
        self.defects: List[str] = []
        self.done: Dict[str, int] = {}
        self.skipped: Dict[str, str] = {}
        self.version = 0
        self.version_file = os.path.join(workdir, "version")
        self._bump()
        self.logs = os.path.join(workdir, "logs")
        os.makedirs(self.logs)
        self.tmpfs = self._mount_tmpfs() if args.full_log else False
        self.control = os.path.join(workdir, "control.sock")
        self.metrics_port = free_port()
        self.upstream_file = os.path.join(workdir, "upstream.conf")
        self.frontends = Frontends(workdir, self.upstream_file)
        self.cluster: Optional[Cluster] = None

    def _bump(self) -> str:
        self.version += 1
        tag = f"v{self.version}"
        scratch = self.version_file + ".new"
        with open(scratch, "w") as f:
            f.write(tag)
        os.replace(scratch, self.version_file)  # a worker importing meanwhile reads the old or the new
        return tag

    def _mount_tmpfs(self) -> bool:
        try:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=4m", "chaos-logs", self.logs], check=True, capture_output=True
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            self.skipped["full_log"] = f"cannot mount a tmpfs for the logs ({exc}); the logs stay on disk"
            return False
        return True

    def start(self) -> None:
        os.environ["CHAOS_VERSION_FILE"] = self.version_file
        base = free_port_range(WORKERS + 4)
        self.frontends.start_haproxy()
        self.cluster = Cluster(
            cwd=self.workdir,
            app="bench.chaos_app:app",
            workers=WORKERS,
            base_port=base,
            graceful_timeout=10,
            upstream_file=self.upstream_file,
            on_ports_changed=self.frontends.nginx_reload_command,
            haproxy_socket=self.frontends.haproxy_socket,
            haproxy_backend="app",
            control_socket=self.control,
            metrics_port=self.metrics_port,
            output=os.path.join(self.logs, "workers.log"),
            access_log=os.path.join(self.logs, "access.log"),
            max_requests=600,
            max_requests_jitter=300,
            max_rss=80,
            refork_after=200,
        )
        self.cluster.wait_ready()
        self.frontends.start_nginx()
        wait_for(self._haproxy_serves, 20, "HAProxy serving through its backend", self.frontends.haproxy)

    def _haproxy_serves(self) -> bool:
        try:
            return _get(self.frontends.haproxy_port)[0] == 200
        except OSError:
            return False

    # faults --------------------------------------------------------------------------------------------
    def run_fault(self, kind: str, p: Dict[str, Any]) -> None:
        cluster = self.cluster
        assert cluster is not None
        pid = cluster.current.get(p["slot"])
        if kind == "kill":
            if cluster.kill_worker(p["slot"]) is not None:
                self.kills.append(time.monotonic())
        elif kind == "stop_cont" and pid:
            try:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(p["hold"])  # the fault's duration
            except ProcessLookupError:
                pass  # gone meanwhile (killed by the fault before, recycled): nothing to stop
            finally:
                _signal(pid, signal.SIGCONT)
        elif kind == "hup_storm":
            if p["bump"]:
                self._bump()
            for _ in range(p["count"]):
                _signal(cluster.pid, signal.SIGHUP)
                time.sleep(0.1)
        elif kind == "flap":
            first, second = (signal.SIGTTOU, signal.SIGTTIN) if p["bump"] else (signal.SIGTTIN, signal.SIGTTOU)
            for _ in range(p["count"]):
                _signal(cluster.pid, first)
                time.sleep(p["gap"])
                _signal(cluster.pid, second)
                time.sleep(p["gap"])
            self._rescale()
        elif kind == "bloat" and cluster.ports:
            try:
                _get(cluster.ports[p["slot"] % len(cluster.ports)], "/bloat")
            except OSError:
                pass  # the slot is gone meanwhile (flapping)
        elif kind == "nginx_reload":
            self.frontends.reload_nginx()
        elif kind == "haproxy_reload":
            self.haproxy_reloads.append(time.monotonic())
            self.frontends.reload_haproxy()
        elif kind == "fd_dip":
            self._fd_dip(p)
        elif kind == "full_log":
            self._full_log(p)
        elif kind == "idle_conns":
            self._idle_conns(p)
        self.done[kind] = self.done.get(kind, 0) + 1

    def _rescale(self) -> None:
        """Signals of one kind coalesce: put the count back to WORKERS through the control socket."""
        try:
            request(self.control, {"action": "scale", "workers": WORKERS}, timeout=10)
        except ControlError as exc:
            self.defects.append(f"control socket: scale back to {WORKERS} failed: {exc}")

    def _fd_dip(self, p: Dict[str, Any]) -> None:
        cluster = self.cluster
        assert cluster is not None
        soft, hard = _nofile(cluster.pid)
        low = max(8, cluster.fds() // 2)
        subprocess.run(["prlimit", f"--pid={cluster.pid}", f"--nofile={low}:{hard}"], check=True)
        try:
            cluster.kill_worker(p["slot"])  # the master must fork (and poll) past the limit
            self.kills.append(time.monotonic())
            time.sleep(p["hold"])
        finally:
            subprocess.run(["prlimit", f"--pid={cluster.pid}", f"--nofile={soft}:{hard}"], check=False)

    def _full_log(self, p: Dict[str, Any]) -> None:
        if not self.tmpfs:
            return
        filler = os.path.join(self.logs, "filler")
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass  # ENOSPC: full
        try:
            time.sleep(p["hold"] * 2)  # the fault's duration
        finally:
            os.unlink(filler)
        if self.cluster is not None:
            _signal(self.cluster.pid, signal.SIGUSR1)  # log rotation's signal: reopen the output and access log

    def _idle_conns(self, p: Dict[str, Any]) -> None:
        """Connections that send nothing (or garbage) to the metrics port and the control socket; meanwhile
        a scrape and a status request must still be answered."""
        held: List[socket.socket] = []
        try:
            for i in range(p["conns"]):
                for family, address in (
                    (socket.AF_INET, ("127.0.0.1", self.metrics_port)),
                    (socket.AF_UNIX, self.control),
                ):
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.settimeout(2)
                    try:
                        sock.connect(address)
                        if i % 2:
                            sock.sendall(bytes(random.Random(i).randrange(256) for _ in range(64)))
                    except OSError:
                        pass
                    held.append(sock)
            self._probe()
        finally:
            for sock in held:
                sock.close()

    def _probe(self) -> None:
        try:
            status, _ = _get(self.metrics_port, "/metrics")
            if status != 200:
                self.probe_failures.append(f"metrics scrape: status {status}")
        except OSError as exc:
            self.probe_failures.append(f"metrics scrape: {type(exc).__name__}: {exc}")
        try:
            request(self.control, {"action": "status"}, timeout=10)
        except ControlError as exc:
            self.probe_failures.append(f"control status: {exc}")

    # the end ---------------------------------------------------------------------------------------------
    def final_check(self) -> None:
        """One more code change and reload; then every slot, and both frontends, answer the new version."""
        cluster = self.cluster
        assert cluster is not None
        self._rescale()
        try:  # a fault of the last seconds (an fd dip's fork retries) may still leave a slot empty
            wait_for(lambda: self._all_serving(), 30, "every slot serving before the final reload")
        except TimeoutError as exc:
            self.defects.append(f"final check: {exc}")
        latest = self._bump()
        try:
            reply = request(self.control, {"action": "reload"}, timeout=120)
        except ControlError as exc:
            self.defects.append(f"final reload: {exc}")
            return
        if reply.get("ok") is not True:
            self.defects.append(f"final reload failed: {reply}")
        status = request(self.control, {"action": "status"}, timeout=10)["result"]
        ports = status["master"]["ports"]
        if len(ports) != WORKERS:
            self.defects.append(f"{len(ports)} slots at the end, not {WORKERS}")
        for port in ports:
            for _ in range(3):
                got = _get(port)[1].split()[0]
                if got != latest:
                    self.defects.append(f"port {port} serves {got}, not the latest code {latest}")
                    break
        try:  # an HAProxy reload of the last seconds: the master puts its servers back within RELOAD_GAP
            wait_for(self._haproxy_serves, RELOAD_GAP + 5, "HAProxy serving again after its last reload")
        except TimeoutError as exc:
            self.defects.append(f"final check: {exc}")
        for name, port in (("nginx", self.frontends.nginx_port), ("haproxy", self.frontends.haproxy_port)):
            for _ in range(2 * WORKERS):
                status_code, body = _get(port)
                if status_code != 200 or body.split()[0] != latest:
                    self.defects.append(f"through {name}: {status_code} {body[:60]!r}, not the latest code {latest}")
                    break

    def settled(self, sampler: Sampler) -> Optional[Tuple[float, int, int, float]]:
        """A sample of the master once only its WORKERS serving workers are left (the replaced ones gone)."""
        cluster = self.cluster
        assert cluster is not None
        try:
            wait_for(lambda: len([p for p in cluster.seen_pids if pid_alive(p)]) == WORKERS, 30, "old workers gone")
        except TimeoutError:
            alive = [p for p in cluster.seen_pids if pid_alive(p)]
            self.defects.append(f"{len(alive)} workers still alive 30 s after the load stopped, not {WORKERS}: {alive}")
        return sampler.take()

    def _all_serving(self) -> bool:
        try:
            status = request(self.control, {"action": "status"}, timeout=10)["result"]
        except (ControlError, KeyError):
            return False
        workers = status["workers"]
        return status["master"]["state"] == "running" and len(workers) == WORKERS and all(w["pid"] for w in workers)

    def stop(self, report: Dict[str, Any]) -> None:
        """Stop the master; every worker it ever had must be gone soon after (else: orphans)."""
        cluster = self.cluster
        if cluster is not None:
            if cluster.proc.poll() is None:
                cluster.proc.send_signal(signal.SIGTERM)
                try:
                    cluster.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.defects.append("the master did not stop within 60 s of SIGTERM")
            else:
                self.defects.append(f"the master died during the run (exit {cluster.proc.returncode})")
            deadline = time.monotonic() + 10
            while cluster.orphans() and time.monotonic() < deadline:
                time.sleep(0.05)
            report["orphans"] = cluster.orphans()
            if report["orphans"]:
                self.defects.append(f"orphaned workers after the master stopped: {report['orphans']}")
            cluster.close()
        self.frontends.stop()
        if self.tmpfs:
            subprocess.run(["umount", "-l", self.logs], check=False)


def _get(port: int, path: str = "/") -> Tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _nofile(pid: int) -> Tuple[str, str]:
    with open(f"/proc/{pid}/limits") as f:
        row = next(line for line in f if line.startswith("Max open files")).split()
    return row[3], row[4]
