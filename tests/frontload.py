"""Bounded GET + POST load through one frontend port (nginx, HAProxy), counting every non-2xx."""

import http.client
import threading
import time

from conftest import KeepAliveConnection, wait_until


class FrontendLoad:
    """Threads alternating GET and POST (with a body) on keep-alive and fresh connections.

    ``max_seconds`` (and ``max_requests``, None: no count bound) only keep a broken
    test from loading for ever: load that ends at either before the ``with`` block
    stops it fails the test, as does waiting for requests after it.
    """

    def __init__(self, port, threads=4, max_seconds=30.0, max_requests=None):
        self.port = port
        self.ok = 0
        self.posts = 0
        self.stale_retries = 0
        self.failures = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._budget = float("inf") if max_requests is None else max_requests
        self._bounds = f"{max_seconds} s" + ("" if max_requests is None else f" or {max_requests} requests")
        self.ended_at_bound = False
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        if exc_type is None:
            self._check_bound()

    def _check_bound(self):
        if self.ended_at_bound:
            raise AssertionError(f"the load ended at its bound ({self._bounds}) before the test stopped it")

    def _one(self, conn, n):
        if n % 2:
            conn.request("POST", "/", body=b"x" * 512, headers={"Content-Type": "application/octet-stream"})
        else:
            conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
        if not 200 <= response.status < 300:
            raise AssertionError(f"{'POST' if n % 2 else 'GET'} got {response.status}: {body[:200]!r}")
        return n % 2, response.getheader("Connection") == "close"

    def _send(self, conn, n, reused):
        """One request; a kept-alive connection the frontend closed meanwhile is retried once on a new one.

        That race (the client sends as nginx closes an idle keep-alive connection,
        e.g. when an old nginx worker exits after a reload) is between client and
        frontend; clients such as urllib3 retry it. Anything else is a failure.
        """
        try:
            return conn, self._one(conn, n)
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            if not reused:
                raise
        conn.close()
        with self._lock:
            self.stale_retries += 1
        conn = KeepAliveConnection("127.0.0.1", self.port, timeout=10)
        return conn, self._one(conn, n)

    def _run(self, index):
        self._loop(index)
        if not self._stop.is_set():
            self.ended_at_bound = True

    def _loop(self, index):
        keep_alive = index % 2 == 0
        conn = None
        n = index
        while not self._stop.is_set() and time.monotonic() < self._deadline and self.ok < self._budget:
            n += 1
            reused = conn is not None
            if conn is None:
                conn = KeepAliveConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn, (posted, closing) = self._send(conn, n, reused)
                with self._lock:
                    self.ok += 1
                    self.posts += posted
                if closing or not keep_alive:
                    conn.close()
                    conn = None
            except Exception as exc:
                conn.close()
                conn = None
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
        if conn is not None:
            conn.close()

    def wait_for_requests(self, count, timeout=15.0):
        start = self.ok

        def done():
            self._check_bound()
            return self.ok >= start + count or self.failures

        wait_until(done, timeout, message=f"{count} more requests")
