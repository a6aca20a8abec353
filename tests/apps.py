"""WSGI apps and Worker classes used by the test clusters."""

import logging
import os
import threading
import time
from urllib.parse import parse_qs

from prefork_waitress import Worker


def hello(environ, start_response):
    """Answers with the pid and port, so a test sees which process served it."""
    body = f"{os.getpid()} {environ['SERVER_PORT']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def slow(environ, start_response):
    """Sleeps ?s=seconds before answering (a long request)."""
    seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["1"])[0])
    time.sleep(seconds)
    return hello(environ, start_response)


def thread(environ, start_response):
    """Answers with the name of the thread the app runs on: MainThread on the inline path."""
    body = threading.current_thread().name.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def paste_thread_app(global_conf, **local_conf):
    """A PasteDeploy app factory: the thread app."""
    return thread


GROWN = []  # what /grow keeps


def app(environ, start_response):
    """/slow?s=N sleeps, /grow keeps 256 KiB more each time, /thread names the app's thread, anything else is hello."""
    if environ.get("PATH_INFO") == "/slow":
        return slow(environ, start_response)
    if environ.get("PATH_INFO") == "/thread":
        return thread(environ, start_response)
    if environ.get("PATH_INFO") == "/grow":
        GROWN.append(b"x" * (256 * 1024))  # written, so resident
        return hello(environ, start_response)
    if environ.get("PATH_INFO") == "/print":
        print("printed by", os.getpid(), flush=True)
        import sys

        sys.stderr.write(f"stderr of {os.getpid()}\n")
        sys.stderr.flush()
        stdin = os.readlink("/proc/self/fd/0") if os.path.exists("/proc/self/fd/0") else ""
        body = stdin.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if environ.get("PATH_INFO") == "/log":  # a worker's own log records (--log-format json)
        logger = logging.getLogger("apps")
        logger.warning('a "logged"\nline from %d', os.getpid(), extra={"order": 7})
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            logger.exception("it failed")
        return hello(environ, start_response)
    if environ.get("PATH_INFO") == "/raise":
        raise RuntimeError("the app failed")
    return hello(environ, start_response)


class GreetCommands:
    """A command mixin: on_greet runs first and leaves a trace child_greet returns."""

    def on_greet(self, name):
        self.greeted = f"noticed {name}"

    def child_greet(self, name):
        return f"{self.greeted}; hello {name} from {self.id}"


class TestWorker(GreetCommands, Worker):
    """Adds commands for failure cases and records on_start/on_stop in a file."""

    def on_start(self):
        path = os.environ.get("PW_TEST_HOOK_LOG")
        if path:
            with open(path, "a") as f:
                f.write(f"start {self.id} {os.getpid()}\n")

    def on_stop(self):
        path = os.environ.get("PW_TEST_HOOK_LOG")
        if path:
            with open(path, "a") as f:
                f.write(f"stop {self.id} {os.getpid()}\n")

    def child_boom(self):
        raise KeyError("boom")

    def child_sleep(self, seconds):
        time.sleep(seconds)
        return "slept"

    def child_unpicklable(self):
        return lambda: None

    def child_exit(self):
        os._exit(7)


def make_app():
    """An app factory (for --call): the app it returns says it was made."""

    def made(environ, start_response):
        body = f"made {os.getpid()}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return made


def paste_app(global_conf, **local_conf):
    """A PasteDeploy app factory: hello, with a greeting from the ini file."""
    greeting = local_conf.get("greeting", "hello")

    def app(environ, start_response):
        body = f"{greeting} {os.getpid()}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app


class FailingStartWorker(Worker):
    """on_start raises: no worker ever becomes ready (BootError)."""

    def on_start(self):
        raise RuntimeError("on_start refuses")


def crash(environ, start_response):
    """Kills its worker on every request (a segfaulting extension, an os._exit in the app)."""
    os._exit(3)


class BreakableWorker(Worker):
    """Fails to start while the file $PW_TEST_BROKEN_PREFIX<slot id> exists (a crash loop on demand)."""

    def on_start(self):
        if os.path.exists(os.environ.get("PW_TEST_BROKEN_PREFIX", "/nonexistent/") + str(self.id)):
            raise RuntimeError(f"slot {self.id} is broken")
