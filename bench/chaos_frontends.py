"""The chaos scenario's frontends: nginx and HAProxy built from examples/nginx.conf and examples/haproxy.cfg."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from typing import Any, Optional, Tuple

from bench.harness import REPO_ROOT, free_port, nginx_path
from bench.harness import Proc as Server


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
        wait_for(lambda: os.path.exists(self.haproxy_socket), 15, "haproxy's stats socket", self.haproxy)

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

def wait_for(condition: Any, timeout: float, what: str, server: Optional[Server] = None) -> Any:
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
