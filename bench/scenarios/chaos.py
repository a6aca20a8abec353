"""Chaos run: GET and POST load through nginx and HAProxy while a seeded random schedule of faults hits the
master and its workers; every failure that is not a killed worker's in-flight request is a defect.

    python -m bench chaos [--minutes 10 | --seconds 60] [--seed N] [--no-fd-dips] [--no-haproxy-reloads]

The frontends are built from examples/nginx.conf and examples/haproxy.cfg as README tells users
(nginx reloaded by ``on_ports_changed``, HAProxy driven through its Runtime API). Faults: SIGKILL and
SIGSTOP/SIGCONT of workers, HUP storms (some after a code change), TTOU/TTIN flapping, max_rss
recycling (``/bloat``), nginx and HAProxy reloads, fd-limit dips on the master (``prlimit``), a full
log filesystem (a small tmpfs holding the output and the access log; skipped if it cannot be mounted),
idle and garbage connections to the control socket and the metrics port. ``max_requests`` recycling
and ``refork_after`` rounds run all along. At the end the code changes once more, one reload runs, and
every slot must answer the new version. It prints the seed; the same seed replays the same schedule.
The report goes into the run's JSON (``details``); exit 1 on any defect (the JSON's ``failures``).
HAProxy's 503s "no server" in the RELOAD_GAP seconds after one of its reloads are counted apart
(``reload_gap_503``): HAProxy drops the servers added at run time when it reloads and the master puts
them back within the bound README states (``WATCH_INTERVAL``).
"""

import argparse
import http.client
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from bench import harness
from bench.harness import REPO_ROOT, Cluster, Load, free_port, free_port_range, nginx_path, pid_alive
from bench.harness import Proc as Server
from prefork_waitress.control import ControlError, request
from prefork_waitress.integrations.haproxy import WATCH_INTERVAL

NAME = "chaos"
HELP = ("a seeded schedule of faults (kills, stops, HUP storms, flaps, max_rss, frontend reloads, fd dips, a full "
        "log, idle connections) under load through nginx and HAProxy; exit 1 on any defect")
SMOKE = {"seconds": 5.0, "seed": 2207, "faults": "kill,hup_storm,nginx_reload"}

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


def schedule(seed: int, seconds: float, kinds: List[str]) -> List[Tuple[float, str, Dict[str, Any]]]:
    """The faults of a run, (offset in seconds, kind, parameters): a pure function of the seed."""
    rng = random.Random(seed)
    weights = [1 if kind in SLOW_FAULTS else 2 for kind in kinds]
    plan, at = [], rng.uniform(1.0, 2.0)
    while at < seconds:
        kind = rng.choices(kinds, weights)[0]
        params = {
            "slot": rng.randrange(WORKERS),
            "hold": round(rng.uniform(0.3, 2.0), 2),
            "count": rng.randint(3, 12),
            "gap": round(rng.uniform(0.03, 0.15), 3),
            "bump": rng.random() < 0.5,
            "conns": rng.randint(4, 24),
        }
        plan.append((round(at, 2), kind, params))
        at += rng.uniform(0.8, 3.0)
    return plan


# frontends, from the shipped examples ----------------------------------------------------------------


def _example(name: str) -> str:
    with open(os.path.join(REPO_ROOT, "examples", name)) as f:
        return "\n".join(line.split("#", 1)[0].rstrip() for line in f)


def nginx_conf(workdir: str, port: int, upstream_file: str) -> str:
    """examples/nginx.conf's upstream and server blocks, on 127.0.0.1:port, in a standalone nginx.conf."""
    example = _example("nginx.conf")
    upstream = re.search(r"^upstream .*?^\}", example, re.S | re.M).group(0)  # type: ignore[union-attr]
    server = re.search(r"^server \{.*?^\}", example, re.S | re.M).group(0)  # type: ignore[union-attr]
    upstream = re.sub(r"include\s+\S+;", f"include {upstream_file};", upstream)
    server = re.sub(r"listen\s+[^;]+;", f"listen 127.0.0.1:{port};", server)
    info = subprocess.run([nginx_path(), "-V"], capture_output=True, text=True).stderr  # type: ignore[list-item]
    temps = [f"client_body_temp_path {workdir}/tmp/body;"] + [
        f"{module}_temp_path {workdir}/tmp/{module};"
        for module in ("proxy", "fastcgi", "uwsgi", "scgi")
        if f"--without-http_{module}_module" not in info
    ]
    os.makedirs(os.path.join(workdir, "tmp"), exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    return (
        f"{user}\nworker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n  {' '.join(temps)}\n{upstream}\n{server}\n}}\n"
    )


def haproxy_conf(workdir: str, port: int) -> Tuple[str, str]:
    """examples/haproxy.cfg with its stats socket under workdir and its frontend on 127.0.0.1:port."""
    sock = os.path.join(workdir, "admin.sock")
    conf = _example("haproxy.cfg")
    conf = re.sub(r"stats socket /\S+", f"stats socket {sock}", conf)
    conf = re.sub(r"bind\s+\S*:80\b", f"bind 127.0.0.1:{port}", conf)
    return conf, sock


class Frontends:
    """nginx and HAProxy (master-worker mode, so a reload is SIGUSR2), each in its own process group."""

    def __init__(self, workdir: str, upstream_file: str) -> None:
        self.nginx_port, self.haproxy_port = free_port(), free_port()
        self.nginx_dir = os.path.join(workdir, "nginx")
        os.makedirs(self.nginx_dir)
        self.nginx_conf = os.path.join(self.nginx_dir, "nginx.conf")
        with open(self.nginx_conf, "w") as f:
            f.write(nginx_conf(self.nginx_dir, self.nginx_port, upstream_file))
        self.nginx_base = [
            nginx_path(),
            "-p",
            self.nginx_dir,
            "-c",
            self.nginx_conf,
            "-e",
            f"{self.nginx_dir}/error.log",
        ]
        haproxy_dir = os.path.join(workdir, "haproxy")
        os.makedirs(haproxy_dir)
        conf, self.haproxy_socket = haproxy_conf(haproxy_dir, self.haproxy_port)
        self.haproxy_conf = os.path.join(haproxy_dir, "haproxy.cfg")
        with open(self.haproxy_conf, "w") as f:
            f.write(conf)
        self.nginx: Optional[Server] = None
        self.haproxy: Optional[Server] = None

    @property
    def nginx_reload_command(self) -> str:
        return " ".join(shlex.quote(arg) for arg in self.nginx_base + ["-s", "reload"])

    def start_haproxy(self) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.haproxy = Server("haproxy", [haproxy, "-W", "-db", "-f", self.haproxy_conf], [self.haproxy_port])
        _wait(lambda: os.path.exists(self.haproxy_socket), 15, "haproxy's stats socket", self.haproxy)

    def start_nginx(self) -> None:
        self.nginx = Server("nginx", self.nginx_base + ["-g", "daemon off;"], [self.nginx_port])
        self.nginx.wait_ready()

    def reload_nginx(self) -> None:
        subprocess.run(self.nginx_base + ["-s", "reload"], capture_output=True, timeout=10)

    def reload_haproxy(self) -> None:
        if self.haproxy is not None:
            os.kill(self.haproxy.pid, signal.SIGUSR2)  # the master process re-executes with the same config

    def stop(self) -> None:
        for server in (self.nginx, self.haproxy):
            if server is not None:
                server.stop()


def _wait(condition: Any, timeout: float, what: str, server: Optional[Server] = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if server is not None and not server.alive():
            raise RuntimeError(f"{server.name} exited: {server.output()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(0.05)


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
        _wait(self._haproxy_serves, 20, "HAProxy serving through its backend", self.frontends.haproxy)

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
            _wait(lambda: self._all_serving(), 30, "every slot serving before the final reload")
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
            _wait(self._haproxy_serves, RELOAD_GAP + 5, "HAProxy serving again after its last reload")
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
            _wait(lambda: len([p for p in cluster.seen_pids if pid_alive(p)]) == WORKERS, 30, "old workers gone")
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


def reload_gaps(load: Load, reloads: List[float]) -> Tuple[int, Load]:
    """(HAProxy's 503s "no server" in the RELOAD_GAP after one of its reloads, ``load`` without them).

    A reloaded HAProxy has none of the servers added at run time until the master puts them back, within
    the bound README states; a 503 later than that, or of another kind, stays a failure.
    """
    kept, gaps = [], 0
    for started, ended, what in load.failure_log:
        if NO_SERVER in what and "status 503" in what and any(r <= started <= r + RELOAD_GAP for r in reloads):
            gaps += 1
        else:
            kept.append((started, ended, what))
    load.failure_log = kept
    return gaps, load


def _span(times: List[Tuple[float, float]], began: float) -> List[float]:
    """[first start, last end] of ``times``, in seconds after ``began`` ([] if none)."""
    if not times:
        return []
    return [round(min(t for t, _ in times) - began, 1), round(max(t for _, t in times) - began, 1)]


def classify(
    load: Load, kills: List[float], times: Optional[List[Tuple[float, float]]] = None
) -> Tuple[int, List[str]]:
    """(failures that were in flight on a worker we SIGKILLed, the others: defects).

    One is excused when it overlapped a kill and failed as a lost upstream does (a reset or closed
    connection, 502 or 504; never a 503: that is a frontend with no server), and each kill excuses
    at most as many as the load has threads (each could have had one request on the killed worker).
    """
    in_flight, other = 0, []
    excused = [0] * len(kills)
    per_kill = load.threads
    for started, ended, what in load.failure_log:
        lost = not re.search(r"status (?!50[24])\d+", what)
        hit = next(
            (
                i
                for i, killed in enumerate(kills)
                if started <= killed + KILL_GRACE and ended >= killed and excused[i] < per_kill
            ),
            None,
        )
        if lost and hit is not None:
            excused[hit] += 1
            in_flight += 1
        else:
            other.append(what)
            if times is not None:
                times.append((started, ended))
    return in_flight, other


def master_log_defects(path: str) -> List[str]:
    """What the master's log shows went wrong. A reload reported incomplete is one: a slot waiting to retry
    a failed fork (an fd dip) is waited for, ``boot_timeout`` at most, far longer than a dip lasts."""
    with open(path, errors="replace") as f:
        text = f.read()
    found = []
    incomplete = len(re.findall(r"rolling reload incomplete: slots \[", text))
    if incomplete:
        found.append(f"{incomplete} reloads reported incomplete")
    for pattern, what in (
        (r"Traceback \(most recent call last\)", "tracebacks in the master's log"),
        (r"did not stop within .*; killing it", "workers SIGKILLed for not stopping"),
    ):
        count = len(re.findall(pattern, text))
        if count:
            found.append(f"{count} {what}")
    return found


def summarize(samples: List[Tuple[float, int, int, float]]) -> List[str]:
    if not samples:
        return ["no samples of the master"]
    t0 = samples[0][0]
    step = max(1, len(samples) // 10)
    rows = [
        f"  {t - t0:6.0f} s  fds {fds:4d}  rss {rss / 1024:7.1f} MiB  cpu {cpu:7.2f} s"
        for t, fds, rss, cpu in samples[::step]
    ]
    return ["the master over time:"] + rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="instead of --minutes")
    parser.add_argument("--seed", type=int, default=None, help="replays a schedule (default: a random seed)")
    parser.add_argument("--threads", type=int, default=2, help="client threads per frontend")
    parser.add_argument("--no-fd-dips", dest="fd_dips", action="store_false", help="leave the master's fd limit alone")
    parser.add_argument("--no-haproxy-reloads", dest="haproxy_reloads", action="store_false")
    parser.add_argument("--no-full-log", dest="full_log", action="store_false", help="no tmpfs for the logs")
    parser.add_argument(
        "--strict-probes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a metrics scrape or control request refused while idle connections are open is a defect",
    )
    parser.add_argument("--faults", help="only these kinds, comma-separated: which drives a trend")


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The run's report goes to ``args.details``, its defects to ``args.failures``; rows: per frontend, faults."""
    seconds = args.seconds if args.seconds is not None else 60.0 * (args.minutes if args.minutes is not None else 10.0)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    kinds = [k for k in FAULTS if (k != "fd_dip" or args.fd_dips) and (k != "haproxy_reload" or args.haproxy_reloads)]
    if not args.full_log:
        kinds.remove("full_log")
    if args.faults:
        wanted = args.faults.split(",")
        unknown = sorted(set(wanted) - set(FAULTS))
        if unknown:
            raise SystemExit(f"--faults: unknown kinds {unknown}; known: {', '.join(FAULTS)}")
        kinds = [k for k in kinds if k in wanted]
    plan = schedule(seed, seconds, kinds)
    harness.progress(f"chaos: seed {seed}, {seconds:g} s, {len(plan)} faults of {', '.join(kinds)}")
    workdir = tempfile.mkdtemp(prefix="prefork-chaos-")
    chaos = Chaos(args, workdir)
    report: Dict[str, Any] = {"seed": seed, "seconds": seconds}
    loads: List[Load] = []
    sampler: Optional[Sampler] = None
    try:
        chaos.start()
        assert chaos.cluster is not None
        front = chaos.frontends
        sampler = Sampler(chaos.cluster, lambda: sum(load.snapshot() for load in loads))
        first = chaos.settled(sampler)
        for port in (front.nginx_port, front.haproxy_port):
            loads.append(Load([port], threads=args.threads, post_every=2, retry_stale=True).start())
        sampler.start()
        began = report["_began"] = time.monotonic()
        for at, kind, params in plan:
            time.sleep(max(0.0, began + at - time.monotonic()))  # the schedule's clock
            if chaos.cluster.proc.poll() is not None:
                break
            target = chaos.cluster.current.get(params["slot"])
            harness.progress(f"  {time.monotonic() - began:6.1f} s  {kind} (slot {params['slot']}, pid {target})")
            chaos.run_fault(kind, params)
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        report["longest_stall_s"] = stall = sampler.longest_stall()
        if stall > STALL_LIMIT:
            chaos.defects.append(f"no request was answered for {stall:.0f} s (more than {STALL_LIMIT:g} s)")
        if chaos.cluster.proc.poll() is None:
            chaos.final_check()
        for load in loads:
            load.stop()
        sampler.stop()
        last = chaos.settled(sampler)
        if first and last:
            report["master_fds"] = [first[1], last[1]]
            report["master_rss_mib"] = [round(first[2] / 1024, 1), round(last[2] / 1024, 1)]
            report["master_cpu_s"] = round(last[3] - first[3], 2)
            if last[1] > first[1] + FD_SLACK:
                chaos.defects.append(f"the master's fds grew from {first[1]} to {last[1]}")
    except Exception as exc:  # the run itself broke: a defect, with its seed
        chaos.defects.append(f"the run failed: {type(exc).__name__}: {exc}")
    finally:
        for load in loads:
            load.stop()
        if sampler is not None:
            sampler.stop()
        chaos.stop(report)
    in_flight = 0
    for name, load in zip(("nginx", "haproxy"), loads):
        gaps, load = reload_gaps(load, chaos.haproxy_reloads if name == "haproxy" else [])
        began = report.get("_began", 0.0)
        kept: List[Tuple[float, float]] = []
        killed, other = classify(load, chaos.kills, kept)
        in_flight += killed
        report[name] = {
            "ok": load.ok,
            "posts": load.posts,
            "killed_in_flight": killed,
            "reload_gap_503": gaps,
            "other_failures": len(other),
            # when they happened, seconds after the schedule began (first start, last end): find the fault
            "other_failures_between_s": _span(kept, began),
            "refused": load.refused,
            "stale_keepalive_retries": load.stale_retries,
        }
        if other:
            chaos.defects.append(f"{len(other)} failed requests through {name} not explained by a kill: {other[:5]}")
    report.pop("_began", None)
    report["faults"] = chaos.done
    report["skipped"] = chaos.skipped
    report["probe_failures"] = chaos.probe_failures
    if chaos.probe_failures and args.strict_probes:
        chaos.defects.append(
            f"{len(chaos.probe_failures)} probes failed while idle connections were open: {chaos.probe_failures[:3]}"
        )
    if chaos.cluster is not None:
        chaos.defects += [f"master log: {d}" for d in master_log_defects(chaos.cluster.log_path)]
        report["master_log"] = chaos.cluster.log_path
    report["defects"] = chaos.defects
    over_time = summarize(sampler.samples if sampler else [])
    for line in over_time:
        harness.progress(line)
    shutil.rmtree(workdir, ignore_errors=True)
    args.details.update(report)
    args.details["master_over_time"] = over_time[1:]
    if chaos.defects:
        args.failures += chaos.defects + [f"{len(chaos.defects)} defects; replay with --seed {seed}"]
    else:
        args.notes.append(f"no defect (seed {seed}; {in_flight} requests failed in flight on killed workers)")
    title = f"seed {seed}, {seconds:g} s: requests per frontend"
    rows: List[Dict[str, Any]] = [
        {"table": title, "frontend": name,
         **{k: v for k, v in report[name].items() if k != "other_failures_between_s"}}
        for name in ("nginx", "haproxy") if name in report
    ]
    rows += [{"table": "faults run", "fault": kind, "times": count} for kind, count in chaos.done.items()]
    rows += [{"table": "faults skipped", "fault": kind, "why": why} for kind, why in chaos.skipped.items()]
    master = {k: report[k] for k in ("longest_stall_s", "master_fds", "master_rss_mib", "master_cpu_s") if k in report}
    if master:
        rows.append({"table": "the master (first and last settled moment)",
                     **{k: (str(v) if isinstance(v, list) else v) for k, v in master.items()},
                     "defects": len(chaos.defects)})
    return rows
