"""Deploying under load: prefork_waitress ``ctl upgrade`` vs gunicorn's USR2 binary upgrade vs uWSGI's chain reload.

    python -m bench deploy [--rounds 3] [--duration 10] [--at 2] [--conns 32] [--workers 4]

Each contender serves ``--app`` (default bench.apps:hello) with N workers; one wrk
run of ``--duration`` seconds (harness.run_wrk: prefork's N ports, one port for the
others) and, ``--at`` seconds into it, the deploy. Failed requests = wrk's
connect/read/write/timeout errors + non-2xx. Two times, from the trigger:
"serving" (the new generation serves every worker) and "complete" (the old
generation is gone: nothing left to drain).

  prefork          the control socket's ``upgrade`` request, as ``prefork-waitress ctl --socket
                   S upgrade`` sends it (a new master program on the same sockets), sent from
                   this process, so the times leave out ctl's own interpreter start (~0.1-0.5 s;
                   a signal costs the others nothing either). serving: the reply (it comes once
                   the new master serves every slot); complete: the old master's pid has exited.
  gunicorn-term    gunicorn -k sync: USR2 to the master (it forks and execs a new master
                   on the inherited socket), wait until each of the new master's N workers
                   has run ``post_worker_init`` (a hook in bench/gunicorn_deploy_conf.py
                   writes a line), then TERM to the old master, as gunicorn documents
                   (graceful). serving: every new worker initialised; complete: the old
                   master has exited.
  gunicorn-quit    the same with QUIT to the old master, as many deploy scripts (and the
                   nginx/unicorn habit) do; for gunicorn QUIT is a *quick* shutdown.
  uwsgi-chain      uWSGI --http11-socket (keep-alive, as wrk speaks) --master --lazy-apps,
                   ``c`` written to its master FIFO: the
                   workers are reloaded one after the other (uWSGI's "chain reload"; it has
                   no master re-exec that keeps the sockets except ``--touch-reload`` of the
                   whole instance). serving = complete: N worker pids, none of the old ones.
                   Skipped, with a message, when the ``uwsgi`` binary is not installed.

Each round upgrades every contender once, in an order rotated every round, and
every contender keeps its cluster across rounds (the next round upgrades the
master the previous round started; the pid files say which one that is).
"""

import importlib.util
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

from bench import harness
from bench.harness import pid_alive
from prefork_waitress.control import request as control_request

NAME = "deploy"
HELP = "a new release under wrk load: prefork ctl upgrade vs gunicorn USR2+TERM/QUIT vs uWSGI chain reload"
CONTENDERS = ("prefork", "gunicorn-term", "gunicorn-quit", "uwsgi-chain")
SMOKE = {"rounds": 1, "duration": 2, "at": 0.5, "conns": 4, "workers": 2}
HERE = os.path.join(harness.REPO_ROOT, "bench")
POLL = 0.005


def add_arguments(p):
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    p.add_argument("--at", type=float, default=2.0, help="seconds into the wrk run to deploy")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--app", default="bench.apps:hello")
    p.add_argument("--contenders", type=harness.csv(str), default=list(CONTENDERS), help=", ".join(CONTENDERS))



def read_pid(path, deadline):
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        time.sleep(POLL)
    raise TimeoutError(f"no pid in {path}")


def wait_gone(pid, start, timeout):
    while pid_alive(pid):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"pid {pid} still there after {timeout} s")
        time.sleep(POLL)
    return time.monotonic() - start


class Contender:
    """One server kind: start it, then deploy() under load returns (serving s, complete s)."""

    def __init__(self, name, args, tmp):
        self.name = name
        self.args = args
        self.tmp = os.path.join(tmp, name)
        os.makedirs(self.tmp)
        self.pidfile = os.path.join(self.tmp, "master.pid")
        self.server = None
        self.ports = []

    def stop(self):
        if self.server is not None:
            self.server.stop()


class Prefork(Contender):
    def start(self):
        n = self.args.workers
        base = harness.free_port_range(n)
        self.ports = list(range(base, base + n))
        self.sock = os.path.join(self.tmp, "ctl.sock")
        argv = [sys.executable, "-m", "prefork_waitress", "--workers", str(n), "--base-port", str(base),
                "--control-socket", self.sock, "--pid", self.pidfile, "--log-level", "warning", self.args.app]
        self.server = harness.Proc(self.name, argv, self.ports)
        self.server.wait_ready(timeout=60)

    def deploy(self):
        old = read_pid(self.pidfile, time.monotonic() + 10)
        start = time.monotonic()
        reply = control_request(self.sock, {"action": "upgrade"}, timeout=300)  # what ctl upgrade sends
        if not reply.get("ok"):
            raise RuntimeError(f"upgrade failed: {reply.get('error')}")
        serving = time.monotonic() - start
        return serving, wait_gone(old, start, 300)


class Gunicorn(Contender):
    def __init__(self, name, args, tmp, old_signal):
        super().__init__(name, args, tmp)
        self.old_signal = old_signal
        self.ready_log = os.path.join(self.tmp, "ready.log")

    def start(self):
        port = harness.free_port()
        self.ports = [port]
        argv = [sys.executable, "-m", "gunicorn", "-k", "sync", "-w", str(self.args.workers),
                "--bind", f"127.0.0.1:{port}", "--pid", self.pidfile, "--log-level", "warning",
                "-c", os.path.join(HERE, "gunicorn_deploy_conf.py"), self.args.app]
        self.server = harness.Proc(self.name, argv, self.ports, env={"DEPLOY_READY_LOG": self.ready_log})
        self.server.wait_ready(timeout=60)

    def _initialised(self, master):
        try:
            with open(self.ready_log) as f:
                ready = {int(line) for line in f.read().split()}
        except OSError:
            return False
        workers = harness.children(master)
        return len(workers) >= self.args.workers and len(workers & ready) >= self.args.workers

    def deploy(self):
        old = read_pid(self.pidfile, time.monotonic() + 10)
        old_workers = harness.children(old)
        start = time.monotonic()
        os.kill(old, signal.SIGUSR2)
        new = None
        while time.monotonic() - start < 120:
            if new is None:
                fresh = [pid for pid in harness.children(old) - old_workers if harness.children(pid)]
                new = fresh[0] if fresh else None
            if new is not None and self._initialised(new):
                break
            time.sleep(POLL)
        else:
            raise TimeoutError("gunicorn: the new master's workers did not all initialise")
        serving = time.monotonic() - start
        os.kill(old, self.old_signal)
        return serving, wait_gone(old, start, 300)  # the new master wrote the pid file when it started


class UwsgiChain(Contender):
    binary = None

    @classmethod
    def find(cls):
        for cand in (os.path.join(os.path.dirname(sys.executable), "uwsgi"), shutil.which("uwsgi")):
            if cand and os.access(cand, os.X_OK):
                return cand
        return None

    def start(self):
        port = harness.free_port()
        self.ports = [port]
        self.fifo = os.path.join(self.tmp, "master.fifo")
        module, _, attr = self.args.app.partition(":")
        argv = [self.find(), "--http11-socket", f"127.0.0.1:{port}", "--master", "--processes", str(self.args.workers),
                "--lazy-apps", "--master-fifo", self.fifo, "--pidfile", self.pidfile, "--disable-logging",
                "--module", f"{module}:{attr}", "--pythonpath", harness.REPO_ROOT, "--die-on-term"]
        self.server = harness.Proc(self.name, argv, self.ports)
        self.server.wait_ready(timeout=60)

    def deploy(self):
        master = read_pid(self.pidfile, time.monotonic() + 10)
        old = harness.children(master)
        start = time.monotonic()
        with open(self.fifo, "w") as f:
            f.write("c")
        while time.monotonic() - start < 300:
            now = harness.children(master)
            if len(now) >= self.args.workers and not (now & old) and not any(pid_alive(p) for p in old):
                done = time.monotonic() - start
                return done, done
            time.sleep(POLL)
        raise TimeoutError("uwsgi: old workers still there")


def make(name, args, tmp):
    if name == "prefork":
        return Prefork(name, args, tmp)
    if name == "gunicorn-term":
        return Gunicorn(name, args, tmp, signal.SIGTERM)
    if name == "gunicorn-quit":
        return Gunicorn(name, args, tmp, signal.SIGQUIT)
    return UwsgiChain(name, args, tmp)


def under_load(contender, args):
    outcome = {}

    def trigger():
        time.sleep(args.at)  # the deploy must fall inside the wrk run
        try:
            outcome["times"] = contender.deploy()
        except Exception as exc:  # reported with the round, the run goes on
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=trigger)
    thread.start()
    result = harness.run_wrk(contender.ports, args.conns, args.duration)
    thread.join()
    return result, outcome


def run(args):
    names = list(args.contenders)
    if "uwsgi-chain" in names and UwsgiChain.find() is None:
        args.notes.append("uwsgi-chain: skipped, no uwsgi binary (pip install uwsgi, or the bench extra)")
        names.remove("uwsgi-chain")
    if importlib.util.find_spec("gunicorn") is None:
        skipped = [n for n in names if n.startswith("gunicorn")]
        if skipped:
            args.notes.append(f"{', '.join(skipped)}: skipped, gunicorn not installed (pip install gunicorn)")
        names = [n for n in names if n not in skipped]
    tmp = tempfile.mkdtemp(prefix="bench-deploy-")
    contenders = [make(name, args, tmp) for name in names]
    results = {name: [] for name in names}
    try:
        for contender in contenders:
            contender.start()
        for rnd in range(args.rounds):
            for contender in harness.rotated(contenders, rnd):
                r, outcome = under_load(contender, args)
                failed = r.error_count + r["non2xx"]
                results[contender.name].append((r, outcome, failed))
                times = outcome.get("times")
                what = (f"serving {times[0]:.3f} s, complete {times[1]:.3f} s" if times
                        else f"DEPLOY FAILED: {outcome['error']}")
                if not times:
                    args.notes.append(f"{contender.name} round {rnd + 1}: deploy failed: {outcome['error']}")
                harness.progress(f"  {contender.name} round {rnd + 1}: {what}, {r['requests']} requests, "
                                 f"failed {failed} ({r['errors']}, non2xx {r['non2xx']}), {r['rps']:.0f} req/s")
    finally:
        for contender in contenders:
            contender.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    title = (f"deploy under load: N={args.workers}, app {args.app}, c={args.conns}, wrk {args.duration} s, "
             f"deploy at {args.at} s, {args.rounds} rounds (medians; failed = errors + non-2xx, summed over rounds)")
    rows = []
    for name in names:
        runs = results[name]
        times = [outcome["times"] for _, outcome, _ in runs if "times" in outcome]
        rows.append({
            "table": title,
            "contender": name,
            "serving ms": statistics.median(t[0] for t in times) * 1000 if times else None,
            "complete ms": statistics.median(t[1] for t in times) * 1000 if times else None,
            "failed requests": sum(failed for _, _, failed in runs),
            "deploys failed": len(runs) - len(times),
            "requests": sum(r["requests"] for r, _, _ in runs),
            "req/s": statistics.median(r["rps"] for r, _, _ in runs),
        })
    return rows
