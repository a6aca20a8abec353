"""The one harness of the benchmarks (and, for /proc and process groups, of the tests).

- ``procfs``: ``stat_fields``, ``process_state``, ``cpu_seconds``, ``children``, ``tree_cpu``, ``pid_alive``:
  the one parser of /proc
- ``processes``: ``Proc`` (own process group, killed as a group on stop and at exit),
  ``stop_process_group``, ``http_get``, ``wait_http_200``, ``free_port``, ``free_port_range``, ``port_free``
- ``nginx``: ``nginx_conf`` (the one config writer), ``nginx_front`` (proxy_pass or uwsgi_pass), ``nginx_200``
- ``wrk``: ``run_wrk`` (one wrk over one or more ports, exact merged percentiles), ``parse_wrk_text``
- ``cluster``: ``Cluster`` (a prefork master subprocess whose hooks report each worker as JSON lines:
  wait on its events, kill workers, count orphans), ``Load`` (Python client threads that count ok,
  failed and refused requests)
- ``base``: ``HOST``, ``REPO_ROOT``, ``median``, ``csv``, ``rotated``, ``progress``

Everything is importable from ``bench.harness`` itself. Importing it has no side effect:
``install_exit_handlers()`` (called by ``python -m bench``) makes Ctrl-C, SIGTERM and SIGHUP stop every
live ``Proc`` too.
"""

from .base import (  # noqa: F401
    HOST,
    REPO_ROOT,
    csv,
    median,
    progress,
    rotated,
)
from .cluster import (  # noqa: F401
    MASTER_SCRIPT,
    REPORTING,
    Cluster,
    Load,
    kill_and_wait,
)
from .nginx import (  # noqa: F401
    nginx_200,
    nginx_conf,
    nginx_front,
    nginx_path,
    nginx_with,
)
from .processes import (  # noqa: F401
    Proc,
    free_port,
    free_port_range,
    http_get,
    install_exit_handlers,
    port_free,
    port_is_free,
    stop_all,
    stop_process_group,
    tempdir,
    tool,
    track,
    untrack,
    wait_http_200,
)
from .procfs import (  # noqa: F401
    TICK,
    children,
    children_of,
    cpu_seconds,
    pid_alive,
    process_state,
    stat_fields,
    tree,
    tree_cpu,
)
from .wrk import (  # noqa: F401
    WrkResult,
    parse_wrk_text,
    run_wrk,
    wrk_path,
)
