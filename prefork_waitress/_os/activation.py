"""systemd socket activation (the sd_listen_fds protocol), standard library only.

systemd (or anything that follows its protocol) opens the listening sockets,
passes them as fds 3, 4, ... and sets ``LISTEN_FDS`` (how many),
``LISTEN_PID`` (the process they are for) and, optionally,
``LISTEN_FDNAMES`` (colon-separated names). The master then serves those
sockets as its slots instead of binding its own, so a restart of the service
refuses no connection: they wait in systemd's copy of the socket.
"""

from __future__ import annotations

import os
import re
import resource
import socket
from typing import Dict, List, MutableMapping, NamedTuple, Optional

from ..errors import StartError

__all__ = ["SD_LISTEN_FDS_START", "ActivatedSocket", "activated_sockets", "claim_inherited"]

SD_LISTEN_FDS_START = 3
VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# Names an upgrading master gives its own non-slot sockets (control socket, metrics port): see claim_inherited.
RESERVED_PREFIX = "prefork-waitress-"
_reserved: Dict[str, socket.socket] = {}


class ActivatedSocket(NamedTuple):
    """One passed socket and the name systemd gave it (FileDescriptorName=, or the unit's name)."""

    sock: socket.socket
    name: str


def activated_sockets(
    environ: Optional[MutableMapping[str, str]] = None, pid: Optional[int] = None
) -> List[ActivatedSocket]:
    """The listening sockets passed to this process, in slot order; [] when none were.

    The variables are removed from the environment either way (workers must
    not take them for their own). With ``LISTEN_FDNAMES``, sockets are
    ordered by name (natural order, so ``web2`` comes before ``web10``),
    keeping fd order among equal names: several ``.socket`` units can then
    give the slots in a stated order.
    """
    env = os.environ if environ is None else environ
    values = {name: env.get(name) for name in VARIABLES}
    for name in VARIABLES:
        env.pop(name, None)
    listen_pid, listen_fds = values["LISTEN_PID"], values["LISTEN_FDS"]
    if not listen_fds or not listen_pid:
        return []
    try:
        target = int(listen_pid)
    except ValueError:
        raise StartError(f"LISTEN_PID={listen_pid!r} is not a process id (socket activation)") from None
    if target != (os.getpid() if pid is None else pid):
        return []  # meant for another process (e.g. a wrapper that did not exec)
    try:
        count = int(listen_fds)
    except ValueError:
        count = -1
    if count < 1:
        raise StartError(f"LISTEN_FDS={listen_fds!r}: expected the number of sockets passed (1 or more)")
    most = _most_fds()
    if count > most:
        raise StartError(f"LISTEN_FDS={listen_fds!r}: more sockets than this process may have open ({most})")
    names = _names(values["LISTEN_FDNAMES"], count)
    found = []
    for i, name in enumerate(names):
        if name.startswith(RESERVED_PREFIX):  # an upgrade's: kept for the integration that claims it
            _reserved[name[len(RESERVED_PREFIX) :]] = _inherited_socket(SD_LISTEN_FDS_START + i)
        else:
            found.append(ActivatedSocket(_listening_socket(SD_LISTEN_FDS_START + i), name))
    return sorted(found, key=lambda passed: _natural(passed.name))


def claim_inherited(name: str) -> Optional[socket.socket]:
    """The socket an old master passed as ``prefork-waitress-<name>`` (upgrade), once; None if none."""
    return _reserved.pop(name, None)


def forget_inherited() -> None:
    """Close the passed sockets no integration claimed (e.g. the new release has no metrics port)."""
    while _reserved:
        _reserved.popitem()[1].close()


def _inherited_socket(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise StartError(f"fd {fd} passed by the old master is not a socket: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def _most_fds() -> int:
    """The most descriptors this process may ever have open (the hard RLIMIT_NOFILE)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


def _names(given: Optional[str], count: int) -> List[str]:
    if not given:
        return [""] * count
    names = given.split(":")
    if len(names) != count:
        raise StartError(f"LISTEN_FDNAMES has {len(names)} names for LISTEN_FDS={count} sockets; they must match")
    return names


def _natural(name: str) -> List[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _listening_socket(fd: int) -> socket.socket:
    """Wrap a passed fd, checking it is a listening TCP socket (close-on-exec, like sd_listen_fds)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise StartError(f"fd {fd} passed by socket activation is not a socket: {exc.strerror or exc}") from None
    problem = None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        problem = "not a TCP socket (each worker serves one TCP port)"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "not listening (use ListenStream= in the .socket unit, with Accept=no)"
    if problem:
        sock.detach()  # the fd is not ours to close
        raise StartError(f"fd {fd} passed by socket activation is {problem}")
    sock.set_inheritable(False)
    return sock
