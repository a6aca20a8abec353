"""Real nginx and HAProxy for the tests, in the foreground, on free ports, with their own files under tmp_path.

Their configuration comes from the shipped ``examples/nginx.conf`` and
``examples/haproxy.cfg`` (as README tells a user to use them), with only the
paths and ports changed; each change must apply exactly once, so an example
that no longer has the line a test relies on fails the test instead of
silently testing something else.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess

from conftest import ROOT, free_port, stop_process_group, wait_until

from prefork_waitress.integrations.haproxy_runtime import servers_state

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
EXAMPLES = os.path.join(ROOT, "examples")


def example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read()


def substitute(text, old, new):
    """``text`` with the one match of regex ``old`` replaced by ``new`` (a string, used literally)."""
    changed, count = re.subn(old, lambda _match: new, text)
    assert count == 1, f"expected exactly one {old!r} in the example, found {count}"
    return changed


# --- nginx ---------------------------------------------------------------------------

NGINX_CONF = """
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    {temp_paths}
    {http}
}}
"""

TEST_HTTP = """
    upstream app {{ include {upstream}; {keepalive} }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; {proxy} }}
    }}
"""


def example_nginx_http(port, upstream, block=False, listen=""):
    """``examples/nginx.conf`` listening on 127.0.0.1:``port``, including the upstream file ``upstream``.

    ``block``: the file is a whole ``upstream`` block (``--upstream-format
    nginx-block``), so the example's own ``upstream`` block gives way to it.
    ``listen``: parameters added to its ``listen`` (`` reuseport``).
    """
    text = substitute(example("nginx.conf"), r"listen 80;", f"listen 127.0.0.1:{port}{listen};")
    if block:
        return substitute(text, r"(?ms)^upstream prefork_app \{.*?^\}\n", f"include {upstream};\n")
    return substitute(text, r"include /etc/nginx/prefork-upstream.conf;", f"include {upstream};")


def _nginx_features():
    info = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr
    version = tuple(int(n) for n in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", info).groups())
    return version, info


class Nginx:
    """nginx with its own config, pid, logs and temp files under ``prefix``, in the foreground.

    ``http(port)`` gives what goes in its ``http {}`` block; by default a
    minimal ``upstream app`` including ``upstream`` (with ``keepalive``).
    """

    def __init__(self, prefix, upstream=None, keepalive=False, http=None, workers=1):
        version, info = _nginx_features()
        self.prefix, self.port = prefix, free_port()
        (prefix / "tmp").mkdir(parents=True)
        temps = [f"client_body_temp_path {prefix}/tmp/body;"] + [
            f"{module}_temp_path {prefix}/tmp/{module};"
            for module in ("proxy", "fastcgi", "uwsgi", "scgi")
            if f"--without-http_{module}_module" not in info
        ]
        if http is None:
            body = TEST_HTTP.format(
                upstream=upstream,
                port=self.port,
                keepalive="keepalive 16;" if keepalive else "",
                proxy='proxy_http_version 1.1; proxy_set_header Connection "";' if keepalive else "",
            )
        else:
            body = http(self.port)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            NGINX_CONF.format(
                workers=workers,
                prefix=prefix,
                user="user root;" if os.geteuid() == 0 else "",
                temp_paths="\n    ".join(temps),
                http=body,
            )
        )
        self.base = [NGINX, "-c", str(self.conf), "-p", str(prefix)]
        if version >= (1, 19, 5):
            self.base += ["-e", str(prefix / "error.log")]
        self.proc = None

    def reload_command(self):
        return " ".join(shlex.quote(arg) for arg in self.base + ["-s", "reload"])

    def start(self):
        self.proc = subprocess.Popen(
            self.base + ["-g", "daemon off;"], stdin=subprocess.DEVNULL, start_new_session=True
        )
        wait_until(self._accepting, message="nginx listening")

    def _accepting(self):
        assert self.proc.poll() is None, (self.prefix / "error.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self):
        if self.proc is not None:
            stop_process_group(self.proc, signal.SIGQUIT, grace=5)


# --- HAProxy -------------------------------------------------------------------------


def example_haproxy_cfg(sock, api_port, port, backend=True):
    """``examples/haproxy.cfg`` with its stats sockets and frontend on the test's paths and ports.

    ``backend=False`` leaves out its ``backend app`` (an upstream file of
    format ``haproxy-block`` named ``app`` brings it).
    """
    text = substitute(
        example("haproxy.cfg"),
        r"stats socket /run/haproxy/admin.sock mode 660 level admin",
        f"stats socket {sock} mode 600 level admin\n    stats socket ipv4@127.0.0.1:{api_port} level admin",
    )
    text = substitute(text, r"bind :80\n", f"bind 127.0.0.1:{port}\n")
    if not backend:
        text = substitute(text, r"(?ms)^backend app\n.*", "")
    return text


class HAProxy:
    """haproxy -db (foreground) from the example config, its stats sockets under ``prefix``.

    ``edit(text)`` may change the config first; ``files`` are loaded after it
    (``haproxy -f haproxy.cfg -f FILE``), e.g. a ``haproxy-block`` upstream file.
    """

    def __init__(self, prefix, edit=None, files=(), backend=True):
        prefix.mkdir()
        self.sock, self.port, self.api_port = prefix / "admin.sock", free_port(), free_port()
        self.conf = prefix / "haproxy.cfg"
        text = example_haproxy_cfg(self.sock, self.api_port, self.port, backend)
        self.conf.write_text(edit(text) if edit else text)
        self.log = prefix / "haproxy.log"
        self.argv = argv = [HAPROXY, "-f", str(self.conf)]
        for extra in files:
            argv += ["-f", str(extra)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv + ["-db"], stdout=log, stderr=log, start_new_session=True)
        wait_until(lambda: self._up(), message="haproxy's stats socket")

    def _up(self):
        assert self.proc.poll() is None, self.log.read_text()
        return self.sock.exists()

    def reload(self):
        """Reload as an init script does: a new haproxy with ``-sf OLD`` takes over, the old one finishes and exits."""
        old = self.proc
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv + ["-db", "-sf", str(old.pid)], stdout=log, stderr=log, start_new_session=True
            )
        try:
            old.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process_group(old, signal.SIGKILL, grace=5)
            raise AssertionError(f"the old haproxy did not exit after the reload: {self.log.read_text()}") from None

    def ask(self, command):
        """One Runtime API command, blocking (the test's own client)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    return b"".join(chunks).decode()
                chunks.append(data)

    def servers(self, backend="app"):
        """{name: (address, port, admin state, operational state)} of ``backend``."""
        rows = servers_state(self.ask(f"show servers state {backend}"))
        return {
            name: (row["srv_addr"], int(row["srv_port"]), row["srv_admin_state"], row["srv_op_state"])
            for name, row in rows.items()
        }

    def live(self, prefix="", backend="app"):
        """Ports of the servers that take new requests (ready and up)."""
        return sorted(
            p for n, (_, p, admin, op) in self.servers(backend).items() if n.startswith(prefix) and admin + op == "02"
        )

    def stat(self, backend="app"):
        """``show stat`` of ``backend``: {svname: {column: value}} (BACKEND and each server)."""
        lines = self.ask(f"show stat {backend} -1 -1").splitlines()
        header = lines[0][2:].split(",")
        rows = (dict(zip(header, line.split(","))) for line in lines[1:] if line.strip())
        return {row["svname"]: row for row in rows}

    def backend_errors(self, backend="app"):
        """Connection errors, response errors, retries and redispatches HAProxy counted for the backend."""
        row = self.stat(backend)["BACKEND"]
        return {key: row[key] for key in ("econ", "eresp", "wretr", "wredis", "hrsp_5xx")}

    def stop(self):
        stop_process_group(self.proc, signal.SIGTERM, grace=5)
