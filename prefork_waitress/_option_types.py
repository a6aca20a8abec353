"""The converters and validators of the option table: each turns a value from Python, an ini file or
the command line into the option's type, or raises ValueError saying what was expected."""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Optional, Tuple, Union

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", "f", ""})


def as_bool(value: Any) -> bool:
    """Accept a bool, or one of the usual yes/no words from an ini file."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def int_at_least(minimum: int, maximum: Optional[int] = None) -> Callable[[Any], int]:
    """Converter to an int within [minimum, maximum]."""

    def convert(value: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        number = int(_number(value, int if not isinstance(value, float) else float))
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"must be at least {minimum}{upper}, got {number}")
        return number

    return convert


def positive_seconds(value: Any) -> float:
    """Converter to a duration in seconds, strictly positive."""
    number = float(_number(value, float))
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return number


def non_negative_seconds(value: Any) -> float:
    """Converter to a duration in seconds, zero or more."""
    number = float(_number(value, float))
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"must be zero or a positive number of seconds, got {value!r}")
    return number


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Let None (or an empty / "none" string) through, convert the rest."""

    def convert_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off", "0")):
            return None
        return convert(value)

    return convert_optional


def as_path(value: Any) -> str:
    """A filesystem path, made absolute now so a later chdir cannot move it."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(f"expected a file path, got {value!r}")
    return os.path.abspath(os.fspath(value))


def as_output(value: Any) -> Any:
    """A path, or an open file object that has a real file descriptor."""
    if hasattr(value, "fileno") and not isinstance(value, (str, os.PathLike)):
        try:
            value.fileno()
        except (OSError, ValueError) as exc:
            raise ValueError(f"the file object has no usable fileno(): {exc}") from None
        return value
    return as_path(value)


def as_host(value: Any) -> str:
    """The address the worker sockets bind to."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a host name or address, got {value!r}")
    return value.strip()


def as_log_path(value: Any) -> str:
    """A log file path, or ``-`` for the worker's stdout (the output)."""
    if isinstance(value, str) and value.strip() == "-":
        return "-"
    return as_path(value)


def as_cpu_affinity(value: Any) -> Union[bool, Tuple[int, ...]]:
    """True: worker i on CPU i mod n; False: no pinning; a list: worker i on list[i mod len]."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("auto", "") or word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS or word == "none":
            return False
        value = [part for part in word.replace(",", " ").split()]
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and value:
        cpus = tuple(int_at_least(0)(cpu) for cpu in value)
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if usable is not None and not set(cpus) <= usable:
            missing = sorted(set(cpus) - usable)
            raise ValueError(f"CPUs {missing} are not available to this process (it may use {sorted(usable)})")
        return cpus
    raise ValueError(f"expected 'auto', true, false or a list of CPU numbers, got {value!r}")


UPSTREAM_FORMATS = ("nginx", "nginx-block", "haproxy", "haproxy-block")


def as_upstream_format(value: Any) -> str:
    """The frontend dialect of the upstream file: server lines, or a whole block (``-block``)."""
    if value not in UPSTREAM_FORMATS:
        raise ValueError(f"expected one of {', '.join(UPSTREAM_FORMATS)}, got {value!r}")
    return str(value)


def as_block_name(value: Any) -> str:
    """The name of an nginx ``upstream`` or HAProxy ``backend`` (letters, digits, '-', '_', '.')."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", value.strip()):
        raise ValueError(f"expected a name of letters, digits, - _ . (e.g. prefork_app), got {value!r}")
    return value.strip()


def as_runtime_address(value: Any) -> str:
    """HAProxy's Runtime API: ``host:port`` (TCP) or the path of its UNIX stats socket."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a UNIX socket path or host:port, got {value!r}")
    host, sep, port = value.strip().rpartition(":")
    if sep and "/" not in value:
        if not (port.isdigit() and 0 < int(port) < 65536 and host):
            raise ValueError(f"expected host:port with a port from 1 to 65535, got {value!r}")
        return value.strip()
    return as_path(value.strip())


def as_backend_name(value: Any) -> str:
    """An HAProxy backend name (letters, digits, '-', '_', '.', ':')."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", value.strip()):
        raise ValueError(f"expected an HAProxy backend name (letters, digits, - _ . :), got {value!r}")
    return value.strip()


def as_log_level(value: Any) -> str:
    """A logging level name."""
    if not isinstance(value, str) or value.upper() not in (
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
    ):
        raise ValueError(f"expected debug, info, warning, error or critical, got {value!r}")
    return value.upper()


def one_of(*words: str) -> Callable[[Any], str]:
    """Converter to one of ``words`` (case-insensitive)."""

    def convert(value: Any) -> str:
        word = value.strip().lower() if isinstance(value, str) else value
        if word not in words:
            raise ValueError(f"expected {' or '.join(repr(w) for w in words)}, got {value!r}")
        return str(word)

    return convert


def as_bind(value: Any) -> Tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6): the host, and the first slot's port."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected HOST:PORT, e.g. 127.0.0.1:8080, got {value!r}")
    host, _, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return as_host(host), int_at_least(0, 65535)(port)


def as_directory(value: Any) -> str:
    """An existing directory, made absolute."""
    path = as_path(value)
    if not os.path.isdir(path):
        raise ValueError(f"no such directory: {path}")
    return path


def as_search_path(value: Any) -> Tuple[str, ...]:
    """Directories for sys.path, separated by commas (or given as a list); made absolute when used."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    paths = tuple(str(part).strip() for part in parts if str(part).strip())
    if not paths:
        raise ValueError(f"expected one or more directories separated by commas, got {value!r}")
    return paths


def as_worker_class(value: Any) -> Any:
    """A Worker subclass, or a "module:Class" string naming one."""
    from .worker import Worker

    if isinstance(value, str):
        from ._os.loading import resolve

        value = resolve(value)
    if not (isinstance(value, type) and issubclass(value, Worker)):
        raise ValueError(f"expected a subclass of prefork_waitress.Worker, got {value!r}")
    return value


def as_paths(value: Any) -> Tuple[str, ...]:
    """File paths, made absolute: a list, or one string with paths separated by os.pathsep (``:``)."""
    parts = value.split(os.pathsep) if isinstance(value, str) else value
    if isinstance(parts, (str, bytes)) or not hasattr(parts, "__iter__"):
        raise ValueError(f"expected a file path or a list of them, got {value!r}")
    return tuple(as_path(part) for part in parts if not (isinstance(part, str) and not part.strip()))


def as_server_prefix(value: Any) -> str:
    """The first part of HAProxy server names: letters, digits, '_', '.' and '-' (not at its end)."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]*[A-Za-z0-9_.]", value.strip()):
        raise ValueError(f"expected a name prefix of letters, digits, _ . - (e.g. pw or blue), got {value!r}")
    return value.strip()


def _negative(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and float(str(value).strip()) < 0
    except ValueError:
        return False


def as_refork_after(value: Any) -> Tuple[int, ...]:
    """Request thresholds, one per refork generation: ``1000``, ``"50,1000,10000"`` or ``[50, 1000]``.

    0 alone (or nothing) turns reforking off; a list holds increasing numbers above 0.
    """
    example = "e.g. 1000, or 50,1000,10000 for a refork per generation; 0: never"
    parts = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        parts = [parts]
    numbers = []
    for part in parts:
        try:
            number = int_at_least(0)(part)
        except ValueError:
            if _negative(part):
                raise ValueError(f"a number of requests cannot be negative, got {part!r} ({example})") from None
            raise ValueError(f"expected a number of requests or a list of them ({example}), got {value!r}") from None
        numbers.append(number)
    if numbers == [0]:
        return ()
    if 0 in numbers:
        raise ValueError(f"every threshold of a list must be above 0 (0 alone turns reforking off), got {value!r}")
    for before, after in zip(numbers, numbers[1:]):
        if after <= before:
            raise ValueError(
                f"each generation's threshold must be larger than the one before, got {before} then {after} "
                f"in {value!r} ({example})"
            )
    return tuple(numbers)


def as_config_file(value: Any) -> str:
    """An existing file, made absolute."""
    path = as_path(value)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    return path
