"""nginx in front of the contenders: the one config writer (proxy_pass, uwsgi_pass, return 200)."""

import os
import shutil

from .base import HOST
from .processes import Proc, free_port, tempdir

_NGINX_MAIN = """\
worker_processes %(workers)d;
daemon off;
pid %(dir)s/nginx.pid;
error_log stderr warn;
%(user)s
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
%(http)s
}
"""

# HTTP upstream: keep-alive connections (HTTP/1.1, Connection header cleared).
_PROXY_HTTP = """\
    upstream app {
%(servers)s
        keepalive 64;
    }
    server {
        listen %(host)s:%(port)d;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }"""

# uWSGI's native protocol. No `keepalive`: nginx reuses upstream connections only for HTTP/1.1 and,
# with fastcgi_keep_conn, FastCGI; the uwsgi protocol has no such flag, so uWSGI closes after each
# response (uwsgi_socket_keepalive is TCP SO_KEEPALIVE, not reuse).
_PROXY_UWSGI = """\
    upstream app {
%(servers)s
    }
    server {
        listen %(host)s:%(port)d;
        location / {
            uwsgi_pass app;
            uwsgi_param REQUEST_METHOD $request_method;
            uwsgi_param QUERY_STRING $query_string;
            uwsgi_param CONTENT_TYPE $content_type;
            uwsgi_param CONTENT_LENGTH $content_length;
            uwsgi_param REQUEST_URI $request_uri;
            uwsgi_param PATH_INFO $document_uri;
            uwsgi_param SERVER_PROTOCOL $server_protocol;
            uwsgi_param REMOTE_ADDR $remote_addr;
            uwsgi_param REMOTE_PORT $remote_port;
            uwsgi_param SERVER_ADDR $server_addr;
            uwsgi_param SERVER_PORT $server_port;
            uwsgi_param SERVER_NAME $server_name;
        }
    }"""

_RETURN_200 = """\
    server {
        listen %(host)s:%(port)d;
        location / { default_type text/plain; return 200 "Hello, world!\\n"; }
    }"""


def nginx_path():
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def nginx_conf(workers, conf_dir, http, user=""):
    """A whole nginx.conf for a bench nginx in ``conf_dir`` (its pid and temp files there): ``http`` is
    what goes inside the http {} block; ``user`` e.g. "user root;"."""
    return _NGINX_MAIN % {"workers": workers, "dir": conf_dir, "http": http, "user": user}


def nginx_with(name, http, port, workers=1, user=""):
    """nginx running ``http`` (the inside of http {}, listening on ``port``) from a temporary directory."""
    binary = nginx_path()
    if binary is None:
        raise RuntimeError("nginx not found: apt-get install -y nginx-light")
    conf_dir = tempdir("bench-nginx-")
    conf = os.path.join(conf_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(workers, conf_dir, http, user=user))
    srv = Proc(name, [binary, "-p", conf_dir, "-c", conf], [port])
    srv.cleanup_dirs.append(conf_dir)
    return srv


def nginx_front(name, upstream_ports, workers=1, protocol="http", host=HOST):
    """nginx on a free port in front of ``upstream_ports``: ``http`` (keep-alive proxy_pass) or ``uwsgi``."""
    port = free_port(host)
    servers = "\n".join(f"        server {host}:{p};" for p in upstream_ports)
    template = {"http": _PROXY_HTTP, "uwsgi": _PROXY_UWSGI}[protocol]
    return nginx_with(name, template % {"servers": servers, "host": host, "port": port}, port, workers)


def nginx_200(name, workers=1, host=HOST):
    """nginx answering every request with the hello body itself: the ceiling."""
    port = free_port(host)
    return nginx_with(name, _RETURN_200 % {"host": host, "port": port}, port, workers)
