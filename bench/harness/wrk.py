"""One wrk over one or more ports, with exact merged percentiles."""

import json
import os
import shutil
import subprocess
import tempfile

from .base import HOST

# One wrk process, thread i connected to ports[i % len(ports)].  wrk gives every thread
# connections/threads connections, so with threads a multiple of the port count the connections
# are split evenly over the ports, and the latency histogram (p50/p99) is exact over all of them.
_LUA = r"""
local ports = {%(ports)s}
local counter = 0
function setup(thread)
   local port = ports[(counter %% #ports) + 1]
   counter = counter + 1
   thread.addr = wrk.lookup("%(host)s", tostring(port))[1]
end
function done(summary, latency, requests)
   io.write(string.format(
     'BENCHJSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, ' ..
     '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d, ' ..
     '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, "mean_us": %%f}\n',
     summary.requests, summary.duration, summary.bytes,
     summary.errors.connect, summary.errors.read, summary.errors.write,
     summary.errors.status, summary.errors.timeout,
     latency:percentile(50), latency:percentile(90), latency:percentile(99),
     latency.max, latency.mean))
end
"""


def wrk_path():
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    return path


class WrkResult(dict):
    """Keys: rps, p50_ms, p99_ms, max_ms, requests, errors (dict), non2xx, text."""

    @property
    def error_count(self):
        return sum(self["errors"].values())

    @property
    def failed(self):
        """wrk's socket errors plus non-2xx/3xx answers."""
        return self.error_count + self["non2xx"]


def run_wrk(ports, connections, duration, threads=None, close=False, path="/", host=HOST, timeout_s=2):
    """Load ``ports`` for ``duration`` seconds with ``connections`` in total (bounded: duration + 30 s).

    ``threads`` defaults to the smallest multiple of len(ports) that is >= 2 and <= connections.
    ``close=True`` sends ``Connection: close``: every request a new TCP connection.
    """
    ports = list(ports)
    if threads is None:
        threads = len(ports) * max(1, -(-2 // len(ports)))
        threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_LUA % {"ports": ", ".join(str(p) for p in ports), "host": host})
        script = f.name
    argv = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s",
            "--latency", "-s", script]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{host}:{ports[0]}{path}")
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=duration + 30)
    finally:
        os.unlink(script)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    res = parse_wrk_text(proc.stdout)
    res["argv"] = argv
    res["threads"] = threads
    return res


def _to_ms(value):
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
    for suffix in ("us", "ms", "s", "m"):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def parse_wrk_text(text):
    """Parse wrk's ``--latency`` output (and our BENCHJSON line, if any)."""
    res = WrkResult(rps=0.0, p50_ms=None, p99_ms=None, max_ms=None, requests=0, non2xx=0,
                    errors={"connect": 0, "read": 0, "write": 0, "timeout": 0}, text=text)
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("BENCHJSON "):
            j = json.loads(s[len("BENCHJSON "):])
            res["requests"] = j["requests"]
            res["rps"] = j["requests"] / (j["duration_us"] / 1e6)
            res["p50_ms"] = j["p50_us"] / 1000.0
            res["p99_ms"] = j["p99_us"] / 1000.0
            res["max_ms"] = j["max_us"] / 1000.0
            res["non2xx"] = j["status"]
            for k in ("connect", "read", "write", "timeout"):
                res["errors"][k] = j[k]
            return res
        if s.startswith("Requests/sec:"):
            res["rps"] = float(s.split()[1])
        elif s.startswith("50%"):
            res["p50_ms"] = _to_ms(s.split()[1])
        elif s.startswith("99%"):
            res["p99_ms"] = _to_ms(s.split()[1])
        elif "requests in" in s:
            res["requests"] = int(s.split()[0])
        elif s.startswith("Socket errors:"):
            for part in s.split(":", 1)[1].split(","):
                kind, num = part.split()
                res["errors"][kind] = int(num)
        elif s.startswith("Non-2xx or 3xx responses:"):
            res["non2xx"] = int(s.split(":")[1])
    return res
