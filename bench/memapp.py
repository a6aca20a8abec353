"""An app that imports something sizeable and holds ~20 MB of strings (the memory scenario)."""

import asyncio  # noqa: F401
import decimal  # noqa: F401
import email  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import os
import sqlite3  # noqa: F401
import xml.dom.minidom  # noqa: F401

# 260,000 distinct 20-character str objects: ~69 B each + 8 B list slot ≈ 20 MB
DATA = [f"{i:020d}" for i in range(260_000)]


def app(environ, start_response):
    body = f"Hello from pid {os.getpid()} with {len(DATA)} strings\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
